"""Keras 3 SegNeXt layers: MSCA, the MSCAN block, NMF2D, Hamburger, LightHamHead.

Twins of `axial_deeplab_tf.layers.msca` and `axial_deeplab_tf.layers.
hamburger` (same arguments, sub-layers and variable names; Keras 3 names
the depthwise kernel "kernel"), written with `keras.ops` only.

NMF bases: with `seed=None` they are drawn afresh in every call, as in the
tf_keras layer; a seed fixes them, but the draw comes from Keras' random
generator, not TensorFlow's stateless Philox, so the two implementations
start from different bases for the same seed. Pass `bases=` to `NMF2D`
(or compare with `seed=None` replaced by explicit bases) for identical
outputs.
"""

import keras
from keras import ops

from axial_deeplab_tf import layer_specs
from axial_deeplab_tf.keras_layers import base

def he_fan_out_initializer():
  """N(0, sqrt(2 / fan_out)), the SegNeXt conv initialisation."""
  return keras.initializers.VarianceScaling(
      scale=2.0, mode="fan_out", distribution="untruncated_normal")


def _takes(spec):
  """Constructor decorator of a SegNeXt layer: None kernel initializer
  means `he_fan_out_initializer()`."""
  return base.takes(spec, {layer_specs.HE_FAN_OUT: he_fan_out_initializer})


class _ConvArguments:
  """Conv factories of a layer from its initializer/regularizer arguments."""

  def _conv(self, filters, kernel_size, name, use_bias=True,
            kernel_initializer=None):
    return keras.layers.Conv2D(
        filters, kernel_size, use_bias=use_bias,
        kernel_initializer=base.initializer(kernel_initializer or
                                            self._kernel_initializer),
        kernel_regularizer=self._kernel_regularizer,
        bias_regularizer=self._bias_regularizer if use_bias else None,
        name=name)

  def _depthwise_conv(self, kernel_size, name):
    return keras.layers.DepthwiseConv2D(
        kernel_size, padding="same", use_bias=True,
        depthwise_initializer=base.initializer(self._kernel_initializer),
        depthwise_regularizer=self._kernel_regularizer,
        bias_regularizer=self._bias_regularizer, name=name)


def _build_chain(layers, shape):
  """Builds layers one after another from `shape`; returns the last shape."""
  for layer in layers:
    layer.build(shape)
    shape = layer.compute_output_shape(shape)
  return shape


@base.register
class MultiScaleConvAttention(_ConvArguments, base.SpecConfig,
                              keras.layers.Layer):
  """`conv1x1(a + sum_k strip_k(a)) * x`, a = depthwise conv of x (Keras 3)."""

  _spec = layer_specs.multi_scale_conv_attention

  @_takes(_spec)
  def __init__(self, arguments, **kwargs):
    super().__init__(**kwargs)
    layer_specs.store(self, arguments)

  def build(self, input_shape):
    channels = base.check_image_shape("MultiScaleConvAttention", input_shape)
    shape = tuple(input_shape)
    self.base_conv = self._depthwise_conv(self._base_kernel_size, "base_conv")
    self.strip_row_convs = [self._depthwise_conv((1, k), f"strip{k}_1x{k}")
                            for k in self._kernel_sizes]
    self.strip_col_convs = [self._depthwise_conv((k, 1), f"strip{k}_{k}x1")
                            for k in self._kernel_sizes]
    self.mix_conv = self._conv(channels, 1, "mix_conv")
    _build_chain([self.base_conv] + self.strip_row_convs +
                 self.strip_col_convs + [self.mix_conv], shape)

  def call(self, inputs, training=None):
    a = self.base_conv(inputs)
    total = a
    for conv_row, conv_col in zip(self.strip_row_convs, self.strip_col_convs):
      total = total + conv_col(conv_row(a))
    return self.mix_conv(total) * inputs

  def compute_output_shape(self, input_shape):
    return input_shape


