r"""Imports a PyTorch Axial-DeepLab reference state dict (e.g. axial26s.pth).

  python tools/import_torch_axial_checkpoint.py --model=axial_resnet_26s \
      --checkpoint=axial26s.pth --output_dir=/tmp/axial26s

Writes ckpt (tf.train.Checkpoint(model=...)) and model.gin into the new
folder; see axial_deeplab_tf/importers/torch_axial.py. Exit status 2 with
one `error:` line on a bad checkpoint or argument.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from axial_deeplab_tf.importers import torch_axial  # pylint: disable=g-import-not-at-top,wrong-import-position

if __name__ == "__main__":
  sys.exit(torch_axial.main())
