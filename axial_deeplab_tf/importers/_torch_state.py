"""The SegNeXt / ISANet import tools on the contract of `common.py`.

`common` does the work (the reader with `torch.load(weights_only=True)`,
the consumed / ignored / set bookkeeping, the atomic output folder); this
module adds what the two tools share beyond it: their messages (`Wording`),
PyTorch -> Keras kernel layouts, the gin file that rebuilds and
initialises the imported model, the checkpoint writer and the tool `main`.

torch is imported lazily (the `importers` extra).
"""

import argparse
import os
import sys
from typing import Any, Callable, Dict, List, Optional, Sequence, TextIO

import numpy as np

from axial_deeplab_tf.importers import common


class CheckpointImportError(common.ImportFailure):
  """A problem with the user's input (file, flags, checkpoint content)."""


class Wording(common.Wording):
  """The messages of the SegNeXt / ISANet import tools."""
  error = CheckpointImportError
  duplicate_variable = "target model has duplicate variable name {name!r}"
  missing = ("{label} has no tensor {name!r} (expected by the importer; is "
             "it a checkpoint of this architecture?)")
  unknown_target = "target model has no variable {name!r}"
  set_twice = "variable {name!r} set twice (second from {source!r})"
  shape_mismatch = ("shape mismatch: {label} tensor {source!r} gives "
                    "{value_shape} but model variable {name!r} is "
                    "{variable_shape}")
  unused = "{count} {label} tensor(s) not consumed: {names}"
  unset = "{count} model variable(s) not set: {names}"
  incomplete = "{problems}"
  no_torch = ("importing a PyTorch checkpoint needs torch; install the "
              "package with its 'importers' extra (pip install "
              "axial_deeplab_tf[importers])")
  not_a_file = "checkpoint file not found: {path}"
  unreadable = ("{path} is not a PyTorch checkpoint that loads with "
                "weights_only=True: {kind}: {folded}")
  no_state = ("{path} holds no state dict (expected a dict of tensors, or a "
              "dict with one under {keys}); got {kind}.")
  not_tensor = "{path}: entry {name!r} is a {kind}, not a tensor."
  output_exists = ("--output_dir {abspath} exists and is not an empty "
                   "folder; choose a new one (nothing there is "
                   "overwritten).")
  no_output = "--output_dir is required."
  shape_text = staticmethod(list)

  @staticmethod
  def names(names, limit: int = 8) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f", ... ({len(names) - limit} more)"
                    if len(names) > limit else "")


def load_state_dict(path: str,
                    container_keys: Sequence[str] = ("state_dict",),
                    strip_prefixes: Sequence[str] = ("module.",)
                   ) -> Dict[str, np.ndarray]:
  """`common.load_torch_state_dict` with this family's keys and messages."""
  return common.load_torch_state_dict(path, container_keys, strip_prefixes,
                                      Wording)


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


class StateDictTransfer(common.TensorMapping):
  """`common.TensorMapping` with this family's messages."""

  wording = Wording

  def __init__(self, state: Dict[str, np.ndarray], variables: Sequence,
               source_label: str = "checkpoint"):
    super().__init__(state, variables, source_label)


def bn_transfer(state: Dict[str, np.ndarray], model,
                source_label: str) -> StateDictTransfer:
  """A transfer onto `model` that ignores the BN step counters."""
  t = StateDictTransfer(state, model.variables, source_label)
  t.ignore_matching(lambda n: n.endswith(".num_batches_tracked"),
                    "BN step counters (not used at inference)")
  return t


def copy_conv(t: StateDictTransfer, target: str, source: str, bias: bool,
              convert: Callable[[np.ndarray], np.ndarray] = torch_conv_to_tf,
              kernel: str = "kernel") -> None:
  """A Conv2d's weight (layout converted) and optionally its bias."""
  t.copy(f"{target}/{kernel}", f"{source}.weight", convert)
  if bias:
    t.copy(f"{target}/bias", f"{source}.bias")


def copy_norm(t: StateDictTransfer, target: str, source: str,
              statistics: bool = True,
              gamma: Optional[Callable[[np.ndarray], np.ndarray]] = None
             ) -> None:
  """A norm layer's weight/bias as gamma/beta (`gamma` converts the weight),
  with the running mean/var as moving statistics unless `statistics` is
  False (GroupNorm)."""
  t.copy(f"{target}/gamma", f"{source}.weight", gamma)
  t.copy(f"{target}/beta", f"{source}.bias")
  if statistics:
    t.copy(f"{target}/moving_mean", f"{source}.running_mean")
    t.copy(f"{target}/moving_variance", f"{source}.running_var")


def check_output_dir(output_dir: str) -> str:
  """Returns the absolute output dir; refuses one that holds files."""
  return common.check_output_dir(output_dir, Wording)


def progress(message: str, stream: Optional[TextIO] = None) -> None:
  """One progress line on stdout (flushed, for logs of long imports)."""
  common.progress(message, stream or sys.stdout)


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

  common.write_output_dir(output_dir, write, Wording)
  return final_prefix


def import_model(model_name: str, dataset: str, checkpoint: str,
                 output_dir: str, overrides: Dict[str, Any],
                 check_state: Callable[[Dict[str, np.ndarray]], None],
                 transfer_weights: Callable[..., str], report=progress):
  """The steps every PyTorch-checkpoint import takes; (model, summary).

  Refuses a non-empty output_dir, reads the checkpoint, lets
  `check_state(state)` refuse another variant, builds the zoo model with
  `overrides`, runs `transfer_weights(model, state, report)` and writes
  the checkpoint and gin file atomically.
  """
  check_output_dir(output_dir)
  report(f"reading {checkpoint}")
  state = load_state_dict(checkpoint)
  check_state(state)
  from axial_deeplab_tf import models  # pylint: disable=g-import-not-at-top
  report(f"building {model_name} ({dataset}, {overrides['num_classes']} "
         "classes)")
  model = models.build(model_name, **overrides)
  summary = transfer_weights(model, state, report)
  gin = gin_text(model_name, dataset, overrides, os.path.basename(checkpoint))
  prefix_path = write_model(model, output_dir, gin)
  return model, (f"imported {model_name} ({dataset}): {summary}; wrote "
                 f"{prefix_path} and model.gin")


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
