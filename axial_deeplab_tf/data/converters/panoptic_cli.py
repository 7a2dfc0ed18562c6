"""Flags and main() of the tools converting a panoptic dataset root.

tools/build_cityscapes_data.py and tools/build_mapillary_data.py read a
dataset root with a split, an optional explicit panoptic JSON, a label
divisor and an ignore label; they differ in the root flag's name and in one
dataset flag of their own (--mode, --version). This module defines the
common flags (plus cli.define_shared_flags) and builds the tools' main().
"""

from typing import Callable, List, Sequence

from absl import app
from absl import flags

from axial_deeplab_tf.data.converters import cli
from axial_deeplab_tf.data.converters import writer

# Flags passed to the converter under their own names, besides the root.
_CONVERTER_FLAGS = ("split", "output_dir", "panoptic_json", "output_split",
                    "num_shards", "num_workers", "strict", "label_divisor",
                    "ignore_label")


def define_flags(root_flag: str, root_help: str, default_split: str,
                 split_help: str, panoptic_json_help: str,
                 default_num_shards: int) -> None:
  """Defines the root flag (required), --split, --panoptic_json,
  --output_split, --label_divisor, --ignore_label and the shared flags.

  Args:
    root_flag: name of the dataset root flag, e.g. "cityscapes_root".
    root_help: its help text.
    default_split: default of --split.
    split_help: help text of --split (the split names).
    panoptic_json_help: help text of --panoptic_json.
    default_num_shards: default of --num_shards.
  """
  flags.DEFINE_string(root_flag, None, root_help)
  flags.DEFINE_string("split", default_split, split_help)
  flags.DEFINE_string("panoptic_json", None, panoptic_json_help)
  flags.DEFINE_string("output_split", None,
                      "Shard name prefix (default: --split).")
  flags.DEFINE_integer("label_divisor", 1000, "Panoptic label divisor.")
  flags.DEFINE_integer("ignore_label", 255, "Ignore label.")
  flags.mark_flag_as_required(root_flag)
  cli.define_shared_flags(default_num_shards=default_num_shards)


def make_main(convert: Callable[..., writer.ConversionSummary],
              root_flag: str, extra_flags: Sequence[str] = ()
             ) -> Callable[[List[str]], None]:
  """Returns the tool's main(argv): runs `convert` with the flag values.

  Args:
    convert: the converter; takes the root flag, the flags of
      `define_flags` and `extra_flags` as keyword arguments of the same
      names.
    root_flag: name of the dataset root flag.
    extra_flags: the tool's own flags passed on to `convert`.

  Returns:
    main(argv) for absl's app.run; it exits non-zero when the conversion
    fails (see cli.run_conversion).
  """
  names = (root_flag,) + _CONVERTER_FLAGS + tuple(extra_flags)

  def main(argv: List[str]) -> None:
    if len(argv) > 1:
      raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    kwargs = {name: flags.FLAGS[name].value for name in names}
    cli.run_conversion(lambda: convert(**kwargs))

  return main
