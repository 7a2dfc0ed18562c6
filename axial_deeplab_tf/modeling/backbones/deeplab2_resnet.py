"""The residual encoders of deeplab2 (the official TF2 DeepLab code base).

One encoder family covers ResNet-50 (7x7 stem), ResNet-50-beta (three 3x3
"inception" stem convolutions), Wide-ResNet-41 and SWideRNet (3x3 stem, a
first stage of basic blocks, switchable atrous convolution), with width and
layer multipliers, drop path and output strides 8/16/32. These encoders
differ from `axial_resnet.py` (the paper-faithful Axial-ResNets) in the
ways deeplab2's published checkpoints need:

- no max pool: the first block of every stage (stage 2 included) strides;
- a strided convolution pads symmetrically ((k_eff - 1) // 2 before, the
  rest after) instead of 'same'; stride-1 convolutions pad as 'same';
- a block takes the un-activated sum of the previous block and applies the
  ReLU itself (endpoints `res{k}` are the activated stage outputs);
- a stride-2 shortcut without projection subsamples x[::2, ::2];
- the last batch norm of every residual branch starts with gamma = 0;
- batch norm momentum 0.99, epsilon 1e-3 (deeplab2's defaults);
- beyond the output stride, blocks dilate (rate = stride / output stride;
  the second conv of the first basic block of a stage already uses the
  stage's rate, so outputs do not depend on where the striding stopped).

The sub-layers keep the attribute names under which deeplab2's trainer
checkpoints track them (`_stage3/_block2/_conv1_bn_act/_conv/kernel`), so a
deeplab2 checkpoint maps onto these encoders one variable for one
variable (see `axial_deeplab_tf/importers/deeplab2.py`).
"""

import math
from typing import Dict, Optional, Sequence

import tensorflow as tf
import tf_keras

from axial_deeplab_tf.layers import common

BACKBONE_TYPES = ("resnet", "resnet_beta", "wider_resnet")

# deeplab2's trainer defaults (trainer.proto: batchnorm_momentum, _epsilon).
NORM_MOMENTUM = 0.99
NORM_EPSILON = 1e-3


def _symmetric_padding(kernel_size: int, rate: int):
  effective = kernel_size + (kernel_size - 1) * (rate - 1)
  before = (effective - 1) // 2
  return before, effective - 1 - before


class GlobalContext(tf_keras.layers.Layer):
  """x + conv1x1(global average of x) (with bias, zero-initialised)."""

  def __init__(self, kernel_regularizer=None, **kwargs):
    super().__init__(**kwargs)
    self._kernel_regularizer = kernel_regularizer

  def build(self, input_shape):
    channels = int(input_shape[-1])
    self.global_average_pooling = tf_keras.layers.GlobalAveragePooling2D(
        keepdims=True)
    self.convolution = tf_keras.layers.Conv2D(
        channels, 1, kernel_initializer="zeros", bias_initializer="zeros",
        kernel_regularizer=self._kernel_regularizer,
        name=self.name + "_conv")
    super().build(input_shape)

  def call(self, inputs):
    return inputs + self.convolution(self.global_average_pooling(inputs))


class SwitchableAtrousConv(tf_keras.layers.Conv2D):
  """Switchable atrous convolution (Qiao et al., DetectoRS).

  One kernel applied at rate r and at rate 3r; a per-pixel switch
  s = conv1x1(avgpool5x5(x)) (zero-initialised, with bias) mixes them:
  s * conv_3r(x) + (1 - s) * conv_r(x). Stride 1 and 'same' padding only.
  """

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    self._average_pool = tf_keras.layers.AveragePooling2D(
        pool_size=5, strides=1, padding="same")
    self._switch = tf_keras.layers.Conv2D(
        1, 1, padding="same", kernel_initializer="zeros",
        bias_initializer="zeros", name="switch")

  def call(self, inputs):
    switch = self._switch(self._average_pool(inputs))
    small = tf.nn.convolution(inputs, self.kernel, strides=1, padding="SAME",
                              dilations=list(self.dilation_rate))
    large = tf.nn.convolution(inputs, self.kernel, strides=1, padding="SAME",
                              dilations=[3 * r for r in self.dilation_rate])
    outputs = switch * large + (1.0 - switch) * small
    if self.use_bias:
      outputs = tf.nn.bias_add(outputs, self.bias)
    return outputs


