"""Keras 3 Interlaced Sparse Self-Attention (twin of `layers.issa`).

Same arguments, sub-layers and variable names as the tf_keras
`ISSASelfAttentionBlock` and `InterlacedSparseSelfAttention`; `keras.ops`
only. The grid and padding come from `attention_math.issa_padding`.
"""

import keras
from keras import ops

from axial_deeplab_tf import attention_math as am
from axial_deeplab_tf import layer_specs
from axial_deeplab_tf.keras_layers import base

def _activation(name: str, x):
  if name == "relu":
    return ops.relu(x)
  return ops.leaky_relu(x, negative_slope=0.01)


@base.register
class ISSASelfAttentionBlock(base.SpecConfig, keras.layers.Layer):
  """Dense self-attention among the positions of each batch element."""

  _spec = layer_specs.issa_block

  @base.takes(_spec)
  def __init__(self, arguments, **kwargs):
    super().__init__(**kwargs)
    layer_specs.store(self, arguments)

  def _conv(self, filters, name, use_bias=True):
    return keras.layers.Conv2D(
        filters, 1, use_bias=use_bias,
        kernel_initializer=base.initializer(self._kernel_initializer),
        kernel_regularizer=self._kernel_regularizer,
        bias_regularizer=self._bias_regularizer if use_bias else None,
        name=name)

  def _bn(self, name):
    return base.batch_norm(self._norm_momentum, self._norm_epsilon, name)

  def build(self, input_shape):
    channels = base.check_image_shape("ISSASelfAttentionBlock", input_shape)
    shape = tuple(input_shape)
    value_channels = self._value_channels or channels
    output_channels = self._output_channels or channels
    k = self._key_channels
    self.query_layers = [self._conv(k, "query_conv1", False),
                         self._bn("query_bn1"),
                         self._conv(k, "query_conv2", False),
                         self._bn("query_bn2")]
    self.key_layers = [self._conv(k, "key_conv1", False), self._bn("key_bn1"),
                       self._conv(k, "key_conv2", False), self._bn("key_bn2")]
    self.value_conv = self._conv(value_channels, "value_conv",
                                 self._value_use_bias)
    self.output_conv = self._conv(output_channels, "output_conv", False)
    self.output_norm = self._bn("output_bn")
    for layers in (self.query_layers, self.key_layers):
      s = shape
      for layer in layers:
        layer.build(s)
        s = layer.compute_output_shape(s)
    self.value_conv.build(shape)
    self.output_conv.build(shape[:-1] + (value_channels,))
    self.output_norm.build(shape[:-1] + (output_channels,))

  def _project(self, layers, x, training):
    for i in range(0, len(layers), 2):
      x = _activation(self._activation,
                      layers[i + 1](layers[i](x), training=training))
    return x

  def call(self, inputs, training=None):
    height, width = base.static_dim(inputs, 1), base.static_dim(inputs, 2)
    length = height * width
    query = self._project(self.query_layers, inputs, training)
    key = self._project(self.key_layers, inputs, training)
    value = self.value_conv(inputs)
    vc = value.shape[-1]
    query = ops.reshape(query, (-1, length, self._key_channels))
    key = ops.reshape(key, (-1, length, self._key_channels))
    value = ops.reshape(value, (-1, length, vc))
    logits = ops.cast(ops.matmul(query, ops.transpose(key, (0, 2, 1))),
                      "float32") * (self._key_channels ** -0.5)
    weights = ops.cast(ops.softmax(logits, axis=-1), value.dtype)
    context = ops.reshape(ops.matmul(weights, value), (-1, height, width, vc))
    return _activation(self._activation, self.output_norm(
        self.output_conv(context), training=training))

  def compute_output_shape(self, input_shape):
    return tuple(input_shape[:-1]) + (self._output_channels or
                                      input_shape[-1],)


@base.register
class InterlacedSparseSelfAttention(base.SpecConfig, keras.layers.Layer):
  """Long-range then short-range grouped self-attention (Keras 3)."""

  _spec = layer_specs.interlaced_sparse_self_attention

  @base.takes(_spec)
  def __init__(self, arguments, **kwargs):
    super().__init__(**kwargs)
    layer_specs.set_up(self, arguments, layer_specs.issa_sublayers(arguments),
                       {"issa_block": ISSASelfAttentionBlock})

  def build(self, input_shape):
    base.check_image_shape("InterlacedSparseSelfAttention", input_shape)
    shape = tuple(input_shape)
    self.long_range.build((None, None, None, shape[-1]))
    mid = self.long_range.compute_output_shape((None, None, None, shape[-1]))
    self.short_range.build(mid)

  def call(self, inputs, training=None):
    p_h, p_w = self._partition_factors
    height, width = inputs.shape[1], inputs.shape[2]
    if height is None or width is None:
      raise ValueError("The Keras 3 InterlacedSparseSelfAttention needs a "
                       f"static height and width, got shape {inputs.shape}.")
    q_h, q_w, top, bottom, left, right = am.issa_padding(
        height, width, self._partition_factors)
    x = ops.pad(inputs, [[0, 0], [top, bottom], [left, right], [0, 0]])
    c = x.shape[-1]
    x = ops.reshape(x, (-1, q_h, p_h, q_w, p_w, c))
    x = ops.reshape(ops.transpose(x, (0, 2, 4, 1, 3, 5)), (-1, q_h, q_w, c))
    x = self.long_range(x, training=training)
    c = x.shape[-1]
    x = ops.reshape(x, (-1, p_h, p_w, q_h, q_w, c))
    x = ops.reshape(ops.transpose(x, (0, 3, 4, 1, 2, 5)), (-1, p_h, p_w, c))
    x = self.short_range(x, training=training)
    x = ops.reshape(x, (-1, q_h, q_w, p_h, p_w, c))
    x = ops.reshape(ops.transpose(x, (0, 1, 3, 2, 4, 5)),
                    (-1, q_h * p_h, q_w * p_w, c))
    return x[:, top:top + height, left:left + width, :]

  def compute_output_shape(self, input_shape):
    mid = self.long_range.compute_output_shape(input_shape)
    return self.short_range.compute_output_shape(mid)
