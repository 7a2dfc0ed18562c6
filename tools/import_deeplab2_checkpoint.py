"""Imports a published deeplab2 checkpoint into a zoo model.

  python tools/import_deeplab2_checkpoint.py \
    --model=deeplab2_panoptic_resnet50_os32 \
    --checkpoint=resnet50_os32_panoptic_deeplab_cityscapes_trainfine.tar.gz \
    --output_dir=models/resnet50_os32

writes OUTPUT_DIR/ckpt-1 and OUTPUT_DIR/experiment.gin (see
axial_deeplab_tf/importers/deeplab2.py). Errors: one `error: ...` line,
exit 2, nothing written.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app  # pylint: disable=g-import-not-at-top,wrong-import-position

from axial_deeplab_tf.importers import deeplab2  # pylint: disable=g-import-not-at-top,wrong-import-position

deeplab2.define_flags()

if __name__ == "__main__":
  app.run(lambda argv: sys.exit(deeplab2.main(argv)))
