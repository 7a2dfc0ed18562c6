"""The zoo: each family registers itself; the registry imports no family."""

import ast
import os
import sys

import pytest

from axial_deeplab_tf.modeling import registry
from axial_deeplab_tf.modeling import zoo


def test_every_family_registers_its_own_models():
  builders = {registry.get_entry(name).builder.__module__
              for name in registry.list_models()}
  assert builders == set(zoo.FAMILY_MODULES)


def test_registry_imports_no_family():
  path = registry.__file__
  with open(path, encoding="utf-8") as f:
    tree = ast.parse(f.read(), filename=path)
  imported = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      imported.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
      imported.add(node.module or "")
      imported.update(f"{node.module}.{alias.name}" for alias in node.names)
  assert not {n for n in imported if n.startswith("axial_deeplab_tf")}, (
      imported)


def test_a_missing_family_module_is_an_error_naming_it():
  name = "axial_deeplab_tf.modeling.no_such_family"
  with pytest.raises(ImportError, match=f"{name}.*ModuleNotFoundError"):
    zoo.load_families((name,))


def test_a_family_failing_inside_is_an_error_naming_module_and_cause(
    tmp_path, monkeypatch):
  (tmp_path / "broken_family_for_test.py").write_text(
      "import no_such_dependency_of_the_family\n")
  monkeypatch.syspath_prepend(str(tmp_path))
  with pytest.raises(ImportError) as info:
    zoo.load_families(("broken_family_for_test",))
  message = str(info.value)
  assert "broken_family_for_test" in message
  assert "no_such_dependency_of_the_family" in message
  sys.modules.pop("broken_family_for_test", None)


def test_the_family_list_names_existing_modules():
  root = os.path.dirname(os.path.dirname(os.path.dirname(
      os.path.abspath(zoo.__file__))))
  for module in zoo.FAMILY_MODULES:
    assert os.path.exists(os.path.join(root, *module.split(".")) + ".py")
