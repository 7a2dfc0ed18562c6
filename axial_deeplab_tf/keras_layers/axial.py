"""Keras 3 AxialAttention, AxialAttention2D and AxialBlock (`keras.ops` only).

The same attention as `axial_deeplab_tf.layers.axial_attention` (which
documents the maths), written for every Keras 3 backend: the logits of an
axis of length L are a dense [batch, heads, L, L] tensor (a band mask keeps
a local span), each similarity term is batch-normalised per head over the
(batch, query, key) pairs in span, the relative tables are gathered once per
call by the index table of `attention_math.relative_rows`. In inference the
similarity norm's scale multiplies q or k before the matmuls and its shift
(constant along the softmax axis) is dropped. Variables and sub-layer names
are the tf_keras layer's, so `keras_layers.copy_weights` moves weights
between the two.
"""

import keras
from keras import ops

from axial_deeplab_tf import attention_math as am
from axial_deeplab_tf import layer_specs
from axial_deeplab_tf.keras_layers import base


def _index_table(length, radius, rows):
  """[L, L] table rows (m - l + radius) and the [L, L] in-span mask or None.

  Static lengths give numpy constants; run-time lengths `keras.ops` tensors.
  """
  if isinstance(length, int):
    idx = am.relative_rows(length, length, radius, rows)
    if length <= radius + 1:
      return idx, None
    return idx, am.band_mask(length, radius)
  return (am.relative_rows(length, length, radius, rows, xp=ops),
          am.band_mask(length, radius, xp=ops))


