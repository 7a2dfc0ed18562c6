"""The contract shared by the checkpoint importers.

One bookkeeping, one state-dict reader, one output writer for every
importer (PyTorch Axial-DeepLab, SegNeXt, ISANet, deeplab2):
`TensorMapping` collects source tensor -> target variable assignments and
checks them before any variable is touched: every source tensor consumed
(or ignored with a reason), every target variable set once, shapes equal
(a mismatch names both sides). `load_torch_state_dict` reads the `.pth`
layouts the official PyTorch codes publish with
`torch.load(weights_only=True)`. `write_output_dir` writes a result into a
temporary folder beside the output and renames it into place, so a failed
import leaves nothing behind (`write_import`: checkpoint + gin files).
`Wording` holds the error class and texts of an importer family, so each
tool keeps its messages while the logic is shared.
"""

import collections
import os
import sys
from typing import Callable, Dict, Iterable, Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf

from axial_deeplab_tf.utils import io as io_lib


class ImportFailure(ValueError):
  """A checkpoint that does not fit the model; nothing was written."""


def progress(message: str, stream=None) -> None:
  """One progress line, flushed (stderr unless `stream` is given)."""
  print(message, file=stream or sys.stderr, flush=True)


class Wording:
  """The error class and message texts of one importer family.

  The bookkeeping, the reader and the output check are shared; the texts
  are what each family's tools have always printed (subclasses override
  them, never the logic).
  """
  error = ImportFailure
  duplicate_variable = ("target variable name {name!r} is not unique; cannot "
                        "map onto it.")
  missing = "{label}: missing source tensor {name!r}."
  unknown_target = ("{label}: source {source!r} maps to {name!r}, which the "
                    "model does not have.")
  set_twice = "target {name!r} set twice (second from {source!r})."
  shape_mismatch = ("shape mismatch: source {source!r} gives {value_shape} "
                    "for target {name!r} of shape {variable_shape}.")
  unused = "{count} source tensors not consumed (first: {names})"
  unset = "{count} target variables not set (first: {names})"
  incomplete = "{label}: {problems}."
  no_torch = ("reading PyTorch checkpoints needs torch: install the "
              "'importers' extra (pip install 'axial_deeplab_tf[importers]').")
  not_a_file = "checkpoint {path!r} is not a file."
  unreadable = "cannot read PyTorch checkpoint {path!r}: {kind}: {message}"
  no_state = ("{path!r} holds no state dict of tensors (expected a state "
              "dict, or one under 'state_dict').")
  not_tensor = no_state
  output_exists = ("output_dir {path!r} exists and is not an empty folder; "
                   "choose a new one.")
  no_output = "output_dir is required."
  shape_text = staticmethod(tuple)

  @staticmethod
  def names(names: Sequence[str]) -> str:
    return ", ".join(sorted(names)[:5])

  @classmethod
  def fail(cls, template: str, **fields) -> ImportFailure:
    return cls.error(template.format(**fields))


