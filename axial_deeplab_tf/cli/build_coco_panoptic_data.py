r"""Converts COCO panoptic 2017 (133 classes, crowd) to TFRecords.

Input layout under --coco_root: {split}/*.jpg, annotations/panoptic_{split}.json
and annotations/panoptic_{split}/*.png (or give the three paths explicitly).

  axial-deeplab build-data coco --coco_root=/data/coco \
    --split=train2017 --output_dir=/data/coco_tfrecord --num_shards=64
"""


from absl import flags

from axial_deeplab_tf.data.converters import cli
from axial_deeplab_tf.data.converters import coco_panoptic

# FLAGS stays a module attribute: harnesses parse flags via tool.FLAGS.
FLAGS = flags.FLAGS

flags.DEFINE_string("coco_root", None, "COCO root directory.")
flags.DEFINE_string("split", "train2017",
                    "COCO split, e.g. train2017, val2017.")
flags.DEFINE_string("image_dir", None,
                    "Image directory (overrides the layout).")
flags.DEFINE_string("panoptic_json", None,
                    "Panoptic JSON (overrides the layout).")
flags.DEFINE_string("panoptic_dir", None,
                    "Directory of panoptic PNGs (overrides the layout).")
flags.DEFINE_string("output_split", None,
                    "Shard name prefix (default: --split).")
cli.define_label_flags(default_label_divisor=256)

main = cli.converter_tool(
    coco_panoptic.convert_coco_panoptic,
    ("coco_root", "split", "image_dir", "panoptic_json", "panoptic_dir",
     "output_split", "label_divisor", "ignore_label"),
    default_num_shards=64, outside_root_flag=True)