@base.register
class AxialAttention(base.SpecConfig, layer_specs.AxialAttentionSizes,
                     keras.layers.Layer):
  """Position-sensitive self-attention along one axis (Keras 3).

  Input [batch, length, channels] -> output [batch, length, value_depth].
  Arguments are those of the tf_keras `AxialAttention`; `use_sync_bn`,
  `block_length` and `recompute_grad` are kept in the config for
  interchange but do not change this implementation (it computes the dense
  [L, L] logits and keeps them for the backward pass).
  """

  _spec = layer_specs.axial_attention

  @base.takes(_spec)
  def __init__(self, arguments, **kwargs):
    super().__init__(**kwargs)
    layer_specs.store(self, arguments,
                      **layer_specs.axial_attention_sizes(arguments))

  def build(self, input_shape):
    if len(input_shape) != 3:
      raise ValueError(f"AxialAttention expects inputs of rank 3 [batch, "
                       f"length, channels], got shape {tuple(input_shape)}.")
    channels = input_shape[-1]
    if channels is None:
      raise ValueError("The channel dimension of the input must be known.")
    kernel_init = base.initializer(
        self._kernel_initializer,
        keras.initializers.TruncatedNormal(stddev=channels**-0.5))
    self.qkv = keras.layers.Dense(
        2 * self._key_depth + self._value_depth, use_bias=False,
        kernel_initializer=kernel_init,
        kernel_regularizer=self._kernel_regularizer, name="qkv")
    self.qkv.build(input_shape)
    self.qkv_bn = base.batch_norm(self._norm_momentum, self._norm_epsilon,
                                  "qkv_bn")
    self.qkv_bn.build(tuple(input_shape[:-1]) +
                      (2 * self._key_depth + self._value_depth,))

    def pos_init():
      return base.initializer(self._positional_initializer,
                              keras.initializers.TruncatedNormal(stddev=1.0))

    head_key = self._key_depth // self._num_heads
    head_value = self._value_depth // self._num_heads
    rows = self.table_rows
    self.query_positional = self.key_positional = None
    self.value_positional = None
    if self._use_query_positional:
      self.query_positional = self.add_weight(
          name="query_positional", shape=(rows, head_key),
          initializer=pos_init())
    if self._use_key_positional:
      self.key_positional = self.add_weight(
          name="key_positional", shape=(rows, head_key),
          initializer=pos_init())
    if self._use_value_positional:
      self.value_positional = self.add_weight(
          name="value_positional", shape=(rows, head_value),
          initializer=pos_init())
    shape = (self._num_similarity_terms, self._num_heads)
    self.similarity_gamma = self.add_weight(
        name="similarity_gamma", shape=shape, initializer="ones")
    self.similarity_beta = self.add_weight(
        name="similarity_beta", shape=shape, initializer="zeros")
    self.similarity_moving_mean = self.add_weight(
        name="similarity_moving_mean", shape=shape, initializer="zeros",
        trainable=False)
    self.similarity_moving_variance = self.add_weight(
        name="similarity_moving_variance", shape=shape, initializer="ones",
        trainable=False)
    self.output_bn = base.MomentNorm(
        (self._num_output_terms, self._value_depth),
        momentum=self._norm_momentum, epsilon=self._norm_epsilon,
        name="output_bn")
    self.output_bn.build()

  def _check_length(self, length):
    if self._span is None and isinstance(length, int) and (
        length > self._max_length):
      raise ValueError(
          f"Global AxialAttention {self.name!r} was built for at most "
          f"max_length={self._max_length} positions, got {length}; use a "
          f"local span for longer inputs.")

  def call(self, inputs, training=None):
    if len(inputs.shape) != 3:
      raise ValueError(f"AxialAttention expects inputs of rank 3 [batch, "
                       f"length, channels], got shape {inputs.shape}.")
    training = bool(training)
    length = base.static_dim(inputs, 1)
    self._check_length(length)
    heads = self._num_heads
    dk = self._key_depth // heads
    dv = self._value_depth // heads
    qkv = self.qkv_bn(self.qkv(inputs), training=training)
    q = ops.reshape(qkv[..., :self._key_depth], (-1, length, heads, dk))
    k = ops.reshape(qkv[..., self._key_depth:2 * self._key_depth],
                    (-1, length, heads, dk))
    v = ops.reshape(qkv[..., 2 * self._key_depth:], (-1, length, heads, dv))
    idx, mask = _index_table(length, self._radius, self.table_rows)

    def table(t):
      return None if t is None else ops.take(ops.cast(t, q.dtype), idx,
                                             axis=0)  # [L, L, d]

    rq, rk, rv = (table(self.query_positional), table(self.key_positional),
                  table(self.value_positional))
    gamma = ops.cast(self.similarity_gamma, "float32")
    if training:
      terms = [ops.einsum("blnd,bmnd->bnlm", q, k)]
      if rq is not None:
        terms.append(ops.einsum("blnd,lmd->bnlm", q, rq))
      if rk is not None:
        terms.append(ops.einsum("bmnd,lmd->bnlm", k, rk))
      terms = ops.stack([ops.cast(t, "float32") for t in terms], axis=-1)
      # [B, N, L, L, T]: statistics per (head, term) over valid pairs.
      terms = ops.transpose(terms, (0, 2, 3, 4, 1))  # [B, L, L, T, N]
      pair_mask = None if mask is None else ops.cast(mask, "float32")[
          None, :, :, None, None]
      mean, var = base.masked_moments(terms, (0, 1, 2), pair_mask)
      m = self._norm_momentum
      self.similarity_moving_mean.assign(
          self.similarity_moving_mean * m + ops.stop_gradient(mean) * (1 - m))
      self.similarity_moving_variance.assign(
          self.similarity_moving_variance * m +
          ops.stop_gradient(var) * (1 - m))
      scale = gamma * ops.rsqrt(var + self._norm_epsilon)
      normed = (terms - mean) * scale + ops.cast(self.similarity_beta,
                                                 "float32")
      sim = ops.transpose(ops.sum(normed, axis=3), (0, 3, 1, 2))
    else:
      var = ops.cast(self.similarity_moving_variance, "float32")
      scale = ops.cast(gamma * ops.rsqrt(var + self._norm_epsilon), q.dtype)
      # The norm's shift is constant along the softmax axis: dropped.
      sim = ops.einsum("blnd,bmnd->bnlm", q * scale[0][:, None], k)
      term = 1
      if rq is not None:
        sim = sim + ops.einsum("blnd,lmd->bnlm", q * scale[term][:, None], rq)
        term += 1
      if rk is not None:
        sim = sim + ops.einsum("bmnd,lmd->bnlm", k * scale[term][:, None], rk)
      sim = ops.cast(sim, "float32")
    if mask is not None:
      sim = ops.where(ops.cast(mask, "bool")[None, None], sim, am.MASK_LOGIT)
    weights = ops.cast(ops.softmax(sim, axis=-1), v.dtype)
    outputs = [ops.reshape(ops.einsum("bnlm,bmnd->blnd", weights, v),
                           (-1, length, self._value_depth))]
    if rv is not None:
      outputs.append(ops.reshape(
          ops.einsum("bnlm,lmd->blnd", weights, rv),
          (-1, length, self._value_depth)))
    stacked = ops.stack(outputs, axis=2)  # [B, L, terms, C]
    return ops.sum(self.output_bn(stacked, training=training), axis=2)

  def compute_output_shape(self, input_shape):
    return tuple(input_shape[:-1]) + (self._value_depth,)


