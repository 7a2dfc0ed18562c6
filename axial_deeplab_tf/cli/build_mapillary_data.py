r"""Converts Mapillary Vistas panoptic data (v1.2 or v2.0) to TFRecords.

  axial-deeplab build-data mapillary --mapillary_root=/data/vistas \
    --split=training --version=v1.2 --output_dir=/data/vistas_tfrecord
"""


from absl import app
from absl import flags

from axial_deeplab_tf.data import metadata
from axial_deeplab_tf.data.converters import mapillary
from axial_deeplab_tf.data.converters import cli

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
