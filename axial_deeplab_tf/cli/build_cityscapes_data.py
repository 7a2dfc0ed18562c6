r"""Converts Cityscapes (panoptic or semantic, 19 trainIds) to TFRecords.

Panoptic mode reads gtFine/cityscapes_panoptic_{split}[_trainId].json and its
PNG folder (made by cityscapesscripts' createPanopticImgs); semantic mode reads
gtFine/{split}/*/*_gtFine_labelTrainIds.png (createTrainIdLabelImgs).

  axial-deeplab build-data cityscapes --cityscapes_root=/data/cityscapes \
    --split=train --mode=panoptic --output_dir=/data/cityscapes_tfrecord
"""


from absl import app
from absl import flags

from axial_deeplab_tf.data.converters import cityscapes
from axial_deeplab_tf.data.converters import cli

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
