"""Imports the PyTorch Axial-DeepLab reference state dicts (axial26s/50s/50m/50l).

  axial-deeplab import-torch-axial --help

The logic and flags live in axial_deeplab_tf/importers/torch_axial.py.
"""

from typing import Sequence

# The importer parses its own arguments (argparse).
PARSES_OWN_ARGUMENTS = True


def main(argv: Sequence[str]) -> int:
  from axial_deeplab_tf.importers import torch_axial  # pylint: disable=g-import-not-at-top
  return torch_axial.main(list(argv[1:]))
