"""The Panoptic-DeepLab prediction head (semantic, center and offset heads)."""

import tf_keras

from axial_deeplab_tf.modeling.decoders.panoptic_deeplab import _ConfiguredLayer  # pylint: disable=protected-access
from axial_deeplab_tf.modeling.decoders.panoptic_deeplab import SeparableConvBlock


@tf_keras.utils.register_keras_serializable(package="AxialDeepLab")
class PredictionHead(_ConfiguredLayer):
  """5x5 depthwise-separable conv then a 1x1 conv with bias."""

  def __init__(self, head_channels: int, output_channels: int,
               norm_momentum: float = 0.99, norm_epsilon: float = 1e-3,
               use_sync_bn: bool = False, kernel_regularizer=None, **kwargs):
    super().__init__(**kwargs)
    self._config = dict(head_channels=head_channels,
                        output_channels=output_channels,
                        norm_momentum=norm_momentum,
                        norm_epsilon=norm_epsilon, use_sync_bn=use_sync_bn,
                        kernel_regularizer=kernel_regularizer)
    self._conv = SeparableConvBlock(
        head_channels, 5, norm_momentum=norm_momentum,
        norm_epsilon=norm_epsilon, use_sync_bn=use_sync_bn,
        kernel_regularizer=kernel_regularizer, name="separable")
    self._classifier = tf_keras.layers.Conv2D(
        output_channels, 1, use_bias=True,
        kernel_initializer=tf_keras.initializers.TruncatedNormal(stddev=0.01),
        kernel_regularizer=kernel_regularizer, name="classifier")

  def call(self, inputs, training=None):
    return self._classifier(self._conv(inputs, training=training))
