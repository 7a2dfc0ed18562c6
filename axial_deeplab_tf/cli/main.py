"""The `axial-deeplab` command: one subcommand per tool.

  axial-deeplab <subcommand> [--flag=value ...]
  python -m axial_deeplab_tf <subcommand> [--flag=value ...]
  axial-deeplab <subcommand> --help       # the subcommand's own flags

`SUBCOMMANDS` maps each name to the module that implements it (a nested
mapping is a group, e.g. `build-data <dataset>`). A module is imported only
when its subcommand runs, so each subcommand defines only its own absl
flags. It defines them at import time and has `main(argv)`, run by
`absl.app.run` (argv[0] is the program); a module that sets
`PARSES_OWN_ARGUMENTS = True` gets the raw argument list instead. Adding a
tool is one line in the table.
"""

import ast
import importlib
import importlib.util
import os
import sys
from typing import List, Mapping, Optional, Sequence, Union

SUBCOMMANDS = {
    "train": "axial_deeplab_tf.cli.train",
    "eval": "axial_deeplab_tf.cli.evaluate",
    "export": "axial_deeplab_tf.cli.export",
    "export-tflite": "axial_deeplab_tf.cli.export_tflite",
    "export-onnx": "axial_deeplab_tf.cli.export_onnx",
    "predict": "axial_deeplab_tf.cli.predict",
    "make-synthetic": "axial_deeplab_tf.cli.make_synthetic",
    "build-data": {
        "panoptic": "axial_deeplab_tf.cli.build_panoptic_data",
        "coco": "axial_deeplab_tf.cli.build_coco_panoptic_data",
        "cityscapes": "axial_deeplab_tf.cli.build_cityscapes_data",
        "mapillary": "axial_deeplab_tf.cli.build_mapillary_data",
        "ade20k": "axial_deeplab_tf.cli.build_ade20k_data",
        "imagenet": "axial_deeplab_tf.cli.build_imagenet_data",
    },
    "experiments": "axial_deeplab_tf.cli.experiments",
    "stats": "axial_deeplab_tf.cli.stats",
    "benchmark": "axial_deeplab_tf.cli.benchmark",
    "visualize-attention": "axial_deeplab_tf.cli.visualize_attention",
    "scale-stress": "axial_deeplab_tf.cli.scale_stress",
    "import-torch-axial": "axial_deeplab_tf.cli.import_torch_axial",
    "import-segnext": "axial_deeplab_tf.cli.import_segnext",
    "import-isanet": "axial_deeplab_tf.cli.import_isanet",
    "import-deeplab2": "axial_deeplab_tf.cli.import_deeplab2",
}

Table = Mapping[str, Union[str, "Table"]]

USAGE_ERROR = 2
_HELP = ("-h", "--help", "--helpshort", "-?")


class CommandError(Exception):
  """A usage error of the dispatcher (printed as one `error:` line)."""


def _summary(module_path: str) -> str:
  """First docstring line of a module, read without importing it."""
  try:
    spec = importlib.util.find_spec(module_path)
  except ModuleNotFoundError:
    spec = None
  if spec is None or not spec.origin or not os.path.isfile(spec.origin):
    return "(not installed)"
  with open(spec.origin, encoding="utf-8") as f:
    doc = ast.get_docstring(ast.parse(f.read())) or ""
  return doc.strip().splitlines()[0] if doc.strip() else ""


def usage(table: Table, program: str) -> str:
  """The list of subcommands of `table` with their one-line summaries."""
  lines = [f"usage: {program} <subcommand> [flags]", "", "subcommands:"]
  width = max(len(name) for name in table) + 2
  for name, target in table.items():
    text = (f"one of: {', '.join(target)}" if isinstance(target, Mapping)
            else _summary(target))
    lines.append(f"  {name:{width}s}{text}")
  lines += ["", f"`{program} <subcommand> --help` lists its flags."]
  return "\n".join(lines)


def load(module_path: str, program: str):
  """Imports a subcommand's module.

  Raises:
    CommandError: the module, or a package it needs, is not installed.
  """
  try:
    return importlib.import_module(module_path)
  except ModuleNotFoundError as e:
    if e.name and (module_path == e.name or
                   module_path.startswith(e.name + ".")):
      raise CommandError(
          f"'{program}' is not available in this installation: its module "
          f"{module_path} is not installed.") from e
    raise CommandError(f"'{program}' needs the Python package {e.name!r}, "
                       f"which is not installed ({e}).") from e


def flag_help(module) -> str:
  """The module's docstring and the flags this package defined."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  parts = [(module.__doc__ or "").strip(), "", "flags:"]
  by_module = flags.FLAGS.flags_by_module_dict()
  for name in sorted(by_module):
    if name.startswith("axial_deeplab_tf"):
      parts.append(flags.FLAGS.module_help(name))
  return "\n".join(parts)


def _wants_help(args: Sequence[str]) -> bool:
  args = list(args)
  if "--" in args:
    args = args[:args.index("--")]
  return any(a in _HELP for a in args)


def run(argv: Optional[List[str]] = None,
        program: str = "axial-deeplab") -> int:
  """Runs `program <subcommand> args...`; argv excludes the program name.

  Returns:
    The exit status (absl subcommands exit through absl.app.run).
  """
  args = list(sys.argv[1:] if argv is None else argv)
  table: Table = SUBCOMMANDS
  try:
    while True:
      if not args or args[0] in _HELP + ("help",):
        print(usage(table, program), file=sys.stdout if args else sys.stderr)
        return 0 if args else USAGE_ERROR
      name = args.pop(0)
      if name not in table:
        raise CommandError(f"unknown subcommand {name!r} of '{program}'; "
                           f"expected one of: {', '.join(table)}.")
      program = f"{program} {name}"
      target = table[name]
      if isinstance(target, str):
        break
      table = target
  except CommandError as e:
    print(f"error: {e}", file=sys.stderr)
    return USAGE_ERROR
  return run_module(target, args, program)


def run_module(module_path: str, args: List[str], program: str) -> int:
  """Runs one subcommand's module on `args` (without the program name).

  Returns:
    The exit status (absl subcommands exit through absl.app.run).
  """
  try:
    module = load(module_path, program)
  except CommandError as e:
    print(f"error: {e}", file=sys.stderr)
    return USAGE_ERROR
  from axial_deeplab_tf.utils import errors  # pylint: disable=g-import-not-at-top
  if getattr(module, "PARSES_OWN_ARGUMENTS", False):
    sys.argv = [program] + args
    return errors.run_tool(module.main, [program] + args)
  if _wants_help(args):
    print(flag_help(module))
    return 0
  from absl import app  # pylint: disable=g-import-not-at-top
  sys.argv = [program] + args
  app.run(errors.tool_main(module.main), argv=[program] + args)
  return 0  # app.run exits; not reached.


def run_tool(module_path: str) -> None:
  """Entry of the thin wrappers in tools/: runs the module and exits."""
  sys.exit(run_module(module_path, sys.argv[1:], program=sys.argv[0]))