@base.register
class MSCANBlock(_ConvArguments, base.SpecConfig, keras.layers.Layer):
  """One MSCAN block: attention and MLP residual branches with layer scale."""

  _spec = layer_specs.mscan_block

  @_takes(_spec)
  def __init__(self, arguments, **kwargs):
    super().__init__(**kwargs)
    layer_specs.store(self, arguments)

  def build(self, input_shape):
    channels = base.check_image_shape("MSCANBlock", input_shape)
    shape = tuple(input_shape)
    hidden = int(channels * self._mlp_ratio)
    self.attn_norm = base.batch_norm(self._norm_momentum, self._norm_epsilon,
                                     "attn_norm")
    self.attn_proj_in = self._conv(channels, 1, "attn_proj_in")
    self.msca = MultiScaleConvAttention(
        kernel_sizes=self._kernel_sizes,
        base_kernel_size=self._base_kernel_size,
        kernel_initializer=base.initializer(self._kernel_initializer),
        kernel_regularizer=self._kernel_regularizer,
        bias_regularizer=self._bias_regularizer, name="msca")
    self.attn_proj_out = self._conv(channels, 1, "attn_proj_out")
    self.mlp_norm = base.batch_norm(self._norm_momentum, self._norm_epsilon,
                                    "mlp_norm")
    self.mlp_fc1 = self._conv(hidden, 1, "mlp_fc1")
    self.mlp_dwconv = self._depthwise_conv(3, "mlp_dwconv")
    self.mlp_fc2 = self._conv(channels, 1, "mlp_fc2")
    self.mlp_dropout = keras.layers.Dropout(self._dropout_rate,
                                            name="mlp_dropout")
    self.drop_path = base.DropPath(self._drop_path_rate, name="drop_path")
    scale_init = keras.initializers.Constant(self._layer_scale_init_value)
    self.attn_layer_scale = self.add_weight(
        name="attn_layer_scale", shape=(channels,), initializer=scale_init)
    self.mlp_layer_scale = self.add_weight(
        name="mlp_layer_scale", shape=(channels,), initializer=scale_init)
    _build_chain([self.attn_norm, self.attn_proj_in, self.msca,
                  self.attn_proj_out, self.mlp_norm, self.mlp_fc1], shape)
    _build_chain([self.mlp_dwconv], shape[:-1] + (hidden,))
    _build_chain([self.mlp_fc2], shape[:-1] + (hidden,))

  def call(self, inputs, training=None):
    y = self.attn_norm(inputs, training=training)
    shortcut = y
    y = ops.gelu(self.attn_proj_in(y), approximate=False)
    y = self.attn_proj_out(self.msca(y)) + shortcut
    x = inputs + self.drop_path(self.attn_layer_scale * y, training=training)
    y = self.mlp_norm(x, training=training)
    y = ops.gelu(self.mlp_dwconv(self.mlp_fc1(y)), approximate=False)
    y = self.mlp_dropout(y, training=training)
    y = self.mlp_dropout(self.mlp_fc2(y), training=training)
    return x + self.drop_path(self.mlp_layer_scale * y, training=training)

  def compute_output_shape(self, input_shape):
    return input_shape


@base.register
class NMF2D(base.SpecConfig, keras.layers.Layer):
  """Low-rank NMF reconstruction of a non-negative map (Keras 3).

  The multiplicative updates of the tf_keras `NMF2D` (see its docstring),
  in float32.
  """

  _spec = layer_specs.nmf_2d

  @_takes(_spec)
  def __init__(self, arguments, **kwargs):
    super().__init__(**kwargs)
    layer_specs.store(self, arguments)
    self._seed_generator = keras.random.SeedGenerator(self._seed)

  def build(self, input_shape):
    channels = base.check_image_shape("NMF2D", input_shape)
    if channels % self._num_channel_groups:
      raise ValueError(f"channels ({channels}) must be divisible by "
                       f"num_channel_groups ({self._num_channel_groups}).")
    self._group_channels = channels // self._num_channel_groups

  def sample_bases(self, batch_size):
    """float32 [B * S, D, R] initial bases, unit L2 norm over D."""
    shape = (self._num_channel_groups, self._group_channels, self._rank)
    if self._seed is None:
      bases = keras.random.uniform((batch_size,) + shape,
                                   seed=self._seed_generator)
    else:
      bases = keras.random.uniform(shape, seed=self._seed)
      bases = ops.broadcast_to(bases[None], (batch_size,) + shape)
    bases = ops.reshape(bases, (-1,) + shape[1:])
    return bases / ops.sqrt(ops.maximum(
        ops.sum(ops.square(bases), axis=1, keepdims=True), 1e-12))

  def _coef_update(self, x, bases, coef):
    numerator = ops.matmul(x, bases)
    denominator = ops.matmul(coef, ops.matmul(ops.transpose(bases, (0, 2, 1)),
                                              bases))
    return coef * numerator / (denominator + self._epsilon)

  def _bases_update(self, x, bases, coef):
    numerator = ops.matmul(ops.transpose(x, (0, 2, 1)), coef)
    denominator = ops.matmul(bases, ops.matmul(ops.transpose(coef, (0, 2, 1)),
                                               coef))
    return bases * numerator / (denominator + self._epsilon)

  def factorize(self, x, bases, steps: int):
    """(coef [G, N, R], bases [G, D, R]) after `steps` update pairs."""
    x_loop = ops.stop_gradient(x) if self._one_step_gradient else x
    bases = ops.stop_gradient(bases)
    coef = ops.softmax(self._inv_t * ops.matmul(x_loop, bases), axis=-1)
    for _ in range(steps):
      coef = self._coef_update(x_loop, bases, coef)
      bases = self._bases_update(x_loop, bases, coef)
    coef = self._coef_update(x, bases, coef)
    return coef, bases

  def call(self, inputs, training=None, bases=None):
    height, width = base.static_dim(inputs, 1), base.static_dim(inputs, 2)
    groups, depth = self._num_channel_groups, self._group_channels
    batch = ops.shape(inputs)[0]
    x = ops.cast(inputs, "float32")
    x = ops.reshape(x, (-1, height * width, groups, depth))
    if groups > 1:
      x = ops.transpose(x, (0, 2, 1, 3))
    x = ops.reshape(x, (-1, height * width, depth))
    if bases is None:
      bases = self.sample_bases(batch)
    bases = ops.cast(bases, "float32")
    coef, final = self.factorize(
        x, bases, self._train_steps if training else self._eval_steps)
    y = ops.matmul(coef, ops.transpose(final, (0, 2, 1)))
    y = ops.reshape(y, (-1, groups, height * width, depth))
    if groups > 1:
      y = ops.transpose(y, (0, 2, 1, 3))
    y = ops.reshape(y, (-1, height, width, groups * depth))
    return ops.cast(y, inputs.dtype)

  def compute_output_shape(self, input_shape):
    return input_shape


