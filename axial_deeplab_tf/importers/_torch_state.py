"""Reading PyTorch state dicts and accounting for every tensor and variable.

Shared by the importers of PyTorch-published checkpoints (SegNeXt, ISANet):
`load_state_dict` reads a `.pth` file with `torch.load(weights_only=True)`
(no code from the file is run), `StateDictTransfer` hands out source tensors
by name, sets target variables with shape checks naming both sides, and at
the end insists that every source tensor was consumed or explicitly ignored
(with a reason) and every target variable was set. `write_output_dir`
writes a result folder so that a reader sees all of it or nothing.

torch is needed only here and is imported lazily (the `importers` extra).
"""

import argparse
import collections
import os
import sys
from typing import (Any, Callable, Dict, Iterable, List, Optional, Sequence,
                    TextIO)

import numpy as np

from axial_deeplab_tf.utils import io as io_lib


class CheckpointImportError(ValueError):
  """A problem with the user's input (file, flags, checkpoint content)."""


def load_state_dict(path: str,
                    container_keys: Sequence[str] = ("state_dict",),
                    strip_prefixes: Sequence[str] = ("module.",)
                   ) -> Dict[str, np.ndarray]:
  """Loads a PyTorch checkpoint file as {name: float32/int numpy array}.

  Args:
    path: a `.pth` file written by `torch.save`.
    container_keys: if the file holds a dict with one of these keys whose
      value is a dict of tensors (mmseg and openseg save
      {"state_dict": ..., "meta"/"optimizer": ...}), that dict is used.
    strip_prefixes: name prefixes removed when every name has them (the
      `module.` of DataParallel / DistributedDataParallel).

  Returns:
    An ordered dict of numpy arrays in the file's order.

  Raises:
    CheckpointImportError: missing file, not a torch checkpoint, or no
      tensors.
  """
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise CheckpointImportError(
        "importing a PyTorch checkpoint needs torch; install the package "
        "with its 'importers' extra (pip install axial_deeplab_tf[importers])"
    ) from e
  if not os.path.isfile(path):
    raise CheckpointImportError(f"checkpoint file not found: {path}")
  try:
    loaded = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as e:  # pylint: disable=broad-except
    message = " ".join(str(e).split())[:300]
    raise CheckpointImportError(
        f"{path} is not a PyTorch checkpoint that loads with "
        f"weights_only=True: {type(e).__name__}: {message}") from e
  state = loaded
  if isinstance(loaded, dict):
    for key in container_keys:
      if isinstance(loaded.get(key), dict):
        state = loaded[key]
        break
  if not isinstance(state, dict) or not state:
    raise CheckpointImportError(
        f"{path} holds no state dict (expected a dict of tensors, or a dict "
        f"with one under {list(container_keys)}); got "
        f"{type(state).__name__}.")
  arrays = collections.OrderedDict()
  for name, value in state.items():
    if not isinstance(value, torch.Tensor):
      raise CheckpointImportError(
          f"{path}: entry {name!r} is a {type(value).__name__}, not a tensor.")
    value = value.detach().cpu()
    if value.is_floating_point():
      value = value.float()
    arrays[str(name)] = value.numpy()
  return strip_common_prefix(arrays, strip_prefixes)


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


def torch_conv_to_tf(kernel: np.ndarray) -> np.ndarray:
  """[out, in, kh, kw] (PyTorch Conv2d) -> [kh, kw, in, out] (Keras Conv2D)."""
  return np.transpose(kernel, (2, 3, 1, 0))


def torch_depthwise_to_tf(kernel: np.ndarray) -> np.ndarray:
  """[channels, 1, kh, kw] (grouped Conv2d) -> [kh, kw, channels, 1]."""
  if kernel.ndim != 4 or kernel.shape[1] != 1:
    raise CheckpointImportError(
        f"expected a depthwise kernel [channels, 1, kh, kw], got shape "
        f"{list(kernel.shape)}.")
  return np.transpose(kernel, (2, 3, 0, 1))


