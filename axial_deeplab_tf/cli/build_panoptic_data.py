r"""Converts your own panoptic data in COCO panoptic format to TFRecords.

Your data: images, one RGB PNG per image encoding segment ids
(R + 256 G + 256^2 B, 0 = unlabeled), and a JSON with "images",
"annotations" (file_name, segments_info: id, category_id, iscrowd) and
"categories". Your category list (--categories_json, or the JSON's own
"categories") fixes the train ids: category i of the list is train id i;
"isthing": 1 marks classes with instances.

  axial-deeplab build-data panoptic --image_dir=data/train \
    --panoptic_json=data/annotations/panoptic_train.json \
    --panoptic_dir=data/annotations/panoptic_train --split=train \
    --output_dir=data/tfrecord
"""


from absl import flags

from axial_deeplab_tf.data.converters import cli
from axial_deeplab_tf.data.converters import coco_panoptic

# FLAGS stays a module attribute: harnesses parse flags via tool.FLAGS.
FLAGS = flags.FLAGS

flags.DEFINE_string("image_dir", None, "Directory of the images.")
flags.DEFINE_string("panoptic_json", None, "The COCO-format panoptic JSON.")
flags.DEFINE_string("panoptic_dir", None, "Directory of the panoptic PNGs.")
flags.DEFINE_string("categories_json", None,
                    "JSON list of categories {id, name, isthing, color}; "
                    "default: the panoptic JSON's categories.")
flags.DEFINE_string("split", "train", "Shard name prefix.")
flags.DEFINE_string("dataset_name", "custom_panoptic",
                    "Name stored in metadata.json.")
cli.define_label_flags(default_label_divisor=1000)
for _name in ("image_dir", "panoptic_json", "panoptic_dir"):
  flags.mark_flag_as_required(_name)

main = cli.converter_tool(
    coco_panoptic.convert_own_panoptic,
    ("image_dir", "panoptic_json", "panoptic_dir", "split", "categories_json",
     "dataset_name", "label_divisor", "ignore_label"),
    default_num_shards=4, outside_root_flag=True)
