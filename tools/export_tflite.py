r"""Exports a model's network as LiteRT (.tflite, built-in ops only) at a fixed input size.

  python tools/export_tflite.py --model=axial_deeplab_s --set=num_classes=19 \
      --dataset_metadata=/data/cityscapes/metadata.json \
      --checkpoint_path=/tmp/run --input_size=1025,2049 \
      --quantization=float32|float16|int8 --output=/tmp/model.tflite

(or --gin_file=... for an experiment). Writes the file and a .json
description beside it; `tools/predict.py --saved_model=/tmp/model.tflite` runs
it with the post-processing step. See
axial_deeplab_tf/serving/portable_export.py. Errors: one line on stderr,
exit status 2.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from axial_deeplab_tf.serving import portable_export  # pylint: disable=g-import-not-at-top,wrong-import-position

if __name__ == "__main__":
  sys.exit(portable_export.main(sys.argv, "tflite"))
