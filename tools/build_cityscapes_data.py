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

flags.DEFINE_string("cityscapes_root", None,
                    "Directory holding leftImg8bit/ and gtFine/.")
flags.DEFINE_string("split", "train", "train, val or test.")
flags.DEFINE_enum("mode", "panoptic", list(cityscapes.MODES),
                  "Which labels to convert.")
flags.DEFINE_string("panoptic_json", None,
                    "Explicit panoptic JSON (default: found under gtFine/).")
flags.DEFINE_string("output_split", None,
                    "Shard name prefix (default: --split).")
flags.DEFINE_integer("label_divisor", 1000, "Panoptic label divisor.")
flags.DEFINE_integer("ignore_label", 255, "Ignore label.")
flags.mark_flag_as_required("cityscapes_root")
cli.define_shared_flags(default_num_shards=10)
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  cli.run_conversion(lambda: cityscapes.convert_cityscapes(
      cityscapes_root=FLAGS.cityscapes_root, split=FLAGS.split,
      output_dir=FLAGS.output_dir, mode=FLAGS.mode,
      panoptic_json=FLAGS.panoptic_json, output_split=FLAGS.output_split,
      num_shards=FLAGS.num_shards, num_workers=FLAGS.num_workers,
      strict=FLAGS.strict, label_divisor=FLAGS.label_divisor,
      ignore_label=FLAGS.ignore_label))


if __name__ == "__main__":
  app.run(main)
