"""Multi-scale convolutional attention (MSCA) and the MSCAN block of SegNeXt.

SegNeXt (Guo et al., NeurIPS 2022) replaces self-attention by a product of the
input with a map built from depthwise strip convolutions at several scales.
"""


import tensorflow as tf
import tf_keras

from official.modeling import tf_utils
from official.vision.modeling.layers import nn_layers

from axial_deeplab_tf import layer_specs
from axial_deeplab_tf.layers import common


def he_fan_out_initializer() -> tf_keras.initializers.Initializer:
  """Returns N(0, sqrt(2 / fan_out)), the SegNeXt conv initialisation."""
  return tf_keras.initializers.VarianceScaling(
      scale=2.0, mode="fan_out", distribution="untruncated_normal")


def takes(spec):
  """Constructor decorator of a SegNeXt layer: None kernel initializer
  means `he_fan_out_initializer()`."""
  return common.takes(spec, {layer_specs.HE_FAN_OUT: he_fan_out_initializer})


def _exact_gelu(x: tf.Tensor) -> tf.Tensor:
  # SegNeXt uses PyTorch's default (erf) GELU, not the tanh approximation.
  return tf.nn.gelu(x, approximate=False)


@tf_keras.utils.register_keras_serializable(package="AxialDeepLab")
class MultiScaleConvAttention(common.RejectKeras3Tensors,
                              common.ConvLayerMixin, common.SpecConfig,
                              tf_keras.layers.Layer):
  """Multi-scale convolutional attention: `conv1x1(a + sum_k strip_k(a)) * x`.

  a = depthwise `base_kernel_size` conv of x; each branch k is a depthwise 1xk
  conv followed by a depthwise kx1 conv of a. All convolutions have a bias.
  """

  _spec = layer_specs.multi_scale_conv_attention

  @takes(_spec)
  def __init__(self, arguments, **kwargs):
    """Arguments: `layer_specs.multi_scale_conv_attention`; kwargs: tf_keras
    Layer's."""
    super().__init__(**kwargs)
    layer_specs.store(self, arguments)

  def build(self, input_shape):
    channels = common.check_image_input_shape("MultiScaleConvAttention",
                                              input_shape)
    self.base_conv = self._depthwise_conv(self._base_kernel_size,
                                          "base_conv")
    # Flat lists (not tuples) so that every saving format tracks them.
    self.strip_row_convs = [self._depthwise_conv((1, k), f"strip{k}_1x{k}")
                            for k in self._kernel_sizes]
    self.strip_col_convs = [self._depthwise_conv((k, 1), f"strip{k}_{k}x1")
                            for k in self._kernel_sizes]
    self.mix_conv = self._conv(channels, 1, "mix_conv")
    super().build(input_shape)

  @property
  def strip_convs(self):
    """[(1xk conv, kx1 conv)] per branch."""
    return list(zip(self.strip_row_convs, self.strip_col_convs))

  def call(self, inputs, training=None):
    """Applies MSCA.

    Args:
      inputs: [batch, height, width, channels].
      training: unused (no training-dependent parts).

    Returns:
      [batch, height, width, channels].
    """
    base = self.base_conv(inputs)
    total = base
    for conv_row, conv_col in self.strip_convs:
      total = total + conv_col(conv_row(base))
    return self.mix_conv(total) * inputs


@tf_keras.utils.register_keras_serializable(package="AxialDeepLab")
class MSCANBlock(common.RejectKeras3Tensors,
                 common.ConvLayerMixin, common.SpecConfig,
                 tf_keras.layers.Layer):
  """One MSCAN block: attention and MLP residual branches with layer scale.

  x = x + DropPath(ls1 * Attn(BN(x))),  Attn(y) = conv(MSCA(GELU(conv(y)))) + y
  x = x + DropPath(ls2 * MLP(BN(x))),   MLP = conv, dwconv3x3, GELU, drop,
                                              conv, drop
  """

  _spec = layer_specs.mscan_block

  @takes(_spec)
  def __init__(self, arguments, **kwargs):
    """Arguments: `layer_specs.mscan_block`; kwargs: tf_keras Layer's."""
    super().__init__(**kwargs)
    layer_specs.store(self, arguments)

  def build(self, input_shape):
    channels = common.check_image_input_shape("MSCANBlock", input_shape)
    hidden = int(channels * self._mlp_ratio)
    self.attn_norm = self._batch_norm("attn_norm")
    self.attn_proj_in = self._conv(channels, 1, "attn_proj_in")
    self.msca = MultiScaleConvAttention(
        kernel_sizes=self._kernel_sizes,
        base_kernel_size=self._base_kernel_size,
        kernel_initializer=tf_utils.clone_initializer(
            self._kernel_initializer),
        kernel_regularizer=self._kernel_regularizer,
        bias_regularizer=self._bias_regularizer, name="msca")
    self.attn_proj_out = self._conv(channels, 1, "attn_proj_out")
    self.mlp_norm = self._batch_norm("mlp_norm")
    self.mlp_fc1 = self._conv(hidden, 1, "mlp_fc1")
    self.mlp_dwconv = self._depthwise_conv(3, "mlp_dwconv")
    self.mlp_fc2 = self._conv(channels, 1, "mlp_fc2")
    self.mlp_dropout = tf_keras.layers.Dropout(self._dropout_rate)
    self.drop_path = nn_layers.StochasticDepth(self._drop_path_rate)
    scale_init = tf_keras.initializers.Constant(self._layer_scale_init_value)
    self.attn_layer_scale = self.add_weight(
        "attn_layer_scale", shape=[channels], initializer=scale_init,
        trainable=True)
    self.mlp_layer_scale = self.add_weight(
        "mlp_layer_scale", shape=[channels], initializer=scale_init,
        trainable=True)
    super().build(input_shape)

  def call(self, inputs, training=None):
    """Applies the block.

    Args:
      inputs: [batch, height, width, channels].
      training: bool; BN batch statistics, dropout and drop path in training.

    Returns:
      [batch, height, width, channels].
    """
    y = self.attn_norm(inputs, training=training)
    shortcut = y
    y = _exact_gelu(self.attn_proj_in(y))
    y = self.msca(y)
    y = self.attn_proj_out(y) + shortcut
    x = inputs + self.drop_path(
        tf.cast(self.attn_layer_scale, y.dtype) * y, training=training)

    y = self.mlp_norm(x, training=training)
    y = _exact_gelu(self.mlp_dwconv(self.mlp_fc1(y)))
    y = self.mlp_dropout(y, training=training)
    y = self.mlp_dropout(self.mlp_fc2(y), training=training)
    return x + self.drop_path(
        tf.cast(self.mlp_layer_scale, y.dtype) * y, training=training)