@base.register
class AxialAttention2D(base.SpecConfig, keras.layers.Layer):
  """Height-axis then width-axis AxialAttention on [batch, h, w, channels].

  With strides > 1 the output is average-pooled after the width layer, as
  the tf_keras `AxialAttention2D`.
  """

  _spec = layer_specs.axial_attention_2d

  @base.takes(_spec)
  def __init__(self, arguments, **kwargs):
    super().__init__(**kwargs)
    layer_specs.set_up(
        self, arguments, layer_specs.axial_attention_2d_sublayers(arguments),
        dict(base.SUBLAYERS, axial_attention=AxialAttention))

  def build(self, input_shape):
    channels = base.check_image_shape("AxialAttention2D", input_shape)
    self.height_attention.build((None, None, channels))
    self.width_attention.build((None, None, self._value_depth))

  def call(self, inputs, training=None):
    if len(inputs.shape) != 4:
      raise ValueError(f"AxialAttention2D expects inputs of rank 4 [batch, "
                       f"height, width, channels], got shape {inputs.shape}.")
    h, w = base.static_dim(inputs, 1), base.static_dim(inputs, 2)
    channels = inputs.shape[-1]
    dv = self._value_depth
    x = ops.reshape(ops.transpose(inputs, (0, 2, 1, 3)), (-1, h, channels))
    x = self.height_attention(x, training=training)
    x = ops.transpose(ops.reshape(x, (-1, w, h, dv)), (0, 2, 1, 3))
    x = self.width_attention(ops.reshape(x, (-1, w, dv)), training=training)
    x = ops.reshape(x, (-1, h, w, dv))
    if self._pool is not None:
      x = self._pool(x)
    return x

  def compute_output_shape(self, input_shape):
    s = self._strides
    size = [None if d is None else -(-d // s) for d in input_shape[1:3]]
    return (input_shape[0], *size, self._value_depth)


@base.register
class AxialBlock(base.SpecConfig, keras.layers.Layer):
  """Bottleneck residual block with 2D attention in place of the 3x3 conv.

  The tf_keras `AxialBlock` (same arguments and sub-layer names): 1x1 conv
  + BN + ReLU, attention ("axial", "local" or "global") + ReLU, 1x1 conv +
  BN (gamma zeros), shortcut conv + BN when channels or stride change, drop
  path, ReLU.
  """

  _spec = layer_specs.axial_block

  @base.takes(_spec)
  def __init__(self, arguments, **kwargs):
    super().__init__(**kwargs)
    layer_specs.store(self, arguments)

  def build(self, input_shape):
    channels = base.check_image_shape("AxialBlock", input_shape)
    c = self._arguments
    f = c["filters"]
    bn = dict(momentum=c["norm_momentum"], epsilon=c["norm_epsilon"])

    def conv(filters, name, strides=1):
      return keras.layers.Conv2D(
          filters, 1, strides=strides, use_bias=False,
          kernel_initializer=base.initializer(c["kernel_initializer"]),
          kernel_regularizer=c["kernel_regularizer"], name=name)

    out_channels = c["expansion"] * f
    self._has_shortcut = channels != out_channels or c["strides"] > 1
    if self._has_shortcut:
      self.shortcut_conv = conv(out_channels, "shortcut_conv", c["strides"])
      self.shortcut_bn = base.batch_norm(name="shortcut_bn", **bn)
    self.conv_down = conv(2 * f, "conv_down")
    self.bn_down = base.batch_norm(name="bn_down", **bn)
    attention_type, attention_args = layer_specs.axial_block_attention(c)
    self._attention_pool = None
    if attention_type == "axial":
      self.attention = AxialAttention2D(**attention_args)
    elif attention_type == "local":
      from axial_deeplab_tf.keras_layers.attention2d import LocalSelfAttention2D  # pylint: disable=g-import-not-at-top
      self.attention = LocalSelfAttention2D(**attention_args)
    else:
      from axial_deeplab_tf.keras_layers.attention2d import GlobalSelfAttention2D  # pylint: disable=g-import-not-at-top
      self.attention = GlobalSelfAttention2D(**attention_args)
      if c["strides"] > 1:
        self._attention_pool = keras.layers.AveragePooling2D(
            c["strides"], c["strides"], padding="same", name="attention_pool")
    self.conv_up = conv(out_channels, "conv_up")
    self.bn_up = base.batch_norm(gamma_initializer="zeros", name="bn_up", **bn)
    self.drop_path = (base.DropPath(c["drop_path_rate"], name="drop_path")
                      if c["drop_path_rate"] > 0 else None)
    # Built now, in the tf_keras layer's order, so that every weight exists
    # after build (for copy_weights) and lines up with the twin's.
    shape = tuple(input_shape)
    if self._has_shortcut:
      self.shortcut_conv.build(shape)
      self.shortcut_bn.build(self.shortcut_conv.compute_output_shape(shape))
    self.conv_down.build(shape)
    down = self.conv_down.compute_output_shape(shape)
    self.bn_down.build(down)
    self.attention.build(down)
    self.conv_up.build(down[:-1] + (2 * f,))
    self.bn_up.build(down[:-1] + (out_channels,))

  def call(self, inputs, training=None):
    shortcut = inputs
    if self._has_shortcut:
      shortcut = self.shortcut_bn(self.shortcut_conv(inputs),
                                  training=training)
    x = ops.relu(self.bn_down(self.conv_down(inputs), training=training))
    x = self.attention(x, training=training)
    if self._attention_pool is not None:
      x = self._attention_pool(x)
    x = ops.relu(x)
    x = self.bn_up(self.conv_up(x), training=training)
    if self.drop_path is not None:
      x = self.drop_path(x, training=training)
    return ops.relu(x + ops.cast(shortcut, x.dtype))

  def compute_output_shape(self, input_shape):
    s = self._arguments["strides"]
    size = [None if d is None else -(-d // s) for d in input_shape[1:3]]
    return (input_shape[0], *size,
            self._arguments["expansion"] * self._arguments["filters"])