class ConvBN(tf_keras.layers.Layer):
  """Convolution (+ BN) (+ ReLU) with deeplab2's padding rule.

  Stride 1: 'same' padding (optionally switchable atrous, optionally inside
  global context layers). Stride > 1: symmetric zero padding, then 'valid'.
  """

  def __init__(self, filters: int, kernel_size: int, strides: int = 1,
               rate: int = 1, use_bn: bool = True, use_bias: bool = False,
               relu: bool = False, zero_gamma: bool = False,
               use_sac: bool = False, norm_momentum: float = NORM_MOMENTUM,
               norm_epsilon: float = NORM_EPSILON, kernel_regularizer=None,
               **kwargs):
    super().__init__(**kwargs)
    if use_bn and use_bias:
      raise ValueError(f"ConvBN {self.name!r}: use_bias with use_bn.")
    self._strides = strides
    self._relu = relu
    self._use_bn = use_bn
    self._use_global_context = use_sac
    if use_sac:
      self._pre_global_context = GlobalContext(
          kernel_regularizer, name="pre_global_context")
    conv_class = tf_keras.layers.Conv2D
    padding = "same"
    if strides == 1:
      if use_sac:
        conv_class = SwitchableAtrousConv
    else:
      self._zeropad = tf_keras.layers.ZeroPadding2D(
          [_symmetric_padding(kernel_size, rate)] * 2, name="zeropad")
      padding = "valid"
    self._conv = conv_class(
        filters, kernel_size, strides=strides, padding=padding,
        use_bias=use_bias, dilation_rate=rate, name="conv",
        kernel_initializer="he_normal", kernel_regularizer=kernel_regularizer)
    if use_sac:
      self._post_global_context = GlobalContext(
          kernel_regularizer, name="post_global_context")
    if use_bn:
      self._batch_norm = common.batch_norm(
          norm_momentum, norm_epsilon, False, "batch_norm", axis=3,
          gamma_initializer="zeros" if zero_gamma else "ones")

  def call(self, x, training=None):
    if self._use_global_context:
      x = self._pre_global_context(x)
    if self._strides != 1:
      x = self._zeropad(x)
    x = self._conv(x)
    if self._use_global_context:
      x = self._post_global_context(x)
    if self._use_bn:
      x = self._batch_norm(x, training=training)
    if self._relu:
      x = tf.nn.relu(x)
    return x


class InceptionStem(tf_keras.layers.Layer):
  """3x3/2 conv (64) + BN + ReLU, 3x3 (64) + BN + ReLU, 3x3 (128) + BN."""

  def __init__(self, width_multiplier: float = 1.0, **conv_kwargs):
    super().__init__(name="stem")
    channels = int(64 * width_multiplier)
    self._conv1_bn_act = ConvBN(channels, 3, strides=2, relu=True,
                                name="conv1_bn_act", **conv_kwargs)
    self._conv2_bn_act = ConvBN(channels, 3, relu=True, name="conv2_bn_act",
                                **conv_kwargs)
    self._conv3_bn = ConvBN(2 * channels, 3, name="conv3_bn", **conv_kwargs)

  def call(self, x, training=None):
    x = self._conv1_bn_act(x, training=training)
    x = self._conv2_bn_act(x, training=training)
    return self._conv3_bn(x, training=training)


# deeplab2's relative tables have 2 * MAX_SPAN - 1 = 509 rows whatever the
# feature size; offsets beyond +-254 share the end rows.
MAX_SPAN = 255


