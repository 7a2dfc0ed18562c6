"""Flags and exit handling shared by the tools/build_*_data.py converters."""

import os
import sys
from typing import Callable

from absl import flags

from axial_deeplab_tf.data.converters import writer


def define_shared_flags(default_num_shards: int) -> None:
  """Defines --output_dir, --num_shards, --num_workers and --strict."""
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


def run_conversion(convert: Callable[[], writer.ConversionSummary]) -> None:
  """Runs a conversion, prints its summary; exits non-zero when it failed.

  Exit status 1 with the reason on stderr when: --strict met a bad input,
  the inputs or arguments are wrong, or no record at all was written.
  """
  try:
    summary = convert()
  except writer.StrictModeError as e:
    sys.exit(f"ERROR: {e}")
  except (ValueError, FileNotFoundError) as e:
    sys.exit(f"ERROR: {e}")
  print(summary.format(), file=sys.stderr)
  if summary.num_records == 0:
    sys.exit(f"ERROR: no record was written for split {summary.split!r}; "
             f"every input was skipped (see the summary above).")
