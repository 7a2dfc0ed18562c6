r"""Converts ADE20K (ADEChallengeData2016, 150 classes) to semantic TFRecords.

Label 0 becomes the ignore label, 1..150 become train ids 0..149.

  axial-deeplab build-data ade20k --ade20k_root=/data/ADEChallengeData2016 \
    --split=training --output_dir=/data/ade20k_tfrecord
"""


from absl import flags

from axial_deeplab_tf.data.converters import ade20k
from axial_deeplab_tf.data.converters import cli

# FLAGS stays a module attribute: harnesses parse flags via tool.FLAGS.
FLAGS = flags.FLAGS

flags.DEFINE_string("ade20k_root", None, "The ADEChallengeData2016 directory.")
flags.DEFINE_enum("split", "training", list(ade20k.SPLITS), "Split.")
flags.DEFINE_string("output_split", None,
                    "Shard name prefix (default: --split).")
flags.DEFINE_integer("ignore_label", 255, "Ignore label (for label value 0).")
flags.mark_flag_as_required("ade20k_root")

main = cli.converter_tool(
    ade20k.convert_ade20k,
    ("ade20k_root", "split", "output_split", "ignore_label"),
    default_num_shards=8)
