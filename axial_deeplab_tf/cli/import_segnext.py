"""Imports the official SegNeXt checkpoints (mmsegmentation state dicts).

  axial-deeplab import-segnext --help

The logic and flags live in axial_deeplab_tf/importers/segnext.py.
"""

from typing import Sequence

# The importer parses its own arguments (argparse).
PARSES_OWN_ARGUMENTS = True


def main(argv: Sequence[str]) -> int:
  from axial_deeplab_tf.importers import segnext  # pylint: disable=g-import-not-at-top
  return segnext.main(list(argv[1:]))
