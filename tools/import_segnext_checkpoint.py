"""Imports an official SegNeXt checkpoint (mmseg .pth) as a TF checkpoint.

  python tools/import_segnext_checkpoint.py --model=segnext_t \
      --dataset=ade20k --checkpoint=PATH.pth --output_dir=DIR

Writes DIR/ckpt-1.* and DIR/model.gin (rebuilds the model and loads the
checkpoint). See axial_deeplab_tf/importers/segnext.py.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from axial_deeplab_tf.importers import segnext  # pylint: disable=g-import-not-at-top

if __name__ == "__main__":
  sys.exit(segnext.main())