class RelativeEmbedding(tf_keras.layers.Layer):
  """A (2 * MAX_SPAN - 1) x depth table; call(length) -> [L, L, depth].

  Entry [l, m] is the row of the offset m - l (global attention: queries
  and keys are the same L positions).
  """

  def __init__(self, depth: int, stddev: float = 1.0, **kwargs):
    super().__init__(**kwargs)
    self._depth = depth
    self._stddev = stddev

  def build(self, input_shape):
    del input_shape
    self._embeddings = self.add_weight(
        name="embeddings", shape=(2 * MAX_SPAN - 1, self._depth),
        initializer=tf_keras.initializers.TruncatedNormal(stddev=self._stddev),
        trainable=True)
    super().build(None)

  def call(self, length):
    index = tf.range(length)
    offset = index[tf.newaxis, :] - index[:, tf.newaxis] + MAX_SPAN - 1
    return tf.gather(self._embeddings,
                     tf.clip_by_value(offset, 0, 2 * MAX_SPAN - 2))


class AxialAttention1D(tf_keras.layers.Layer):
  """Global position-sensitive axial attention along axis 1 of [N, L, C].

  q, k, v = BN(x W); logits = BN3(q.k, q.r_q, k.r_k) summed (one BN over
  the three terms with statistics and parameters per term and head);
  output = BN2(sum_m a v, sum_m a r_v) summed (per term, head, channel);
  heads concatenated. Tables: `RelativeEmbedding`.
  """

  def __init__(self, key_depth: int, value_depth: int, num_heads: int,
               norm_momentum: float = NORM_MOMENTUM,
               norm_epsilon: float = NORM_EPSILON, **kwargs):
    super().__init__(**kwargs)
    if key_depth % num_heads or value_depth % num_heads:
      raise ValueError(f"key_depth={key_depth} and value_depth={value_depth} "
                       f"must be divisible by num_heads={num_heads}.")
    self._key_depth = key_depth
    self._value_depth = value_depth
    self._num_heads = num_heads
    bn = dict(momentum=norm_momentum, epsilon=norm_epsilon, use_sync_bn=False)
    self._batch_norm_qkv = common.batch_norm(
        name="batch_norm_qkv", axis=-1, **bn)
    self._batch_norm_similarity = common.batch_norm(
        name="batch_norm_similarity", axis=[0, 2], **bn)
    self._batch_norm_retrieved_output = common.batch_norm(
        name="batch_norm_retrieved_output", axis=[0, 2, 4], **bn)
    self._query_rpe = RelativeEmbedding(key_depth // num_heads,
                                        name="query_rpe")
    self._key_rpe = RelativeEmbedding(key_depth // num_heads, name="key_rpe")
    self._value_rpe = RelativeEmbedding(value_depth // num_heads,
                                        name="value_rpe")

  def build(self, input_shape):
    channels = int(input_shape[-1])
    self.qkv_kernel = self.add_weight(
        name="qkv_kernel",
        shape=[channels, 2 * self._key_depth + self._value_depth],
        initializer=tf_keras.initializers.TruncatedNormal(
            stddev=channels ** -0.5), trainable=True)
    super().build(input_shape)

  def call(self, x, training=None):
    heads = self._num_heads
    length = tf.shape(x)[1]
    qkv = self._batch_norm_qkv(tf.einsum("nlc,cd->nld", x, self.qkv_kernel),
                               training=training)
    q, k, v = tf.split(qkv, [self._key_depth, self._key_depth,
                             self._value_depth], axis=-1)
    dk = self._key_depth // heads
    dv = self._value_depth // heads
    q = tf.transpose(tf.reshape(q, [-1, length, heads, dk]), [0, 2, 1, 3])
    k = tf.transpose(tf.reshape(k, [-1, length, heads, dk]), [0, 2, 1, 3])
    v = tf.reshape(v, [-1, length, heads, dv])
    logits = tf.stack([
        tf.einsum("bhld,bhmd->bhlm", q, k),
        tf.einsum("bhld,lmd->bhlm", q, self._query_rpe(length)),
        tf.einsum("bhmd,lmd->bhlm", k, self._key_rpe(length))])
    logits = tf.reduce_sum(
        self._batch_norm_similarity(logits, training=training), axis=0)
    weights = tf.nn.softmax(logits)
    retrieved = tf.stack([
        tf.einsum("bhlm,bmhd->bhld", weights, v),
        tf.einsum("bhlm,lmd->bhld", weights, self._value_rpe(length))])
    out = tf.reduce_sum(
        self._batch_norm_retrieved_output(retrieved, training=training),
        axis=0)
    return tf.reshape(tf.transpose(out, [0, 2, 1, 3]),
                      [-1, length, self._value_depth])


class AxialAttention2DLayer(tf_keras.layers.Layer):
  """Height-axis then width-axis attention; stride subsamples after each."""

  def __init__(self, filters: int, strides: int = 1,
               key_expansion: float = 1.0, value_expansion: float = 2.0,
               num_heads: int = 8, norm_momentum: float = NORM_MOMENTUM,
               norm_epsilon: float = NORM_EPSILON, **kwargs):
    super().__init__(**kwargs)
    self._strides = strides
    self._value_depth = int(round(filters * value_expansion))
    depths = dict(key_depth=int(round(filters * key_expansion)),
                  value_depth=self._value_depth, num_heads=num_heads,
                  norm_momentum=norm_momentum, norm_epsilon=norm_epsilon)
    self._height_axis = AxialAttention1D(name="height_axis", **depths)
    self._width_axis = AxialAttention1D(name="width_axis", **depths)

  def call(self, x, training=None):
    shape = tf.shape(x)
    height, width, channels = shape[1], shape[2], x.shape[-1]
    y = tf.reshape(tf.transpose(x, [0, 2, 1, 3]), [-1, height, channels])
    y = self._height_axis(y, training=training)
    y = tf.transpose(tf.reshape(y, [-1, width, height, self._value_depth]),
                     [0, 2, 1, 3])
    y = y[:, ::self._strides]
    strided_height = tf.shape(y)[1]
    y = self._width_axis(tf.reshape(y, [-1, width, self._value_depth]),
                         training=training)
    y = tf.reshape(y, [-1, strided_height, width, self._value_depth])
    return y[:, :, ::self._strides]


class ResidualBlock(tf_keras.layers.Layer):
  """ReLU(input) -> bottleneck (3 filters) or basic (2 filters) branch + shortcut.

  The input is the previous block's sum before its activation. The branch
  strides in its first spatial convolution; the last batch norm starts at
  gamma = 0. Output: branch (times the drop-path mask in training) +
  shortcut, not activated.
  """

  def __init__(self, filters: Sequence[int], name: str, strides: int = 1,
               rate: int = 1, second_rate: Optional[int] = None,
               use_sac: bool = False, drop_path_keep_prob: float = 1.0,
               attention: Optional[Dict[str, float]] = None, **conv_kwargs):
    super().__init__(name=name)
    self._attention_used = attention is not None
    self._filters = list(filters)
    self._strides = strides
    self._keep_prob = drop_path_keep_prob
    self._conv_kwargs = dict(conv_kwargs)
    second_rate = rate if second_rate is None else second_rate
    if len(filters) == 3:
      self._conv1_bn_act = ConvBN(filters[0], 1, relu=True,
                                  name="conv1_bn_act", **conv_kwargs)
      if attention is None:
        self._conv2_bn_act = ConvBN(filters[1], 3, strides=strides,
                                    rate=rate, relu=True, use_sac=use_sac,
                                    name="conv2_bn_act", **conv_kwargs)
      else:
        self._attention = AxialAttention2DLayer(
            filters[1], strides=strides, name="attention",
            norm_momentum=conv_kwargs.get("norm_momentum", NORM_MOMENTUM),
            norm_epsilon=conv_kwargs.get("norm_epsilon", NORM_EPSILON),
            **attention)
      self._conv3_bn = ConvBN(filters[2], 1, zero_gamma=True,
                              name="conv3_bn", **conv_kwargs)
    elif len(filters) == 2:
      self._conv1_bn_act = ConvBN(filters[0], 3, strides=strides, rate=rate,
                                  relu=True, use_sac=use_sac,
                                  name="conv1_bn_act", **conv_kwargs)
      self._conv2_bn = ConvBN(filters[1], 3, rate=second_rate,
                              zero_gamma=True, use_sac=use_sac,
                              name="conv2_bn", **conv_kwargs)
    else:
      raise ValueError(f"filters must have 2 (basic block) or 3 (bottleneck) "
                       f"entries, got {list(filters)}.")

  def build(self, input_shape):
    self._shortcut = None
    if int(input_shape[-1]) != self._filters[-1]:
      self._shortcut = ConvBN(self._filters[-1], 1, strides=self._strides,
                              name="shortcut", **self._conv_kwargs)
    super().build(input_shape)

  def call(self, x, training=None):
    x = tf.nn.relu(x)
    if self._shortcut is not None:
      shortcut = self._shortcut(x, training=training)
    elif self._strides != 1:
      shortcut = x[:, ::self._strides, ::self._strides, :]
    else:
      shortcut = x
    if len(self._filters) == 3:
      y = self._conv1_bn_act(x, training=training)
      if self._attention_used:
        y = tf.nn.relu(self._attention(y, training=training))
      else:
        y = self._conv2_bn_act(y, training=training)
      y = self._conv3_bn(y, training=training)
    else:
      y = self._conv1_bn_act(x, training=training)
      y = self._conv2_bn(y, training=training)
    if training and self._keep_prob < 1.0:
      batch = tf.shape(y)[0]
      keep = tf.floor(self._keep_prob + tf.random.uniform(
          [batch, 1, 1, 1], dtype=y.dtype))
      y = y * keep / self._keep_prob
    return y + shortcut


def drop_path_keep_prob(keep_prob: float, schedule: str, stage: int,
                        num_stages: int = 4) -> float:
  """deeplab2's drop-path schedule: 'constant' or 'linear' in the stage."""
  if schedule == "constant":
    return keep_prob
  if schedule == "linear":
    return 1.0 - (1.0 - keep_prob) * stage / num_stages
  raise ValueError(f"drop_path_schedule must be 'constant' or 'linear', got "
                   f"{schedule!r}.")


class BlockGroup(tf_keras.layers.Layer):
  """One stage: `num_blocks` residual blocks of the same resolution."""

  def __init__(self, filters: int, num_blocks: int, name: str,
               stride: int, input_stride: int, output_stride: int,
               backbone_type: str, use_sac_beyond_stride: int = 0,
               drop_path_keep_prob_last: float = 1.0,
               drop_path_beyond_stride: int = 16,
               drop_path_schedule: str = "constant",
               use_axial_beyond_stride: int = 0,
               attention_bottleneck_expansion: int = 2,
               attention: Optional[Dict[str, float]] = None, **conv_kwargs):
    super().__init__(name=name)
    self._num_blocks = num_blocks
    self.block_keep_probs = []
    current = input_stride
    use_sac = input_stride * stride >= use_sac_beyond_stride > 0
    for index in range(num_blocks):
      strides = stride if index == 0 and input_stride < output_stride else 1
      rate = current // output_stride if current > output_stride else 1
      if index == 0 and input_stride * stride > output_stride:
        second_rate = input_stride * stride // output_stride
      else:
        second_rate = rate
      keep = 1.0
      if current >= drop_path_beyond_stride:
        keep = drop_path_keep_prob(
            drop_path_keep_prob_last, drop_path_schedule,
            int(round(math.log2(current) - 1)))
      block_attention = None
      if current >= use_axial_beyond_stride > 0:
        block_attention = dict(attention or {})
        filters_list = [filters * attention_bottleneck_expansion, filters,
                        4 * filters]
      elif backbone_type in ("resnet", "resnet_beta"):
        filters_list = [filters, filters, 4 * filters]
      elif input_stride * stride < 32:
        filters_list = [4 * filters, 4 * filters]
      else:
        filters_list = [filters, 2 * filters, 4 * filters]
      self.block_keep_probs.append(keep)
      setattr(self, f"_block{index + 1}", ResidualBlock(
          filters_list, f"block{index + 1}", strides=strides, rate=rate, second_rate=second_rate,
          use_sac=use_sac, drop_path_keep_prob=keep,
          attention=block_attention, **conv_kwargs))
      if index == 0 and stride > 1:
        current *= stride

  def call(self, x, training=None):
    for index in range(self._num_blocks):
      x = getattr(self, f"_block{index + 1}")(x, training=training)
    return x


class ResizedFuse(tf_keras.layers.Layer):
  """Sums features of several strides at one stride and channel count.

  A feature with `channels` channels is only resized (bilinear, aligned
  corners); otherwise it goes through ReLU and a 1x1 conv + BN, strided by
  2 when it comes from twice finer a stride (deeplab2's
  `_strided_conv_bn<i>`), else followed by the resize
  (`_resized_conv_bn<i>`). The resize target is the size of the last input.
  """

  def __init__(self, channels: int, input_strides: Sequence[int],
               stride: int, **conv_kwargs):
    name = conv_kwargs.pop("name", None)
    super().__init__(name=name)
    self._channels = channels
    self._input_strides = list(input_strides)
    self._stride = stride
    self._conv_kwargs = conv_kwargs

  def build(self, input_shape):
    self._projections = []
    for index, (shape, stride) in enumerate(zip(input_shape,
                                                self._input_strides)):
      if int(shape[-1]) == self._channels:
        self._projections.append(None)
        continue
      strided = stride * 2 == self._stride
      kind = "strided" if strided else "resized"
      attribute = f"_{kind}_conv_bn{index + 1}"
      layer = ConvBN(self._channels, 1, strides=2 if strided else 1,
                     name=attribute[1:], **self._conv_kwargs)
      setattr(self, attribute, layer)
      self._projections.append((layer, strided))
    super().build(input_shape)

  def call(self, features, training=None):
    size = tf.shape(features[-1])[1:3]
    outputs = []
    for x, projection in zip(features, self._projections):
      strided = False
      if projection is not None:
        layer, strided = projection
        x = layer(tf.nn.relu(x), training=training)
      if not strided:
        x = common.resize_bilinear(x, size, align_corners=True)
      outputs.append(x)
    return tf.add_n(outputs)


class DeepLab2ResNet(tf_keras.Model):
  """deeplab2's residual encoder; returns a dict of endpoints.

  Endpoints: `stage1` (stem output, not activated), `res1`..`res5`
  (activated outputs of the stem and of stages 2-5, at strides 2, 4, 8,
  16, 32 capped by the output stride), `backbone_output` (= res5).
  Inputs are images already scaled to [-1, 1].
  """

  def __init__(self,
               backbone_type: str = "resnet",
               num_blocks: Sequence[int] = (3, 4, 6, 3),
               backbone_layer_multiplier: float = 1.0,
               width_multiplier: float = 1.0,
               stem_width_multiplier: float = 1.0,
               output_stride: int = 32,
               use_sac_beyond_stride: int = -1,
               drop_path_keep_prob: float = 1.0,
               drop_path_beyond_stride: int = 16,
               drop_path_schedule: str = "constant",
               use_axial_beyond_stride: int = 0,
               attention_bottleneck_expansion: int = 2,
               key_expansion: float = 1.0,
               value_expansion: float = 2.0,
               num_heads: int = 8,
               backbone_decoder_num_stacks: int = 0,
               backbone_decoder_blocks_per_stage: int = 1,
               norm_momentum: float = NORM_MOMENTUM,
               norm_epsilon: float = NORM_EPSILON,
               kernel_regularizer=None,
               name: str = "backbone",
               **kwargs):
    super().__init__(name=name, **kwargs)
    if backbone_type not in BACKBONE_TYPES:
      raise ValueError(f"backbone_type must be one of {BACKBONE_TYPES}, got "
                       f"{backbone_type!r}.")
    if output_stride not in (4, 8, 16, 32):
      raise ValueError(f"output_stride must be 4, 8, 16 or 32, got "
                       f"{output_stride!r}.")
    if not 0.0 < drop_path_keep_prob <= 1.0:
      raise ValueError(f"drop_path_keep_prob must be in (0, 1], got "
                       f"{drop_path_keep_prob!r}.")
    if len(num_blocks) != 4:
      raise ValueError(f"num_blocks must have 4 entries (stages 2-5), got "
                       f"{list(num_blocks)}.")
    self._arguments = dict(
        backbone_type=backbone_type, num_blocks=list(num_blocks),
        backbone_layer_multiplier=backbone_layer_multiplier,
        width_multiplier=width_multiplier,
        stem_width_multiplier=stem_width_multiplier,
        output_stride=output_stride,
        use_sac_beyond_stride=use_sac_beyond_stride,
        drop_path_keep_prob=drop_path_keep_prob,
        drop_path_beyond_stride=drop_path_beyond_stride,
        drop_path_schedule=drop_path_schedule,
        use_axial_beyond_stride=use_axial_beyond_stride,
        attention_bottleneck_expansion=attention_bottleneck_expansion,
        key_expansion=key_expansion, value_expansion=value_expansion,
        num_heads=num_heads,
        backbone_decoder_num_stacks=backbone_decoder_num_stacks,
        backbone_decoder_blocks_per_stage=backbone_decoder_blocks_per_stage)
    if backbone_decoder_num_stacks < 0 or (
        backbone_decoder_num_stacks and output_stride < 8):
      raise ValueError(f"backbone_decoder_num_stacks must be >= 0 (and the "
                       f"output stride >= 8 with a stacked decoder), got "
                       f"{backbone_decoder_num_stacks!r} at output stride "
                       f"{output_stride}.")
    attention = dict(key_expansion=key_expansion,
                     value_expansion=value_expansion, num_heads=num_heads)
    conv_kwargs = dict(norm_momentum=norm_momentum, norm_epsilon=norm_epsilon,
                       kernel_regularizer=kernel_regularizer)
    blocks = [3] + [int(n * backbone_layer_multiplier) for n in num_blocks]
    input_strides = [1, 2, 4, 8, 16]
    strides = [2] * 5
    filters = []
    for index, s in enumerate(input_strides):
      mult = (stem_width_multiplier
              if backbone_type == "wider_resnet" and index == 0
              else width_multiplier)
      filters.append(int(round(s * 32 * mult)))
    stem_channels = int(round(64 * stem_width_multiplier))
    if backbone_type == "wider_resnet":
      self._stem = ConvBN(stem_channels, 3, strides=2, name="stem",
                          **conv_kwargs)
      self._first_stage = 0
      strides[0], input_strides[0] = 1, 2
    elif backbone_type == "resnet_beta":
      self._stem = InceptionStem(stem_width_multiplier, **conv_kwargs)
      self._first_stage = 1
    else:
      self._stem = ConvBN(stem_channels, 7, strides=2, name="stem",
                          **conv_kwargs)
      self._first_stage = 1
    # What every block group (encoder and stacked decoder) shares.
    group_kwargs = {key: self._arguments[key] for key in (
        "output_stride", "backbone_type", "use_sac_beyond_stride",
        "drop_path_beyond_stride", "drop_path_schedule",
        "use_axial_beyond_stride", "attention_bottleneck_expansion")}
    group_kwargs.update(drop_path_keep_prob_last=drop_path_keep_prob,
                        attention=attention, **conv_kwargs)
    for index in range(self._first_stage, 5):
      setattr(self, f"_stage{index + 1}", BlockGroup(
          filters[index], blocks[index], f"stage{index + 1}",
          stride=strides[index], input_stride=input_strides[index],
          **group_kwargs))

    # deeplab2's stacked decoder inside the backbone (MaX-DeepLab-L): from
    # the output stride down to stride 4 and back, one block group per
    # stride, each after a ResizedFuse of the current feature with the
    # latest two features of that stride. With the backbone's stacks done
    # (classification mode), its activated output is `backbone_output`.
    self._decoder_stages = []
    stride, down, stack, stage = output_stride, True, 0, 0
    while stack < backbone_decoder_num_stacks:
      stage += 1
      previous = stride
      stride = stride // 2 if down else stride * 2
      if stride == output_stride:
        stack += 1
        down = True
      group_input_stride = 32 if stride == output_stride else stride
      channels = int(round(group_input_stride * 64 * width_multiplier))
      self._decoder_stages.append((stage, stride))
      setattr(self, f"_decoder_stage{stage}_resized_fuse", ResizedFuse(
          channels, [previous, stride, stride], stride,
          name=f"decoder_stage{stage}_resized_fuse", **conv_kwargs))
      setattr(self, f"_decoder_stage{stage}", BlockGroup(
          channels // 4, backbone_decoder_blocks_per_stage,
          f"decoder_stage{stage}", stride=1,
          input_stride=group_input_stride, **group_kwargs))
      if stride == 4:
        down = False

  @property
  def arguments(self) -> Dict[str, object]:
    return dict(self._arguments)

  def call(self, x, training=None):
    current = self._stem(x, training=training)
    endpoints = {"stage1": current, "res1": tf.nn.relu(current)}
    for index in range(self._first_stage, 5):
      current = getattr(self, f"_stage{index + 1}")(current,
                                                    training=training)
      endpoints[f"stage{index + 1}"] = current
      endpoints[f"res{index + 1}"] = tf.nn.relu(current)
    endpoints["backbone_output"] = endpoints["res5"]
    if self._decoder_stages:
      os_ = self._arguments["output_stride"]
      by_stride = {min(s, os_): [endpoints[f"stage{i + 1}"]]
                   for i, s in enumerate((2, 4, 8, 16))}
      by_stride[min(32, os_)] = [current]
      for stage, stride in self._decoder_stages:
        fuse = getattr(self, f"_decoder_stage{stage}_resized_fuse")
        current = fuse([current] + by_stride[stride][-2:], training=training)
        current = getattr(self, f"_decoder_stage{stage}")(current,
                                                          training=training)
        by_stride[stride].append(current)
      endpoints["backbone_output"] = tf.nn.relu(current)
    return endpoints


# The published encoders (deeplab2's axial_resnet_instances), as the
# constructor arguments above. SWideRNet-(w1, w2, l): stem width w1,
# backbone width w2, layer multiplier l.
_WIDER = dict(backbone_type="wider_resnet", num_blocks=(3, 6, 3, 3),
              drop_path_beyond_stride=4)
_AXIAL_WIDER = dict(_WIDER, use_axial_beyond_stride=16,
                    attention_bottleneck_expansion=4, key_expansion=2.0,
                    value_expansion=4.0)
ENCODERS = {
    "resnet50": dict(backbone_type="resnet"),
    "resnet50_beta": dict(backbone_type="resnet_beta"),
    "wide_resnet41": dict(_WIDER),
    "swidernet": dict(_WIDER),
    # SWideRNet with axial blocks from stride 16 on.
    "axial_swidernet": dict(_AXIAL_WIDER),
    # MaX-DeepLab-S without its memory path (deeplab2's
    # max_deeplab_s_backbone): ResNet-50-beta with axial blocks from
    # stride 16 on.
    "max_deeplab_s_backbone": dict(backbone_type="resnet_beta",
                                   use_axial_beyond_stride=16),
    # MaX-DeepLab-L without its memory path (max_deeplab_l_backbone):
    # Axial-SWideRNet-(1, 1, 1) plus one stacked-decoder hourglass in the
    # backbone (strides 8, 4, 8, 16; one block each) whose output is the
    # backbone output. Panoptic-DeepLab reads `res5` and does not use it.
    "max_deeplab_l_backbone": dict(_AXIAL_WIDER,
                                   backbone_decoder_num_stacks=1),
}


def build_deeplab2_encoder(encoder: str, **overrides) -> DeepLab2ResNet:
  """Builds a named deeplab2 encoder (a key of ENCODERS) with overrides."""
  if encoder not in ENCODERS:
    raise ValueError(f"encoder must be one of {sorted(ENCODERS)}, got "
                     f"{encoder!r}.")
  return DeepLab2ResNet(**dict(ENCODERS[encoder], **overrides))
