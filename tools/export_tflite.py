"""`axial-deeplab export-tflite` from a source checkout (axial_deeplab_tf/cli/export_tflite.py).

  python tools/export_tflite.py --help
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from axial_deeplab_tf.cli import main  # pylint: disable=g-import-not-at-top,wrong-import-position

if __name__ == "__main__":
  main.run_tool("axial_deeplab_tf.cli.export_tflite")
