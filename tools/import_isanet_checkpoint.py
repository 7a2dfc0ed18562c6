"""Imports an official ISANet checkpoint (openseg .pth) as a TF checkpoint.

  python tools/import_isanet_checkpoint.py --model=isanet_r101 \
      --dataset=cityscapes --checkpoint=PATH.pth --output_dir=DIR

Writes DIR/ckpt-1.* and DIR/model.gin (rebuilds the model and loads the
checkpoint). See axial_deeplab_tf/importers/isanet.py.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from axial_deeplab_tf.importers import isanet  # pylint: disable=g-import-not-at-top

if __name__ == "__main__":
  sys.exit(isanet.main())
