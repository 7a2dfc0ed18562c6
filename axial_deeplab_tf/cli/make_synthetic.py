r"""Writes the synthetic quickstart dataset in COCO panoptic format.

Shapes (circle, square, triangle: things) on sky, grass and road (stuff);
deterministic by --seed. Convert it afterwards with `axial-deeplab build-data panoptic`:

  axial-deeplab make-synthetic --output_dir=/tmp/shapes
  axial-deeplab build-data panoptic --image_dir=/tmp/shapes/train \
    --panoptic_json=/tmp/shapes/annotations/panoptic_train.json \
    --panoptic_dir=/tmp/shapes/annotations/panoptic_train \
    --categories_json=/tmp/shapes/categories.json --split=train \
    --dataset_name=synthetic_shapes --output_dir=/tmp/shapes_tfrecord
"""

import sys

from absl import app
from absl import flags

from axial_deeplab_tf.data import synthetic

flags.DEFINE_string("output_dir", None, "Dataset root to write.")
flags.DEFINE_integer("num_train", 300, "Number of training images.")
flags.DEFINE_integer("num_val", 50, "Number of validation images.")
flags.DEFINE_integer("image_size", 128, "Image height (and width unless "
                     "--image_width is given).")
flags.DEFINE_integer("image_width", None,
                     "Image width (default: --image_size).")
flags.DEFINE_integer("seed", 0, "Dataset seed.")
flags.DEFINE_enum("image_format", "png", ["png", "jpeg"], "Image file format.")
flags.DEFINE_integer("min_instances", 3, "Fewest thing instances per image.")
flags.DEFINE_integer("max_instances", 8, "Most thing instances per image.")
flags.DEFINE_float("crowd_probability", 0.1,
                   "Chance of a crowd cluster in an image.")
flags.mark_flag_as_required("output_dir")
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  size = (FLAGS.image_size, FLAGS.image_width or FLAGS.image_size)
  try:
    paths = synthetic.generate_synthetic_panoptic(
        FLAGS.output_dir, num_train=FLAGS.num_train, num_val=FLAGS.num_val,
        image_size=size, seed=FLAGS.seed, image_format=FLAGS.image_format,
        min_instances=FLAGS.min_instances, max_instances=FLAGS.max_instances,
        crowd_probability=FLAGS.crowd_probability)
  except ValueError as e:
    sys.exit(f"ERROR: {e}")
  print(f"Wrote {FLAGS.num_train} train and {FLAGS.num_val} val images "
        f"({size[0]}x{size[1]}) to {FLAGS.output_dir}; categories in "
        f"{paths['categories_json']}.", file=sys.stderr)
