"""Trains and/or evaluates a gin experiment.

  axial-deeplab train --gin_file=quickstart/axial_deeplab \
      --model_dir=/tmp/run --mode=train_and_eval \
      [--gin_param='trainer.train_steps=10']

Running the same command again resumes from the newest checkpoint in
--model_dir. Configuration errors (unknown gin binding, missing data,
unwritable --model_dir, ...) stop the tool before any training with one
"error:" line on stderr and exit code 2.

Several workers: set TF_CONFIG in each worker's environment (before the
process starts) and bind runtime.distribution_strategy =
'multi_worker_mirrored'; every worker runs the same command with the same
--model_dir.
"""

import json
import sys

from absl import app
from absl import flags

flags.DEFINE_multi_string(
    "gin_file", [], "Experiment: a shipped experiment's short name (e.g. "
    "quickstart/axial_deeplab; list: `axial-deeplab experiments`) or a gin "
    "file's path; repeatable.")
flags.DEFINE_multi_string("gin_param", [], "Extra gin bindings.")
flags.DEFINE_string("model_dir", None, "Checkpoints and summaries go here.")
flags.DEFINE_enum("mode", "train_and_eval",
                  ["train", "eval", "train_and_eval", "continuous_eval"],
                  "What to run.")
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    print(f"error: unexpected arguments {argv[1:]}", file=sys.stderr)
    return 2
  # Imported here so that --help works without importing TensorFlow.
  from axial_deeplab_tf.tasks import train_lib
  if not FLAGS.gin_file:
    print("error: at least one --gin_file is required.", file=sys.stderr)
    return 2
  try:
    # Configuration errors surface here, before any training step, as one
    # line; errors during training keep their traceback.
    prepared = train_lib.prepare(FLAGS.gin_file, FLAGS.gin_param,
                                 FLAGS.model_dir, FLAGS.mode)
  except (ValueError, TypeError, OSError, ImportError, SyntaxError) as e:
    from axial_deeplab_tf.utils import errors
    return errors.report(e)
  results = train_lib.execute(prepared)
  print(json.dumps(results, sort_keys=True))
  return 0