class TensorMapping:
  """Source tensors mapped onto model variables, checked before assigning.

  `take` hands out a source tensor and marks it consumed, `ignore` marks one
  deliberately unused (with a reason), `set` plans a variable's value with
  a shape check naming both sides; `assign` (or `finish`) checks that every
  source tensor was consumed or ignored and every variable planned, and
  only then assigns: a failed import leaves the model untouched.

  Args:
    source: name -> array of the foreign checkpoint.
    variables: the target model's variables (names must be unique).
    source_label: what the source is, for messages (e.g. a file name).
  """

  wording = Wording

  def __init__(self, source: Mapping[str, np.ndarray],
               variables: Iterable[tf.Variable], source_label: str):
    self._source = dict(source)
    self._label = source_label
    self._variables = {}
    for v in variables:
      if v.name in self._variables:
        raise self.wording.fail(self.wording.duplicate_variable, name=v.name)
      self._variables[v.name] = v
    self._consumed = set()
    self._ignored: Dict[str, str] = {}
    self._values: Dict[str, np.ndarray] = {}

  def has(self, name: str) -> bool:
    return name in self._source

  def take(self, name: str) -> np.ndarray:
    """Returns source tensor `name` and marks it consumed."""
    if name not in self._source:
      raise self.wording.fail(self.wording.missing, label=self._label,
                              name=name)
    self._consumed.add(name)
    return self._source[name]

  def ignore_matching(self, predicate: Callable[[str], bool],
                      reason: str) -> int:
    """Marks every unhandled source tensor whose name satisfies predicate
    as deliberately not imported; returns how many."""
    names = [n for n in self._source if n not in self._consumed and
             n not in self._ignored and predicate(n)]
    self._ignored.update(dict.fromkeys(names, reason))
    return len(names)

  def set(self, target: str, value: np.ndarray, source_name: str) -> None:
    """Plans `target` (a variable name without ':0') := value.

    Raises:
      ImportFailure: unknown target, set twice, or a shape mismatch (naming
        the source and the target with both shapes).
    """
    w = self.wording
    name = target if target.endswith(":0") else target + ":0"
    if name not in self._variables:
      raise w.fail(w.unknown_target, label=self._label, source=source_name,
                   name=name)
    if name in self._values:
      raise w.fail(w.set_twice, name=name, source=source_name)
    variable = self._variables[name]
    value = np.asarray(value)
    if tuple(value.shape) != tuple(variable.shape):
      raise w.fail(w.shape_mismatch, label=self._label, source=source_name,
                   name=name, value_shape=w.shape_text(value.shape),
                   variable_shape=w.shape_text(variable.shape))
    self._values[name] = value.astype(variable.dtype.as_numpy_dtype)

  def copy(self, target: str, source: str,
           convert: Optional[Callable[[np.ndarray], np.ndarray]] = None
          ) -> None:
    """set(target, convert(take(source)), source)."""
    value = self.take(source)
    self.set(target, convert(value) if convert else value, source)

  def check_complete(self) -> None:
    """Raises unless every source tensor was handled and target set."""
    w = self.wording
    unused = [n for n in self._source
              if n not in self._consumed and n not in self._ignored]
    unset = [n for n in self._variables if n not in self._values]
    problems = []
    if unused:
      problems.append(w.unused.format(count=len(unused), label=self._label,
                                      names=w.names(unused)))
    if unset:
      problems.append(w.unset.format(count=len(unset), names=w.names(unset)))
    if problems:
      raise w.fail(w.incomplete, label=self._label,
                   problems="; ".join(problems))

  def assign(self) -> int:
    """Checks completeness, then assigns every variable; returns values set."""
    self.check_complete()
    total = 0
    for name, value in self._values.items():
      self._variables[name].assign(value)
      total += value.size
    return total

  def finish(self) -> str:
    """`assign`, then a one-line summary of what was consumed and set."""
    self.assign()
    reasons = collections.Counter(self._ignored.values())
    ignored = ", ".join(f"{c} {r}" for r, c in sorted(reasons.items()))
    return (f"{len(self._consumed)} tensors consumed, {len(self._ignored)} "
            f"ignored ({ignored or 'none'}), {len(self._values)}/"
            f"{len(self._variables)} variables set")

  @property
  def ignored(self) -> Dict[str, str]:
    return dict(self._ignored)

  @property
  def num_sources(self) -> int:
    return len(self._source)

  @property
  def num_targets(self) -> int:
    return len(self._variables)


def strip_common_prefix(state: Dict[str, np.ndarray],
                        prefixes: Iterable[str]) -> Dict[str, np.ndarray]:
  """Removes each prefix that every name starts with (repeatedly)."""
  changed = True
  while changed and state:
    changed = False
    for prefix in prefixes:
      if prefix and all(k.startswith(prefix) for k in state):
        state = collections.OrderedDict(
            (k[len(prefix):], v) for k, v in state.items())
        changed = True
  return state


def load_torch_state_dict(path: str,
                          container_keys: Sequence[str] = ("state_dict",
                                                           "model"),
                          strip_prefixes: Sequence[str] = ("module.",),
                          wording=Wording) -> Dict[str, np.ndarray]:
  """Reads a PyTorch checkpoint as an ordered name -> numpy array dict.

  Only tensors and plain containers are unpickled
  (torch.load(weights_only=True): no code from the file runs). Floating
  tensors come back as float32.

  Args:
    path: a `.pth` file written by `torch.save`.
    container_keys: wrappers looked into in turn (mmseg and openseg save
      {"state_dict": ..., "meta"/"optimizer": ...}).
    strip_prefixes: name prefixes removed when every name has them (the
      `module.` of DataParallel / DistributedDataParallel).
    wording: the error class and texts of the calling importer.

  Raises:
    ImportFailure (of `wording`): torch missing, no file, an unreadable
      file, or no state dict of tensors inside.
  """
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise wording.fail(wording.no_torch) from e
  if not os.path.isfile(path):
    raise wording.fail(wording.not_a_file, path=path)
  try:
    obj = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as e:  # pylint: disable=broad-except
    raise wording.fail(wording.unreadable, path=path, kind=type(e).__name__,
                       message=e,
                       folded=" ".join(str(e).split())[:300]) from e
  for key in container_keys:
    if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
      obj = obj[key]
  if not isinstance(obj, Mapping) or not obj:
    raise wording.fail(wording.no_state, path=path,
                       keys=list(container_keys), kind=type(obj).__name__)
  arrays = collections.OrderedDict()
  for name, value in obj.items():
    if not isinstance(value, torch.Tensor):
      raise wording.fail(wording.not_tensor, path=path, name=name,
                         kind=type(value).__name__)
    value = value.detach().cpu()
    arrays[str(name)] = (value.float() if value.is_floating_point()
                         else value).numpy()
  return strip_common_prefix(arrays, strip_prefixes)


