"""The contract shared by the checkpoint importers.

`TensorMapping` collects source tensor -> target variable assignments and
checks them before any variable is touched: every source tensor consumed,
every target variable set once, shapes equal (a mismatch names both sides).
`write_import` writes the TF checkpoint and the gin file into a temporary
folder beside the output and renames it into place, so a failed import
leaves nothing behind. `load_torch_state_dict` reads the `.pth` layouts the
official PyTorch codes publish.
"""

import os
import sys
from typing import Callable, Dict, Iterable, Mapping, Optional

import numpy as np
import tensorflow as tf

from axial_deeplab_tf.utils import io as io_lib


class ImportFailure(ValueError):
  """A checkpoint that does not fit the model; nothing was written."""


def progress(message: str, stream=None) -> None:
  """One progress line on stderr (stdout carries the summary)."""
  print(message, file=stream or sys.stderr, flush=True)


class TensorMapping:
  """Source tensors mapped onto model variables, checked before assigning.

  Args:
    source: name -> array of the foreign checkpoint.
    variables: the target model's variables (names must be unique).
    source_label: what the source is, for messages (e.g. a file name).
  """

  def __init__(self, source: Mapping[str, np.ndarray],
               variables: Iterable[tf.Variable], source_label: str):
    self._source = dict(source)
    self._label = source_label
    self._variables = {}
    for v in variables:
      if v.name in self._variables:
        raise ImportFailure(f"target variable name {v.name!r} is not unique; "
                            "cannot map onto it.")
      self._variables[v.name] = v
    self._consumed = set()
    self._values: Dict[str, np.ndarray] = {}

  def has(self, name: str) -> bool:
    return name in self._source

  def take(self, name: str) -> np.ndarray:
    """Returns source tensor `name` and marks it consumed."""
    if name not in self._source:
      raise ImportFailure(f"{self._label}: missing source tensor {name!r}.")
    self._consumed.add(name)
    return self._source[name]

  def set(self, target: str, value: np.ndarray, source_name: str) -> None:
    """Plans `target` (a variable name without ':0') := value.

    Raises:
      ImportFailure: unknown target, set twice, or a shape mismatch (naming
        the source and the target with both shapes).
    """
    name = target if target.endswith(":0") else target + ":0"
    if name not in self._variables:
      raise ImportFailure(f"{self._label}: source {source_name!r} maps to "
                          f"{name!r}, which the model does not have.")
    if name in self._values:
      raise ImportFailure(f"target {name!r} set twice (second from "
                          f"{source_name!r}).")
    variable = self._variables[name]
    value = np.asarray(value)
    if tuple(value.shape) != tuple(variable.shape):
      raise ImportFailure(
          f"shape mismatch: source {source_name!r} gives "
          f"{tuple(value.shape)} for target {name!r} of shape "
          f"{tuple(variable.shape)}.")
    self._values[name] = value.astype(variable.dtype.as_numpy_dtype)

  def check_complete(self) -> None:
    """Raises unless every source tensor was consumed and target set."""
    unused = sorted(set(self._source) - self._consumed)
    unset = sorted(set(self._variables) - set(self._values))
    problems = []
    if unused:
      problems.append(f"{len(unused)} source tensors not consumed (first: "
                      f"{', '.join(unused[:5])})")
    if unset:
      problems.append(f"{len(unset)} target variables not set (first: "
                      f"{', '.join(unset[:5])})")
    if problems:
      raise ImportFailure(f"{self._label}: " + "; ".join(problems) + ".")

  def assign(self) -> int:
    """Checks completeness, then assigns every variable; returns values set."""
    self.check_complete()
    total = 0
    for name, value in self._values.items():
      self._variables[name].assign(value)
      total += value.size
    return total

  @property
  def num_sources(self) -> int:
    return len(self._source)

  @property
  def num_targets(self) -> int:
    return len(self._variables)


def load_torch_state_dict(path: str) -> Dict[str, np.ndarray]:
  """Reads a PyTorch checkpoint as name -> float32/int array.

  Accepts a plain state dict, `{"state_dict": ...}` or `{"model": ...}`
  wrappers, and the `module.` prefix of DataParallel models. Only tensors
  and plain containers are unpickled (torch.load(weights_only=True)).

  Raises:
    ImportFailure: torch missing, unreadable file or no state dict inside.
  """
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportFailure("reading PyTorch checkpoints needs torch: install "
                        "the 'importers' extra (pip install "
                        "'axial_deeplab_tf[importers]').") from e
  if not os.path.isfile(path):
    raise ImportFailure(f"checkpoint {path!r} is not a file.")
  try:
    obj = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as e:  # pylint: disable=broad-except
    raise ImportFailure(f"cannot read PyTorch checkpoint {path!r}: "
                        f"{type(e).__name__}: {e}") from e
  for key in ("state_dict", "model"):
    if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
      obj = obj[key]
  if not isinstance(obj, Mapping) or not obj or not all(
      isinstance(v, torch.Tensor) for v in obj.values()):
    raise ImportFailure(f"{path!r} holds no state dict of tensors (expected "
                        "a state dict, or one under 'state_dict').")
  names = list(obj)
  if all(n.startswith("module.") for n in names):
    names = [n[len("module."):] for n in names]
  return {n: t.detach().cpu().numpy() for n, t in zip(names, obj.values())}


def write_import(output_dir: str, objects: Mapping[str, tf.Module],
                 files: Mapping[str, str],
                 before_rename: Optional[Callable[[str], None]] = None
                ) -> str:
  """Writes `tf.train.Checkpoint(**objects)` as `ckpt` plus text `files`.

  Everything goes into a temporary folder beside `output_dir` that is then
  renamed into place: the output appears whole or not at all. An existing
  non-empty `output_dir` is refused (nothing of the user's is replaced).

  Args:
    output_dir: the folder to create.
    objects: checkpoint root attributes, e.g. {"model": model}.
    files: file name -> text (e.g. the gin file).
    before_rename: called with the temporary folder (tests use it to fail
      mid-way).

  Returns:
    The checkpoint prefix inside output_dir.
  """
  output_dir = os.path.abspath(output_dir)
  if os.path.exists(output_dir) and (not os.path.isdir(output_dir) or
                                     os.listdir(output_dir)):
    raise ImportFailure(f"output_dir {output_dir!r} exists and is not an "
                        "empty folder; choose a new one.")

  def write(tmp):
    tf.train.Checkpoint(**objects).write(os.path.join(tmp, "ckpt"))
    for name, text in files.items():
      with open(os.path.join(tmp, name), "w") as f:
        f.write(text)
    if before_rename is not None:
      before_rename(tmp)

  # An existing output_dir is empty (checked above).
  io_lib.write_atomically(output_dir, write, folder=True)
  return os.path.join(output_dir, "ckpt")


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