class StateDictTransfer:
  """Copies source tensors into model variables, accounting for both sides.

  Usage: `take(name)` returns a source tensor and marks it consumed;
  `ignore(name, reason)` marks one as deliberately unused; `assign(variable,
  value, source)` sets a target variable (shape checked, both names in the
  error); `finish()` raises if a source tensor is left or a variable unset.
  """

  def __init__(self, state: Dict[str, np.ndarray],
               variables: Sequence, source_label: str = "checkpoint"):
    self._state = state
    self._source_label = source_label
    self._consumed: Dict[str, str] = {}
    self._ignored: Dict[str, str] = {}
    self._variables = {v.name: v for v in variables}
    if len(self._variables) != len(variables):
      counts = collections.Counter(v.name for v in variables)
      raise ValueError(f"target model has duplicate variable names: "
                       f"{sorted(n for n, c in counts.items() if c > 1)}")
    self._set: Dict[str, str] = {}

  @property
  def state(self) -> Dict[str, np.ndarray]:
    return self._state

  def has(self, name: str) -> bool:
    return name in self._state

  def take(self, name: str) -> np.ndarray:
    """Returns source tensor `name` and marks it consumed."""
    if name not in self._state:
      raise CheckpointImportError(
          f"{self._source_label} has no tensor {name!r} (expected by the "
          f"importer; is it a checkpoint of this architecture?)")
    if name in self._consumed or name in self._ignored:
      raise RuntimeError(f"source tensor {name!r} used twice")
    self._consumed[name] = name
    return self._state[name]

  def ignore(self, name: str, reason: str) -> None:
    """Marks source tensor `name` as deliberately not imported."""
    if name not in self._state:
      raise CheckpointImportError(
          f"{self._source_label} has no tensor {name!r}")
    self._ignored[name] = reason

  def ignore_matching(self, predicate: Callable[[str], bool],
                      reason: str) -> int:
    """Ignores every not yet handled tensor whose name satisfies predicate."""
    count = 0
    for name in self._state:
      if (name not in self._consumed and name not in self._ignored and
          predicate(name)):
        self._ignored[name] = reason
        count += 1
    return count

  def variable(self, name: str):
    """The target variable called `name` (without the `:0`)."""
    key = name if name.endswith(":0") else name + ":0"
    if key not in self._variables:
      raise RuntimeError(f"target model has no variable {key!r}")
    return self._variables[key]

  def assign(self, target: str, value: np.ndarray, source: str) -> None:
    """Sets target variable `target` to `value` (from source `source`)."""
    var = self.variable(target)
    if var.name in self._set:
      raise RuntimeError(f"variable {var.name!r} set twice (from "
                         f"{self._set[var.name]!r} and {source!r})")
    value = np.asarray(value)
    if tuple(var.shape) != tuple(value.shape):
      raise CheckpointImportError(
          f"shape mismatch: {self._source_label} tensor {source!r} gives "
          f"{list(value.shape)} but model variable {var.name!r} is "
          f"{list(var.shape)}")
    var.assign(value.astype(var.dtype.as_numpy_dtype))
    self._set[var.name] = source

  def copy(self, target: str, source: str,
           convert: Optional[Callable[[np.ndarray], np.ndarray]] = None
          ) -> None:
    """assign(target, convert(take(source)), source)."""
    value = self.take(source)
    self.assign(target, convert(value) if convert else value, source)

  @property
  def ignored(self) -> Dict[str, str]:
    return dict(self._ignored)

  def finish(self) -> str:
    """Checks completeness on both sides; returns a one-line summary."""
    left = [n for n in self._state
            if n not in self._consumed and n not in self._ignored]
    unset = [n for n in self._variables if n not in self._set]
    problems = []
    if left:
      problems.append(f"{len(left)} {self._source_label} tensor(s) not "
                      f"consumed: {_preview(left)}")
    if unset:
      problems.append(f"{len(unset)} model variable(s) not set: "
                      f"{_preview(unset)}")
    if problems:
      raise CheckpointImportError("; ".join(problems))
    reasons = collections.Counter(self._ignored.values())
    ignored = ", ".join(f"{c} {r}" for r, c in sorted(reasons.items()))
    return (f"{len(self._consumed)} tensors consumed, {len(self._ignored)} "
            f"ignored ({ignored or 'none'}), {len(self._set)}/"
            f"{len(self._variables)} variables set")


