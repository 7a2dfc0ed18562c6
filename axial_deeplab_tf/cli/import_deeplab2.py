"""Imports the published deeplab2 Axial-DeepLab and Panoptic-DeepLab checkpoints.

  axial-deeplab import-deeplab2 --help

The logic and flags live in axial_deeplab_tf/importers/deeplab2.py.
"""

from typing import Sequence

# The importer parses its own arguments (argparse).
PARSES_OWN_ARGUMENTS = True


def main(argv: Sequence[str]) -> int:
  from axial_deeplab_tf.importers import deeplab2  # pylint: disable=g-import-not-at-top
  return deeplab2.main(list(argv[1:]))
