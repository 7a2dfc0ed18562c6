"""`axial-deeplab build-data coco` from a source checkout (axial_deeplab_tf/cli/build_coco_panoptic_data.py).

  python tools/build_coco_panoptic_data.py --help
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from axial_deeplab_tf.cli import main  # pylint: disable=g-import-not-at-top,wrong-import-position

if __name__ == "__main__":
  main.run_tool("axial_deeplab_tf.cli.build_coco_panoptic_data")
