"""deeplab2's Panoptic-DeepLab prediction head (semantic, center, offset)."""

import tf_keras

from axial_deeplab_tf.modeling.backbones import deeplab2_resnet
from axial_deeplab_tf.modeling.decoders.deeplab2_panoptic import _Stacked  # pylint: disable=protected-access


class Head(tf_keras.layers.Layer):
  """5x5 separable conv block (`conv_block`), 1x1 conv with bias
  (`final_conv`)."""

  def __init__(self, head_channels: int, output_channels: int,
               norm_momentum: float = deeplab2_resnet.NORM_MOMENTUM,
               norm_epsilon: float = deeplab2_resnet.NORM_EPSILON, **kwargs):
    super().__init__(**kwargs)
    self.conv_block = _Stacked(head_channels, norm_momentum, norm_epsilon,
                               name="conv_block")
    self.final_conv = tf_keras.layers.Conv2D(
        output_channels, 1, name="final_conv",
        kernel_initializer=tf_keras.initializers.TruncatedNormal(stddev=0.01))

  def call(self, x, training=None):
    return self.final_conv(self.conv_block(x, training=training))
