"""Interlaced Sparse Self-Attention (ISSA, Huang et al., arXiv 1907.12273).

Dense self-attention over N = H*W positions costs O(N^2). ISSA factorises it
into a long-range pass (attention among positions sharing the same offset
inside a P_h x P_w cell, i.e. strided grids) followed by a short-range pass
(attention inside each contiguous P_h x P_w cell). After both passes every
output position depends on every input position. Grouping is done with
reshapes and transposes only, so each pass is one batched dense attention.
"""

import tensorflow as tf
import tf_keras

from axial_deeplab_tf import layer_specs
from axial_deeplab_tf.layers import common


def _activation_fn(name: str):
  if name == "relu":
    return tf.nn.relu
  # In-place ABN of the official ISSA code uses slope 0.01.
  return lambda x: tf.nn.leaky_relu(x, alpha=0.01)


@tf_keras.utils.register_keras_serializable(package="AxialDeepLab")
class ISSASelfAttentionBlock(common.RejectKeras3Tensors, common.SpecConfig,
                             common.ConvLayerMixin, tf_keras.layers.Layer):
  """Dense self-attention among all positions of each batch element.

  query = act(BN(conv1x1(act(BN(conv1x1(x))))))   (key likewise, own weights)
  value = conv1x1(x) (with bias unless value_use_bias=False)
  y = act(BN(conv1x1(softmax(q k^T / sqrt(key_channels)) v)))
  No residual connection (ISANet adds the input back by concatenation). The
  softmax runs in float32 under mixed precision. Used by ISSA on batches of
  groups; on a whole image it is dense (non-local style) attention.
  """

  _spec = layer_specs.issa_block

  @common.takes(_spec)
  def __init__(self, arguments, **kwargs):
    """Arguments: `layer_specs.issa_block`; kwargs: tf_keras Layer's."""
    super().__init__(**kwargs)
    layer_specs.store(self, arguments)
    self._act = _activation_fn(self._activation)

  def _projection(self, prefix: str):
    """[1x1 conv, BN, 1x1 conv, BN] of the query or key branch."""
    k = self._key_channels
    return [self._conv(k, 1, f"{prefix}_conv1", use_bias=False),
            self._batch_norm(f"{prefix}_bn1"),
            self._conv(k, 1, f"{prefix}_conv2", use_bias=False),
            self._batch_norm(f"{prefix}_bn2")]

  def build(self, input_shape):
    channels = common.check_image_input_shape("ISSASelfAttentionBlock",
                                              input_shape)
    value_channels = self._value_channels or channels
    output_channels = self._output_channels or channels
    self.query_layers = self._projection("query")
    self.key_layers = self._projection("key")
    self.value_conv = self._conv(value_channels, 1, "value_conv",
                                 use_bias=self._value_use_bias)
    self.output_conv = self._conv(output_channels, 1, "output_conv",
                                  use_bias=False)
    self.output_norm = self._batch_norm("output_bn")
    super().build(input_shape)

  def _project(self, layers, x, training):
    for i in range(0, len(layers), 2):
      x = self._act(layers[i + 1](layers[i](x), training=training))
    return x

  def call(self, inputs, training=None):
    """Applies attention within each batch element.

    Args:
      inputs: [groups, height, width, channels].
      training: bool; BN uses batch statistics in training.

    Returns:
      [groups, height, width, output_channels].
    """
    groups, height, width, _ = common.static_or_dynamic_shape(inputs)
    length = height * width
    query = self._project(self.query_layers, inputs, training)
    key = self._project(self.key_layers, inputs, training)
    value = self.value_conv(inputs)
    query = tf.reshape(query, [groups, length, self._key_channels])
    key = tf.reshape(key, [groups, length, self._key_channels])
    value = tf.reshape(value, [groups, length, value.shape[-1]])
    logits = tf.matmul(query, key, transpose_b=True)
    # Softmax in float32 at least (float16/bfloat16 under mixed precision).
    softmax_dtype = tf.float64 if logits.dtype == tf.float64 else tf.float32
    logits = tf.cast(logits, softmax_dtype) * (self._key_channels ** -0.5)
    weights = tf.cast(tf.nn.softmax(logits, axis=-1), value.dtype)
    context = tf.matmul(weights, value)
    context = tf.reshape(context, [groups, height, width, value.shape[-1]])
    return self._act(self.output_norm(self.output_conv(context),
                                      training=training))


