r"""Converts Cityscapes (panoptic or semantic, 19 trainIds) to TFRecords.

Panoptic mode reads gtFine/cityscapes_panoptic_{split}[_trainId].json and its
PNG folder (made by cityscapesscripts' createPanopticImgs); semantic mode reads
gtFine/{split}/*/*_gtFine_labelTrainIds.png (createTrainIdLabelImgs).

  python tools/build_cityscapes_data.py --cityscapes_root=/data/cityscapes \
    --split=train --mode=panoptic --output_dir=/data/cityscapes_tfrecord
"""

import os
import sys

# Runs from a source checkout without installing the package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import flags  # pylint: disable=g-import-not-at-top,wrong-import-position

from axial_deeplab_tf.data.converters import cityscapes  # pylint: disable=g-import-not-at-top,wrong-import-position
from axial_deeplab_tf.data.converters import cli  # pylint: disable=g-import-not-at-top,wrong-import-position

cli.define_flags(
    "cityscapes_root", "Directory holding leftImg8bit/ and gtFine/.",
    default_split="train", split_help="train, val or test.",
    panoptic_json_help=(
        "Explicit panoptic JSON (default: found under gtFine/)."),
    default_num_shards=10)
flags.DEFINE_enum("mode", "panoptic", list(cityscapes.MODES),
                  "Which labels to convert.")
flags.adopt_module_key_flags(cli)

main = cli.make_main(cityscapes.convert_cityscapes,
                     "cityscapes_root", extra_flags=("mode",))


if __name__ == "__main__":
  app.run(main)
