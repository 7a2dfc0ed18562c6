"""No module of the package imports from a layer above its own.

Every module is parsed (ast, nothing is imported) and each import of
`axial_deeplab_tf.*` (module level or inside a function) is checked
against LAYERS, the dependency order of WORKSPACE.md's map, lowest first.
A module may import from its own layer or any lower one. EXCEPTIONS lists
the upward imports that are still there, each with why; the test prints
them, and fails on any other upward import and on an exception that no
longer occurs (so the list only shrinks).
"""

import ast
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "axial_deeplab_tf"

# Lowest first. A name is a subpackage or a top-level module of the package.
LAYERS = [
    # Standard library / TensorFlow helpers with no model knowledge.
    {"utils", "attention_math", "layer_specs"},
    # Data formats, metrics, losses and optimizers: plain TF on tensors.
    {"data", "evaluation", "losses", "optimizers"},
    # Graph ops: post-processing, test-time augmentation, the fused kernel.
    {"ops"},
    # Keras layers (tf_keras and their Keras 3 twins).
    {"layers", "keras_layers"},
    # Models and the zoo.
    {"modeling", "models"},
    # Model Garden tasks, gin experiments, training.
    {"tasks"},
    # What uses trained models: export / prediction, checkpoint importers.
    {"serving", "importers"},
    # Top: benchmarks and experiment runners, the command line. Nothing in
    # the library imports them.
    {"benchmarks", "cli", "__main__"},
]

# (importing module, axial_deeplab_tf.<part>): why it is still there.
EXCEPTIONS = {}


def _layer_of(name):
  """Index in LAYERS of `axial_deeplab_tf.<part>...`, or None (the root)."""
  parts = name.split(".")
  if len(parts) < 2:
    return None
  for i, layer in enumerate(LAYERS):
    if parts[1] in layer:
      return i
  raise AssertionError(f"{name}: {parts[1]!r} is in no layer of LAYERS; "
                       f"add it where it belongs")


def _modules(repo=REPO):
  root = os.path.join(repo, PACKAGE)
  for folder, dirs, files in os.walk(root):
    dirs[:] = sorted(d for d in dirs if d != "__pycache__")
    for f in sorted(files):
      if f.endswith(".py"):
        path = os.path.join(folder, f)
        rel = os.path.relpath(path, repo)[:-3].replace(os.sep, ".")
        yield (rel[:-len(".__init__")] if rel.endswith(".__init__") else
               rel), path


def _imports(module, path):
  """Absolute names of the package's modules that `module` imports."""
  with open(path, encoding="utf-8") as f:
    tree = ast.parse(f.read(), filename=path)
  is_package = path.endswith("__init__.py")
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      for alias in node.names:
        yield alias.name
    elif isinstance(node, ast.ImportFrom):
      if node.level:
        base = module.split(".")
        base = base[:len(base) - node.level + (1 if is_package else 0)]
        prefix = ".".join(base + ([node.module] if node.module else []))
      else:
        prefix = node.module or ""
      yield prefix
      for alias in node.names:
        yield f"{prefix}.{alias.name}"


def upward_imports(repo=REPO):
  """{(module, axial_deeplab_tf.<part> it imports from a higher layer):
  the first such import seen}."""
  found = {}
  for module, path in _modules(repo):
    own = _layer_of(module)
    if own is None:
      continue
    for name in _imports(module, path):
      if name != PACKAGE and not name.startswith(PACKAGE + "."):
        continue
      target = _layer_of(name)
      if target is not None and target > own:
        found.setdefault((module, ".".join(name.split(".")[:2])), name)
  return found


def test_every_part_of_the_package_has_a_layer():
  names = {m.split(".")[1] for m, _ in _modules() if "." in m}
  placed = set().union(*LAYERS)
  assert names <= placed, sorted(names - placed)
  assert not placed - names - {"__main__"}, sorted(placed - names)


def test_no_module_imports_from_a_layer_above():
  found = upward_imports()
  for (module, target), why in sorted(EXCEPTIONS.items()):
    print(f"known upward import: {module} -> {target}: {why}")
  new = sorted(k for k in found if k not in EXCEPTIONS)
  assert not new, "upward imports (lower layer -> higher layer):\n" + "\n".join(
      f"  {m} -> {t}" for m, t in new)
  gone = sorted(k for k in EXCEPTIONS if k not in found)
  assert not gone, f"fixed, remove from EXCEPTIONS: {gone}"


def test_nothing_in_the_library_imports_the_benchmarks():
  for module, path in _modules():
    if (module.split(".") + [""])[1] in ("benchmarks", "cli", "__main__"):
      continue
    for name in _imports(module, path):
      assert not name.startswith(PACKAGE + ".benchmarks"), (module, name)


def test_the_check_sees_an_upward_import(tmp_path):
  # The walk itself: a lower-layer module importing a higher one, in a
  # function body and as a relative import, is found.
  pkg = tmp_path / PACKAGE
  (pkg / "utils").mkdir(parents=True)
  (pkg / "modeling").mkdir()
  (pkg / "__init__.py").write_text("")
  (pkg / "utils" / "__init__.py").write_text("")
  (pkg / "modeling" / "__init__.py").write_text("")
  (pkg / "utils" / "a.py").write_text(
      "def f():\n  from axial_deeplab_tf.modeling import zoo\n")
  (pkg / "utils" / "b.py").write_text("from ..modeling import registry\n")
  (pkg / "modeling" / "zoo.py").write_text(
      "from axial_deeplab_tf.utils import a\n")
  found = upward_imports(str(tmp_path))
  assert set(found) == {
      ("axial_deeplab_tf.utils.a", "axial_deeplab_tf.modeling"),
      ("axial_deeplab_tf.utils.b", "axial_deeplab_tf.modeling"),
  }, found
