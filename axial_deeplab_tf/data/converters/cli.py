"""Flags and exit handling shared by the tools/build_*_data.py converters.

`define_shared_flags` and `run_conversion` serve every converter tool;
`define_flags` and `make_main` build the whole CLI of the tools converting
a panoptic dataset root (tools/build_cityscapes_data.py and
tools/build_mapillary_data.py), which differ only in the root flag's name
and one dataset flag of their own (--mode, --version).
"""

import os
import sys
from typing import Callable, List, Sequence

from absl import app
from absl import flags

from axial_deeplab_tf.data.converters import writer
from axial_deeplab_tf.utils import errors


def define_shared_flags(default_num_shards: int,
                        outside_root_flag: bool = False) -> None:
  """Defines --output_dir, --num_shards, --num_workers and --strict.

  Args:
    default_num_shards: default of --num_shards.
    outside_root_flag: also define --allow_outside_root (converters of
      JSON annotations that name files).
  """
  if outside_root_flag:
    flags.DEFINE_boolean(
        "allow_outside_root", False,
        "Accept image and label paths of the annotation JSON that lie "
        "outside the dataset folders (absolute or with '..'); refused by "
        "default.")
  flags.DEFINE_string("output_dir", None,
                      "Directory for the TFRecord shards, metadata.json and "
                      "summary_{split}.json.")
  flags.DEFINE_integer("num_shards", default_num_shards,
                       "Number of output shards per split.")
  flags.DEFINE_integer("num_workers", min(8, os.cpu_count() or 1),
                       "Worker processes reading and checking the inputs.")
  flags.DEFINE_boolean("strict", False,
                       "Stop with a non-zero exit at the first bad input "
                       "(nothing is written) instead of skipping it and "
                       "reporting it in the summary.")
  flags.mark_flag_as_required("output_dir")


def define_label_flags(default_label_divisor: int) -> None:
  """Defines --label_divisor and --ignore_label (default 255)."""
  flags.DEFINE_integer("label_divisor", default_label_divisor,
                       "Panoptic label divisor.")
  flags.DEFINE_integer("ignore_label", 255, "Ignore label.")


def run_conversion(convert: Callable[[], writer.ConversionSummary]) -> None:
  """Runs a conversion, prints its summary; exits with the tool's status.

  Per-input problems are listed in the summary with path and reason and
  the rest is converted; the last line says how many inputs failed (exit
  status 0 while at least one record was written). Problems of the input
  as a whole or of the environment (--strict met a bad input, malformed
  annotation JSON, paths outside the dataset, no record written, an
  unusable output folder, a full disk, too few file handles) end with one
  `error: <what>, <which file>, <why>` line and exit status 2 (with the
  traceback under --verbose); nothing is left under a final name.
  """

  def main(_):
    summary = convert()
    print(summary.format(), file=sys.stderr)
    print(f"{len(summary.skipped)} of {summary.num_inputs} input(s) failed; "
          f"{summary.num_records} record(s) written to "
          f"{len(summary.shard_paths)} shard(s).", file=sys.stderr)
    return 0

  sys.exit(errors.run_tool(main))


# Flags passed to the converter under their own names, besides the root.
_CONVERTER_FLAGS = ("split", "output_dir", "panoptic_json", "output_split",
                    "num_shards", "num_workers", "strict", "label_divisor",
                    "ignore_label", "allow_outside_root")


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
  define_label_flags(default_label_divisor=1000)
  flags.mark_flag_as_required(root_flag)
  define_shared_flags(default_num_shards=default_num_shards,
                      outside_root_flag=True)


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
    fails (see run_conversion).
  """
  return converter_main(
      convert, (root_flag,) + _CONVERTER_FLAGS + tuple(extra_flags))


def converter_tool(convert: Callable[..., writer.ConversionSummary],
                   own_flags: Sequence[str], default_num_shards: int,
                   outside_root_flag: bool = False
                  ) -> Callable[[List[str]], None]:
  """Defines the shared flags and returns the main(argv) of a converter
  tool that passes `own_flags` and the shared flags on to `convert`
  (unexpected arguments: absl's UsageError)."""
  define_shared_flags(default_num_shards, outside_root_flag)
  shared = ("output_dir", "num_shards", "num_workers", "strict")
  if outside_root_flag:
    shared += ("allow_outside_root",)
  return converter_main(convert, tuple(own_flags) + shared, usage_error=True)


def converter_main(convert: Callable[..., writer.ConversionSummary],
                   names: Sequence[str], usage_error: bool = False
                  ) -> Callable[[List[str]], None]:
  """Returns main(argv) running `convert(**{name: flag value})`.

  Args:
    convert: the converter; its keyword arguments are named as the flags.
    names: the flags passed on.
    usage_error: unexpected arguments raise absl's UsageError (usage and
      exit 1) instead of one `error:` line and exit 2.
  """

  def main(argv: List[str]) -> None:
    if len(argv) > 1:
      if usage_error:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
      sys.exit(errors.report(errors.UserError(
          "unexpected arguments", None, " ".join(argv[1:]))))
    kwargs = {name: flags.FLAGS[name].value for name in names}
    run_conversion(lambda: convert(**kwargs))

  return main
