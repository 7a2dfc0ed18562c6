r"""Evaluates a trained experiment (`axial-deeplab train` with --mode=eval).

  axial-deeplab eval --gin_file=quickstart/axial_deeplab \
      --model_dir=/tmp/run [--gin_param="eval/data.input_path='...'"]

Evaluates the newest checkpoint of --model_dir (--mode=continuous_eval:
each new one as it appears), prints the metrics as JSON and writes them to
<model_dir>/eval_results.json. The flags are those of `axial-deeplab train`.
"""

import sys

from absl import flags

from axial_deeplab_tf.cli import train

flags.FLAGS.set_default("mode", "eval")


def main(argv):
  if "train" in flags.FLAGS.mode:
    print(f"error: --mode={flags.FLAGS.mode} trains; use `axial-deeplab "
          f"train` (here: eval or continuous_eval).", file=sys.stderr)
    return 2
  return train.main(argv)
