r"""Converts COCO panoptic 2017 (133 classes, crowd) to TFRecords.

Input layout under --coco_root: {split}/*.jpg, annotations/panoptic_{split}.json
and annotations/panoptic_{split}/*.png (or give the three paths explicitly).

  axial-deeplab build-data coco --coco_root=/data/coco \
    --split=train2017 --output_dir=/data/coco_tfrecord --num_shards=64
"""


from absl import app
from absl import flags

from axial_deeplab_tf.data.converters import cli
from axial_deeplab_tf.data.converters import coco_panoptic

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
flags.DEFINE_integer("label_divisor", 256, "Panoptic label divisor.")
flags.DEFINE_integer("ignore_label", 255, "Ignore label.")
cli.define_shared_flags(default_num_shards=64, outside_root_flag=True)
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  cli.run_conversion(lambda: coco_panoptic.convert_coco_panoptic(
      coco_root=FLAGS.coco_root, split=FLAGS.split, image_dir=FLAGS.image_dir,
      panoptic_json=FLAGS.panoptic_json, panoptic_dir=FLAGS.panoptic_dir,
      output_dir=FLAGS.output_dir, output_split=FLAGS.output_split,
      num_shards=FLAGS.num_shards, num_workers=FLAGS.num_workers,
      strict=FLAGS.strict, label_divisor=FLAGS.label_divisor,
      ignore_label=FLAGS.ignore_label,
      allow_outside_root=FLAGS.allow_outside_root))
