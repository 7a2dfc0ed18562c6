r"""Draws the axial attention maps of one query pixel (paper Appendix C).

  axial-deeplab visualize-attention --model=axial_deeplab_l \
      --set=num_classes=133 --checkpoint_path=/tmp/run --image=street.jpg \
      --block=backbone/res4_block2 --head=3 --query=200,310 \
      --output=/tmp/attention.png [--save_weights=/tmp/attention.npz]

or with --gin_file/--gin_param for an experiment's model. --list_blocks
prints the axial-attention layers (index and path) and exits. The picture
shows the image twice: the height-axis attention of the query over its
column and the width-axis attention over its row, in the feature grid of
the chosen layer. --save_weights also writes the weights (npz:
height_weights, width_weights, query, query_feature, feature_size).
"""

import json
import sys

from absl import app
from absl import flags

from axial_deeplab_tf.serving import cli

cli.define_model_flags("without it the maps show the initial weights.")
flags.DEFINE_string("image", None, "Input image file.")
flags.DEFINE_string("block", "0", "Axial-attention layer: index or path "
                    "(see --list_blocks); a block path selects its layer.")
flags.DEFINE_integer("head", 0, "Attention head.")
flags.DEFINE_list("query", None, "Query pixel y,x in image coordinates.")
flags.DEFINE_string("output", None, "Output PNG.")
flags.DEFINE_string("save_weights", None, "Optional .npz of the weights.")
flags.DEFINE_bool("list_blocks", False, "List the layers and exit.")
FLAGS = flags.FLAGS


def main(argv):
  required = () if FLAGS.list_blocks else ("image", "query", "output")
  status = cli.check_usage(argv, FLAGS, required=required, model_flags=True)
  if status is not None:
    return status
  import numpy as np
  from axial_deeplab_tf.serving import attention_maps
  from axial_deeplab_tf.serving import predictor
  from axial_deeplab_tf.utils import io, visualization
  try:
    if FLAGS.image:  # Header only: a decompression bomb stops here.
      io.check_image_pixels(FLAGS.image)
    loaded = cli.load_model_from_flags(FLAGS)
    if FLAGS.list_blocks:
      layers = attention_maps.find_axial_attention_2d(loaded.model)
      for i, name in enumerate(layers):
        print(f"{i}\t{name}")
      return 0
    query = cli.parse_list("query", FLAGS.query, int, "two ints y,x")
    if len(query) != 2:
      raise ValueError(f"--query must be two ints y,x, got {FLAGS.query}.")
    block = int(FLAGS.block) if FLAGS.block.lstrip("-").isdigit() else (
        FLAGS.block)
    image = predictor.read_image(FLAGS.image)
    maps = attention_maps.attention_maps(loaded.model, image, block,
                                         FLAGS.head, tuple(query))
  except (ValueError, TypeError, OSError, AssertionError) as e:
    return cli.report_error(e)
  if not FLAGS.checkpoint_path:
    print("warning: no --checkpoint_path; the maps show initial weights.",
          file=sys.stderr)
  figure = visualization.attention_figure(
      image, maps.height_weights, maps.width_weights, maps.query,
      maps.feature_size, title=f"{maps.block} head {maps.head}")
  visualization.save_png(figure, FLAGS.output)
  if FLAGS.save_weights:
    np.savez(FLAGS.save_weights, height_weights=maps.height_weights,
             width_weights=maps.width_weights, query=np.array(maps.query),
             query_feature=np.array(maps.query_feature),
             feature_size=np.array(maps.feature_size))
  print(json.dumps({"output": FLAGS.output, "block": maps.block,
                    "head": maps.head, "query_feature": maps.query_feature,
                    "feature_size": maps.feature_size}))
  return 0
