"""SegNeXt's decoder head: multi-level features, squeeze, Hamburger, align.

Guo et al., "SegNeXt: Rethinking Convolutional Attention Design for Semantic
Segmentation", NeurIPS 2022. The Hamburger (NMF) itself is a layer,
`layers/hamburger.py`.
"""

from typing import Sequence

import tensorflow as tf
import tf_keras

from official.modeling import tf_utils

from axial_deeplab_tf import layer_specs
from axial_deeplab_tf.layers import common
from axial_deeplab_tf.layers import msca
from axial_deeplab_tf.layers.common import resize_bilinear
from axial_deeplab_tf.layers import hamburger


@tf_keras.utils.register_keras_serializable(package="AxialDeepLab")
class LightHamHead(common.RejectKeras3Tensors,
                   common.ConvLayerMixin, common.SpecConfig,
                   tf_keras.layers.Layer):
  """SegNeXt decoder: concat multi-level features, squeeze, Hamburger, align.

  Inputs are resized to the first input's size (bilinear, half-pixel) and
  concatenated; squeeze = 1x1 conv + GN + ReLU to ham_channels; Hamburger;
  align = 1x1 conv + GN + ReLU to `channels`; spatial dropout; 1x1
  classifier (bias, N(0, 0.01) init). Logits are at the first input's
  resolution (stride 8 in SegNeXt).
  """

  _spec = layer_specs.light_ham_head

  @msca.takes(_spec)
  def __init__(self, arguments, **kwargs):
    """Arguments: `layer_specs.light_ham_head`; kwargs: tf_keras Layer's."""
    super().__init__(**kwargs)
    layer_specs.set_up(
        self, arguments, layer_specs.light_ham_head_sublayers(arguments),
        dict(common.SUBLAYERS, conv=self._conv, hamburger=self._hamburger,
             classifier=self._classifier))

  def _hamburger(self, name, **arguments):
    return hamburger.Hamburger(
        kernel_initializer=tf_utils.clone_initializer(
            self._kernel_initializer),
        kernel_regularizer=self._kernel_regularizer,
        bias_regularizer=self._bias_regularizer, name=name, **arguments)

  def _classifier(self, name, filters, stddev):
    return common.conv2d(
        filters, 1, name, tf_keras.initializers.RandomNormal(stddev=stddev),
        self._kernel_regularizer, self._bias_regularizer)

  def call(self, inputs: Sequence[tf.Tensor], training=None):
    """Computes logits.

    Args:
      inputs: list of [batch, h_i, w_i, c_i] feature maps (SegNeXt: strides
        8, 16, 32); all are resized to (h_0, w_0).
      training: bool; dropout and the NMF step count.

    Returns:
      [batch, h_0, w_0, num_classes] logits.
    """
    if isinstance(inputs, dict) or not isinstance(
        inputs, (list, tuple)) or not inputs:
      raise TypeError("LightHamHead expects a non-empty list of feature maps, "
                      f"got {type(inputs).__name__}.")
    size = tf.shape(inputs[0])[1:3]
    dtype = inputs[0].dtype
    features = [inputs[0]]
    for feature in inputs[1:]:
      features.append(tf.cast(resize_bilinear(feature, size), dtype))
    x = tf.concat(features, axis=-1)
    x = tf.nn.relu(self.squeeze_norm(self.squeeze_conv(x)))
    x = self.hamburger(tf.cast(x, dtype), training=training)
    x = tf.nn.relu(self.align_norm(self.align_conv(x)))
    x = self.dropout(tf.cast(x, dtype), training=training)
    return self.classifier(x)
