"""Imports the published deeplab2 Axial-DeepLab and Panoptic-DeepLab checkpoints.

  axial-deeplab import-deeplab2 --model=deeplab2_panoptic_resnet50_os32 \
      --checkpoint=resnet50_os32_panoptic_deeplab_cityscapes_trainfine.tar.gz \
      --output_dir=imported/resnet50_os32 [--export]

The logic and flags live in axial_deeplab_tf/importers/deeplab2.py.
"""

import sys
from typing import Sequence

from absl import flags

# The flags are defined on a FlagValues of this call (see main).
PARSES_OWN_ARGUMENTS = True


def main(argv: Sequence[str]) -> int:
  from axial_deeplab_tf.importers import deeplab2  # pylint: disable=g-import-not-at-top
  values = flags.FlagValues()
  deeplab2.define_flags(values)
  argv = list(argv)
  if any(a in ("-h", "--help", "--helpshort") for a in argv[1:]):
    print(__doc__)
    print("flags:")
    print(values.get_help())
    return 0
  try:
    rest = values(argv)
  except flags.Error as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return deeplab2.main(rest, values)
