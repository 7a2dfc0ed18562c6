"""Imports the official ISANet checkpoints of openseg.pytorch.

  axial-deeplab import-isanet --help

The logic and flags live in axial_deeplab_tf/importers/isanet.py.
"""

from typing import Sequence

# The importer parses its own arguments (argparse).
PARSES_OWN_ARGUMENTS = True


def main(argv: Sequence[str]) -> int:
  from axial_deeplab_tf.importers import isanet  # pylint: disable=g-import-not-at-top
  return isanet.main(list(argv[1:]))