@tf_keras.utils.register_keras_serializable(package="AxialDeepLab")
class InterlacedSparseSelfAttention(common.RejectKeras3Tensors,
                                    common.SpecConfig,
                                    tf_keras.layers.Layer):
  """Long-range then short-range grouped self-attention over a 2D map.

  With partition factors (P_h, P_w), Q_h = ceil(H / P_h), Q_w = ceil(W / P_w),
  the map is zero-padded to (Q_h P_h, Q_w P_w) (half of the padding before,
  the rest after; padded positions take part in attention unmasked, as in the
  reference implementations) and row r = q_h P_h + p_h (columns likewise).
  Long-range pass: one attention per (p_h, p_w) over the Q_h x Q_w positions
  with that offset (a strided grid). Short-range pass: one attention per
  (q_h, q_w) over its contiguous P_h x P_w cell. The padding is cropped off at
  the end. Each pass is an `ISSASelfAttentionBlock`; cost
  O(N^2 C / (P_h P_w) + N C P_h P_w) instead of O(N^2 C).
  """

  _spec = layer_specs.interlaced_sparse_self_attention

  @common.takes(_spec)
  def __init__(self, arguments, **kwargs):
    """Arguments: `layer_specs.interlaced_sparse_self_attention` and
    tf_keras.layers.Layer's."""
    super().__init__(**kwargs)
    layer_specs.set_up(self, arguments, layer_specs.issa_sublayers(arguments),
                       {"issa_block": ISSASelfAttentionBlock})

  def build(self, input_shape):
    common.check_image_input_shape("InterlacedSparseSelfAttention",
                                   input_shape)
    super().build(input_shape)

  def call(self, inputs, training=None):
    """ISSA of [batch, height, width, channels] inputs (BN in training
    mode when `training`): [batch, height, width, output_channels]."""
    p_h, p_w = self._partition_factors
    batch, height, width, _ = common.static_or_dynamic_shape(inputs)
    q_h = (height + p_h - 1) // p_h
    q_w = (width + p_w - 1) // p_w
    pad_h = q_h * p_h - height
    pad_w = q_w * p_w - width
    top, left = pad_h // 2, pad_w // 2
    x = tf.pad(inputs, [[0, 0], [top, pad_h - top], [left, pad_w - left],
                        [0, 0]])
    channels = x.shape[-1]
    # Long range: [n, Q_h, P_h, Q_w, P_w, c] -> [n P_h P_w, Q_h, Q_w, c].
    x = tf.reshape(x, [batch, q_h, p_h, q_w, p_w, channels])
    x = tf.transpose(x, [0, 2, 4, 1, 3, 5])
    x = tf.reshape(x, [batch * p_h * p_w, q_h, q_w, channels])
    x = self.long_range(x, training=training)
    channels = x.shape[-1]
    # Short range: [n, P_h, P_w, Q_h, Q_w, c] -> [n Q_h Q_w, P_h, P_w, c].
    x = tf.reshape(x, [batch, p_h, p_w, q_h, q_w, channels])
    x = tf.transpose(x, [0, 3, 4, 1, 2, 5])
    x = tf.reshape(x, [batch * q_h * q_w, p_h, p_w, channels])
    x = self.short_range(x, training=training)
    # Back to the image: [n, Q_h, Q_w, P_h, P_w, c] -> [n, H', W', c].
    x = tf.reshape(x, [batch, q_h, q_w, p_h, p_w, channels])
    x = tf.transpose(x, [0, 1, 3, 2, 4, 5])
    x = tf.reshape(x, [batch, q_h * p_h, q_w * p_w, channels])
    return x[:, top:top + height, left:left + width, :]
