"""Backbones, decoders, heads and full models; the zoo lives in `registry`.

Importing the package registers every model family (`zoo`).
"""

from axial_deeplab_tf.modeling import zoo  # pylint: disable=unused-import
