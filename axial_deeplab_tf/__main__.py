"""`python -m axial_deeplab_tf <subcommand>`: the `axial-deeplab` command."""

import sys

from axial_deeplab_tf.cli import main

if __name__ == "__main__":
  sys.exit(main.run(program="python -m axial_deeplab_tf"))