def _preview(names: List[str], limit: int = 8) -> str:
  shown = ", ".join(repr(n) for n in names[:limit])
  return shown + (f", ... ({len(names) - limit} more)"
                  if len(names) > limit else "")


def check_output_dir(output_dir: str) -> str:
  """Returns the absolute output dir; refuses one that holds files."""
  if not output_dir:
    raise CheckpointImportError("--output_dir is required.")
  path = os.path.abspath(os.path.expanduser(output_dir))
  if os.path.exists(path) and (not os.path.isdir(path) or os.listdir(path)):
    raise CheckpointImportError(
        f"--output_dir {path} exists and is not an empty folder; choose a "
        f"new one (nothing there is overwritten).")
  return path


def write_output_dir(output_dir: str,
                     write_fn: Callable[[str], None]) -> None:
  """Runs write_fn(temporary folder) beside output_dir, then renames.

  On any error the temporary folder is removed and output_dir is untouched.
  """
  path = check_output_dir(output_dir)
  # An existing folder at path is empty (checked above).
  io_lib.write_atomically(path, write_fn, folder=True)


def progress(message: str, stream: Optional[TextIO] = None) -> None:
  """One progress line on stdout (flushed, for logs of long imports)."""
  stream = stream or sys.stdout
  print(message, file=stream, flush=True)


def gin_text(model_name: str, dataset: str, overrides: Dict[str, Any],
             source: str) -> str:
  """A gin file rebuilding the imported model and initialising it.

  It includes the dataset's experiment file `gin/<dataset>/<model>.gin`,
  binds the model overrides of the import and initialises the whole model
  from the checkpoint (`@CHECKPOINT@`, replaced by `write_model`).
  """
  model_overrides = {k: v for k, v in overrides.items() if k != "num_classes"}
  return "\n".join([
      f"# {model_name} imported from the official checkpoint {source}",
      f"# ({dataset}, {overrides['num_classes']} classes).",
      f"include '{dataset}/{model_name}.gin'",
      f"model.name = '{model_name}'",
      f"model.overrides = {model_overrides!r}",
      "experiment.init_checkpoint = '@CHECKPOINT@'",
      "experiment.init_checkpoint_modules = 'all'",
      ""])


def write_model(model, output_dir: str, gin: str) -> str:
  """Writes checkpoint + gin into output_dir atomically; returns the prefix."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  final_prefix = os.path.join(os.path.abspath(output_dir), "ckpt-1")

  def write(folder):
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(model=model),
                                         folder, max_to_keep=1)
    manager.save(checkpoint_number=1)
    with open(os.path.join(folder, "model.gin"), "w") as f:
      f.write(gin.replace("@CHECKPOINT@", final_prefix))

  write_output_dir(output_dir, write)
  return final_prefix


def parse_args(argv: Sequence[str], description: str,
               models: Sequence[str], datasets: Sequence[str]):
  """The importer flags; bad usage raises CheckpointImportError."""

  class _Parser(argparse.ArgumentParser):

    def error(self, message):
      raise CheckpointImportError(message)

  parser = _Parser(description=description)
  parser.add_argument("--model", required=True, choices=list(models))
  parser.add_argument("--dataset", required=True, choices=list(datasets))
  parser.add_argument("--checkpoint", required=True,
                      help="the official .pth file")
  parser.add_argument("--output_dir", required=True,
                      help="new or empty folder for the TF checkpoint and "
                      "model.gin")
  parser.add_argument("--verbose", action="store_true",
                      help="show tracebacks")
  return parser.parse_args(list(argv))


def run_main(argv: Optional[List[str]], description: str, models, datasets,
             import_fn) -> int:
  """Shared main of the importer tools: flags, errors as one line, exit 2."""
  argv = sys.argv[1:] if argv is None else list(argv)
  verbose = "--verbose" in argv
  try:
    args = parse_args(argv, description, models, datasets)
    _, summary = import_fn(args.model, args.dataset, args.checkpoint,
                           args.output_dir)
  except CheckpointImportError as e:
    if verbose:
      raise
    print("error: " + " ".join(str(e).split()), file=sys.stderr)
    return 2
  print(summary, flush=True)
  return 0
