"""Lists the shipped experiments by short name (for --gin_file).

  axial-deeplab experiments            # e.g. coco/axial_deeplab_l
  axial-deeplab experiments --paths    # with their gin files

A short name or a path to your own gin file goes to --gin_file of train,
eval, export, visualize-attention and scale-stress.
"""

import sys

from absl import flags

flags.DEFINE_bool("paths", False, "Also print each experiment's gin file.")
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    print(f"error: unexpected arguments {argv[1:]}", file=sys.stderr)
    return 2
  from axial_deeplab_tf.tasks import experiment  # pylint: disable=g-import-not-at-top
  for name in experiment.list_experiments():
    print(f"{name}\t{experiment.resolve_experiment(name)}" if FLAGS.paths
          else name)
  return 0
