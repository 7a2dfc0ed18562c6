r"""Converts Mapillary Vistas panoptic data (v1.2 or v2.0) to TFRecords.

  python tools/build_mapillary_data.py --mapillary_root=/data/vistas \
    --split=training --version=v1.2 --output_dir=/data/vistas_tfrecord
"""

import os
import sys

# Runs from a source checkout without installing the package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import flags  # pylint: disable=g-import-not-at-top,wrong-import-position

from axial_deeplab_tf.data import metadata  # pylint: disable=g-import-not-at-top,wrong-import-position
from axial_deeplab_tf.data.converters import cli  # pylint: disable=g-import-not-at-top,wrong-import-position
from axial_deeplab_tf.data.converters import mapillary  # pylint: disable=g-import-not-at-top,wrong-import-position

flags.DEFINE_string("mapillary_root", None,
                    "Dataset root holding training/ and validation/.")
flags.DEFINE_string("split", "training", "training or validation.")
flags.DEFINE_enum("version", "v1.2", list(metadata.MAPILLARY_VERSIONS),
                  "Category set.")
flags.DEFINE_string("panoptic_json", None,
                    "Explicit panoptic JSON (PNGs beside it).")
flags.DEFINE_string("output_split", None,
                    "Shard name prefix (default: --split).")
flags.DEFINE_integer("label_divisor", 1000, "Panoptic label divisor.")
flags.DEFINE_integer("ignore_label", 255, "Ignore label.")
flags.mark_flag_as_required("mapillary_root")
cli.define_shared_flags(default_num_shards=32)
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  cli.run_conversion(lambda: mapillary.convert_mapillary(
      mapillary_root=FLAGS.mapillary_root, split=FLAGS.split,
      output_dir=FLAGS.output_dir, version=FLAGS.version,
      panoptic_json=FLAGS.panoptic_json, output_split=FLAGS.output_split,
      num_shards=FLAGS.num_shards, num_workers=FLAGS.num_workers,
      strict=FLAGS.strict, label_divisor=FLAGS.label_divisor,
      ignore_label=FLAGS.ignore_label))


if __name__ == "__main__":
  app.run(main)
