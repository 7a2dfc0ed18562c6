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
from axial_deeplab_tf.data.converters import mapillary  # pylint: disable=g-import-not-at-top,wrong-import-position
from axial_deeplab_tf.data.converters import cli  # pylint: disable=g-import-not-at-top,wrong-import-position

cli.define_flags(
    "mapillary_root", "Dataset root holding training/ and validation/.",
    default_split="training", split_help="training or validation.",
    panoptic_json_help="Explicit panoptic JSON (PNGs beside it).",
    default_num_shards=32)
flags.DEFINE_enum("version", "v1.2", list(metadata.MAPILLARY_VERSIONS),
                  "Category set.")
flags.adopt_module_key_flags(cli)

main = cli.make_main(mapillary.convert_mapillary, "mapillary_root",
                     extra_flags=("version",))


if __name__ == "__main__":
  app.run(main)
