"""Prints trainable parameters and multiply-adds of zoo models as JSON.

  axial-deeplab stats --model axial_resnet_50l --input_size 224 224
  axial-deeplab stats --model axial_deeplab_s --input_size 1025 1025 \
      --num_classes 133
  axial-deeplab stats --model all        # One JSON line per model.

Each line: {"model", "input_size", "num_classes", "params", "madds",
"madds_by_op", "madds_method"}. Params are trainable weights; M-Adds are
counted for one image of [1, H, W, 3] by walking the traced inference graph
(see axial_deeplab_tf/utils/madds.py for what is counted and why not with
TF's profiler). Without --input_size a model's own default input size is
used. Exit status: 0 on success, 1 if any model failed (its line then has
"error"), 2 on bad arguments or an unknown model name.
"""

import argparse
import ast
import gc
import importlib
import importlib.util
import json
import os
import sys

_RESERVED = ("num_classes", "input_size")


def _parse_set(items, parser):
  """Turns ["key=value", ...] into a dict; values as Python literals."""
  overrides = {}
  for item in items:
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key.isidentifier():
      parser.error(f"--set expects key=value with a Python identifier as "
                   f"key, got {item!r}.")
    if key in _RESERVED:
      parser.error(f"--set {key}=... is not allowed; use --{key}.")
    try:
      value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      value = text  # A bare word such as relu stays a string.
    overrides[key] = value
  return overrides


def _import_module(spec: str) -> None:
  """Imports a module by dotted name or .py path (it may register models)."""
  if spec.endswith(".py"):
    if not os.path.isfile(spec):
      raise FileNotFoundError(f"--module file {spec!r} does not exist.")
    name = os.path.splitext(os.path.basename(spec))[0]
    module_spec = importlib.util.spec_from_file_location(name, spec)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    module_spec.loader.exec_module(module)
  else:
    importlib.import_module(spec)


def model_stats(name, input_size=None, num_classes=None, overrides=None):
  """Builds zoo model `name` and returns its statistics as a dict.

  Args:
    name: zoo model name.
    input_size: (height, width), or None for the model's default.
    num_classes: number of classes, or None for the model's default.
    overrides: further builder keyword arguments.

  Returns:
    {"model", "input_size", "num_classes", "params", "madds", "madds_by_op",
     "madds_method"}.
  """

  from axial_deeplab_tf import models
  from axial_deeplab_tf.utils import madds
  # pylint: enable=g-import-not-at-top
  entry = models.get_entry(name)
  kwargs = dict(overrides or {})
  if input_size is None:
    if entry.defaults.get("input_size") is None:
      raise ValueError(f"Model {name!r} has no default input_size; pass "
                       f"--input_size H W.")
    input_size = tuple(entry.defaults["input_size"])
  else:
    kwargs["input_size"] = tuple(input_size)
  if num_classes is not None:
    kwargs["num_classes"] = num_classes
  model = models.build(name, **kwargs)
  count = madds.count_madds(model, [1, input_size[0], input_size[1], 3])
  return {
      "model": name,
      "input_size": [int(input_size[0]), int(input_size[1])],
      "num_classes": (num_classes if num_classes is not None else
                      entry.defaults.get("num_classes")),
      "params": madds.count_params(model),
      "madds": count.total,
      "madds_by_op": count.by_op_type,
      "madds_method": madds.METHOD,
  }


# The command-line dispatcher passes the raw arguments: argparse, not absl.
PARSES_OWN_ARGUMENTS = True


def main(argv=None) -> int:
  """Runs the tool; argv[0] is the program name (default sys.argv)."""
  argv = list(sys.argv if argv is None else argv)
  parser = argparse.ArgumentParser(
      prog=argv[0],
      description="Trainable parameters and M-Adds of zoo models (JSON).")
  parser.add_argument("--model", required=True,
                      help="Zoo model name, or 'all' for every zoo model.")
  parser.add_argument("--input_size", nargs=2, type=int, metavar=("H", "W"),
                      help="Input height and width (default: the model's).")
  parser.add_argument("--num_classes", type=int,
                      help="Number of classes (default: the model's).")
  parser.add_argument("--set", action="append", default=[],
                      metavar="KEY=VALUE",
                      help="Extra builder argument (Python literal value); "
                           "repeatable.")
  # Imports a module (dotted name or .py path) that registers more models.
  parser.add_argument("--module", action="append", default=[],
                      help=argparse.SUPPRESS)
  args = parser.parse_args(argv[1:])
  if args.input_size is not None and min(args.input_size) <= 0:
    parser.error(f"--input_size must be two positive ints, got "
                 f"{args.input_size}.")
  if args.num_classes is not None and args.num_classes <= 0:
    parser.error(f"--num_classes must be a positive int, got "
                 f"{args.num_classes}.")
  overrides = _parse_set(args.set, parser)
  for spec in args.module:
    try:
      _import_module(spec)
    except Exception as e:  # pylint: disable=broad-except
      parser.error(f"--module {spec!r} failed to import: "
                   f"{type(e).__name__}: {e}")

  import tf_keras
  from axial_deeplab_tf import models
  choices = models.list_models()
  if args.model == "all":
    names = choices
  elif args.model in choices:
    names = [args.model]
  else:
    parser.error(f"unknown model {args.model!r}; choose 'all' or one of: "
                 f"{', '.join(choices)}.")

  failed = 0
  for name in names:
    try:
      line = model_stats(name, args.input_size, args.num_classes, overrides)
    except Exception as e:  # pylint: disable=broad-except
      # Every model gets a line; a failure is reported, never skipped.
      failed += 1
      line = {"model": name,
              "error": f"{type(e).__name__}: {' '.join(str(e).split())}"}
      print(f"error: {name}: {line['error']}", file=sys.stderr)
    print(json.dumps(line, sort_keys=True), flush=True)
    tf_keras.backend.clear_session()
    gc.collect()
  return 1 if failed else 0
