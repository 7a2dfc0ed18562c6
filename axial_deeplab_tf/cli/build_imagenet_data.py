r"""Converts a class-folder image tree (ImageNet layout) to TFRecords.

  axial-deeplab build-data imagenet --image_dir=/data/imagenet/train \
    --synsets_file=/data/imagenet/LOC_synset_mapping.txt --split=train \
    --output_dir=/data/imagenet_tfrecord --num_shards=1024
"""


from absl import flags

from axial_deeplab_tf.data.converters import cli
from axial_deeplab_tf.data.converters import imagenet

# FLAGS stays a module attribute: harnesses parse flags via tool.FLAGS.
FLAGS = flags.FLAGS

flags.DEFINE_string("image_dir", None, "Directory with one folder per class.")
flags.DEFINE_string("synsets_file", None,
                    "Label order: one synset a line, optionally followed by "
                    "its name. Default: sorted folder names.")
flags.DEFINE_string("split", "train", "Shard name prefix.")
flags.mark_flag_as_required("image_dir")

main = cli.converter_tool(
    imagenet.convert_imagenet,
    ("image_dir", "split", "synsets_file"),
    default_num_shards=128)