@base.register
class Hamburger(_ConvArguments, base.SpecConfig, keras.layers.Layer):
  """ReLU(x + GN(conv(NMF(ReLU(conv(x)))))) (Keras 3)."""

  _spec = layer_specs.hamburger

  @_takes(_spec)
  def __init__(self, arguments, **kwargs):
    super().__init__(**kwargs)
    layer_specs.set_up(self, arguments, layer_specs.hamburger_ham(arguments),
                       {"nmf": NMF2D})

  def build(self, input_shape):
    channels = base.check_image_shape("Hamburger", input_shape)
    layer_specs.make_sublayers(
        self, layer_specs.hamburger_sublayers(self._arguments, channels),
        dict(base.SUBLAYERS, conv=self._conv))
    _build_chain([self.lower_bread, self.nmf, self.upper_bread,
                  self.upper_norm], tuple(input_shape))

  def call(self, inputs, training=None, bases=None):
    y = ops.relu(self.lower_bread(inputs))
    y = self.nmf(y, training=training, bases=bases)
    y = self.upper_norm(self.upper_bread(y))
    return ops.relu(inputs + ops.cast(y, inputs.dtype))

  def compute_output_shape(self, input_shape):
    return input_shape


@base.register
class LightHamHead(_ConvArguments, base.SpecConfig, keras.layers.Layer):
  """SegNeXt decoder: resize + concat, squeeze, Hamburger, align, classify."""

  _spec = layer_specs.light_ham_head

  @_takes(_spec)
  def __init__(self, arguments, **kwargs):
    super().__init__(**kwargs)
    layer_specs.set_up(
        self, arguments, layer_specs.light_ham_head_sublayers(arguments),
        dict(base.SUBLAYERS, conv=self._conv, hamburger=self._hamburger,
             classifier=self._classifier))

  def _hamburger(self, name, **arguments):
    return Hamburger(
        kernel_initializer=base.initializer(self._kernel_initializer),
        kernel_regularizer=self._kernel_regularizer,
        bias_regularizer=self._bias_regularizer, name=name, **arguments)

  def _classifier(self, name, filters, stddev):
    return self._conv(
        filters, 1, name,
        kernel_initializer=keras.initializers.RandomNormal(stddev=stddev))

  def build(self, input_shape):
    if not isinstance(input_shape, (list, tuple)) or not input_shape or (
        not isinstance(input_shape[0], (list, tuple))):
      raise TypeError("LightHamHead expects a non-empty list of feature maps, "
                      f"got input shape {input_shape!r}.")
    first = tuple(input_shape[0])
    total = sum(int(s[-1]) for s in input_shape)
    shape = first[:-1] + (total,)
    shape = _build_chain([self.squeeze_conv, self.squeeze_norm,
                          self.hamburger, self.align_conv, self.align_norm],
                         shape)
    self.classifier.build(shape)

  def call(self, inputs, training=None, bases=None):
    if isinstance(inputs, dict) or not isinstance(
        inputs, (list, tuple)) or not inputs:
      raise TypeError("LightHamHead expects a non-empty list of feature maps, "
                      f"got {type(inputs).__name__}.")
    size = (base.static_dim(inputs[0], 1), base.static_dim(inputs[0], 2))
    features = [inputs[0]] + [
        ops.cast(ops.image.resize(f, size, interpolation="bilinear"),
                 inputs[0].dtype) for f in inputs[1:]]
    x = ops.concatenate(features, axis=-1)
    x = ops.relu(self.squeeze_norm(self.squeeze_conv(x)))
    x = self.hamburger(x, training=training, bases=bases)
    x = ops.relu(self.align_norm(self.align_conv(x)))
    x = self.dropout(x, training=training)
    return self.classifier(x)

  def compute_output_shape(self, input_shape):
    return tuple(input_shape[0][:-1]) + (self._num_classes,)