def check_output_dir(output_dir: str, wording=Wording) -> str:
  """Returns the absolute output dir; refuses one that holds files."""
  if not output_dir:
    raise wording.fail(wording.no_output)
  path = os.path.abspath(os.path.expanduser(output_dir))
  if os.path.exists(path) and (not os.path.isdir(path) or os.listdir(path)):
    raise wording.fail(wording.output_exists, path=output_dir,
                       abspath=path)
  return path


def write_output_dir(output_dir: str, write_fn: Callable[[str], None],
                     wording=Wording) -> str:
  """Runs write_fn(temporary folder) beside output_dir, then renames it.

  The output appears whole or not at all: on any error the temporary
  folder is removed and output_dir is untouched. An existing non-empty
  `output_dir` is refused (nothing of the user's is replaced). Returns the
  absolute output_dir.
  """
  path = check_output_dir(output_dir, wording)
  # An existing output_dir is empty (checked above).
  io_lib.write_atomically(path, write_fn, folder=True)
  return path


def write_import(output_dir: str, objects: Mapping[str, tf.Module],
                 files: Mapping[str, str],
                 before_rename: Optional[Callable[[str], None]] = None
                ) -> str:
  """Writes `tf.train.Checkpoint(**objects)` as `ckpt` plus text `files`.

  Through `write_output_dir`: all of it or nothing.

  Args:
    output_dir: the folder to create.
    objects: checkpoint root attributes, e.g. {"model": model}.
    files: file name -> text (e.g. the gin file).
    before_rename: called with the temporary folder (tests use it to fail
      mid-way).

  Returns:
    The checkpoint prefix inside output_dir.
  """

  def write(tmp):
    tf.train.Checkpoint(**objects).write(os.path.join(tmp, "ckpt"))
    for name, text in files.items():
      with open(os.path.join(tmp, name), "w") as f:
        f.write(text)
    if before_rename is not None:
      before_rename(tmp)

  return os.path.join(write_output_dir(os.path.abspath(output_dir), write),
                      "ckpt")


def model_gin_text(model_name: str, overrides: Mapping[str, object],
                   comment: str) -> str:
  """The gin bindings (`model.name`, `model.overrides`) of an import."""
  lines = [f"# {line}" for line in comment.splitlines()]
  lines += [f"model.name = {model_name!r}",
            f"model.overrides = {dict(overrides)!r}"]
  return "\n".join(lines) + "\n"


def read_model_gin(path: str):
  """(model name, overrides dict) from a gin file written by an importer."""
  import ast  # pylint: disable=g-import-not-at-top
  values = {}
  with open(path) as f:
    for number, line in enumerate(f, 1):
      line = line.split("#", 1)[0].strip() if not line.lstrip().startswith(
          "#") else ""
      if not line:
        continue
      key, sep, text = line.partition("=")
      key = key.strip()
      if not sep or key not in ("model.name", "model.overrides"):
        raise ImportFailure(f"{path}:{number}: expected model.name or "
                            f"model.overrides, got {line!r}.")
      try:
        values[key] = ast.literal_eval(text.strip())
      except (ValueError, SyntaxError) as e:
        raise ImportFailure(f"{path}:{number}: not a literal: "
                            f"{text.strip()!r}.") from e
  if "model.name" not in values:
    raise ImportFailure(f"{path}: no model.name binding.")
  return values["model.name"], dict(values.get("model.overrides", {}))


def load_imported(output_dir: str):
  """Builds the model of an import folder and restores its checkpoint."""
  from axial_deeplab_tf import models  # pylint: disable=g-import-not-at-top
  from axial_deeplab_tf.tasks import checkpoint_utils  # pylint: disable=g-import-not-at-top
  name, overrides = read_model_gin(os.path.join(output_dir, "model.gin"))
  model = models.build(name, **overrides)
  checkpoint_utils.restore_whole_model(model, os.path.join(output_dir, "ckpt"))
  return model
