"""Pieces shared by the layers: checks, sub-layer factories, config helpers.

Layers build their convolutions and batch norms through `conv2d`,
`depthwise_conv2d` and `batch_norm` so that every sub-layer gets its own
copy of the kernel initializer and the regularizers, and serialise their
initializer and regularizer arguments with `serialize_initializer` and
`serialize_regularizer`. `SelfAttention2DBase` holds what the local and
global 2D self-attention baselines have in common.
"""

import math
from typing import Any, Dict, Optional, Tuple

import tensorflow as tf
import tf_keras

from official.modeling import tf_utils

from axial_deeplab_tf import attention_math
from axial_deeplab_tf import layer_specs


# Argument checks shared with the Keras 3 layers (one definition).
check_positive_int = attention_math.check_positive_int
check_attention_depths = attention_math.check_attention_depths
check_even_head_depth = attention_math.check_even_head_depth
# tf_keras layers refuse Keras 3 tensors with an error naming the Keras 3
# module (base class before tf_keras.layers.Layer).
RejectKeras3Tensors = attention_math.RejectKeras3Tensors


def check_image_input_shape(layer_name: str, input_shape) -> int:
  """Checks a [batch, height, width, channels] shape; returns channels."""
  shape = tf.TensorShape(input_shape)
  return attention_math.check_image_shape(
      layer_name, None if shape.rank is None else shape.as_list(), shape)


def static_or_dynamic_shape(x: tf.Tensor):
  """Returns x's shape as a list, static ints where known, else tensors."""
  dynamic = tf.shape(x)
  return [dynamic[i] if d is None else d for i, d in enumerate(x.shape)]


def build_in_scope(layer: tf_keras.layers.Layer, input_shape) -> None:
  """Builds a sub-layer under its own name scope, as a first call would."""
  with tf.name_scope(layer.name):
    layer.build(input_shape)


symmetric_padding = attention_math.symmetric_padding


def pad_symmetric(inputs: tf.Tensor, kernel_size: int, dilation_rate: int = 1,
                  constant_value: Optional[float] = 0.0) -> tf.Tensor:
  """Pads the height and width of [batch, h, w, c] by `symmetric_padding`.

  Args:
    inputs: [batch, height, width, channels].
    kernel_size: window size of the convolution or pooling that follows.
    dilation_rate: its dilation.
    constant_value: fill value; None fills with the lowest value of the
      dtype (for max pooling, so padding never wins, as PyTorch's and TF's
      max pools ignore their padding).

  Returns:
    [batch, height + pad, width + pad, channels].
  """
  before, after = symmetric_padding(kernel_size, dilation_rate)
  if before == 0 and after == 0:
    return inputs
  if constant_value is None:
    constant_value = inputs.dtype.min
  return tf.pad(inputs, [[0, 0], [before, after], [before, after], [0, 0]],
                constant_values=tf.cast(constant_value, inputs.dtype))


def _padded_spatial_shape(input_shape, kernel_size, dilation_rate):
  shape = tf.TensorShape(input_shape).as_list()
  pad = sum(symmetric_padding(kernel_size, dilation_rate))
  for axis in (1, 2):
    if shape[axis] is not None:
      shape[axis] += pad
  return tf.TensorShape(shape)


def _single_int(name: str, value) -> int:
  if isinstance(value, (list, tuple)):
    if len(set(value)) != 1:
      raise ValueError(f"{name} must be one int (square windows) for "
                       f"symmetric padding, got {value!r}.")
    value = value[0]
  return check_positive_int(name, value)


@tf_keras.utils.register_keras_serializable(package="AxialDeepLab")
class PaddedConv2D(tf_keras.layers.Conv2D):
  """Conv2D with the official codes' symmetric padding at every input size.

  Pads (k - 1) * dilation / 2 on each side of height and width
  (`pad_symmetric`), then convolves with 'valid' padding: PyTorch's
  `Conv2d(padding=k // 2)`. Same weights and variables as a Conv2D.
  """

  def __init__(self, filters, kernel_size, **kwargs):
    padding = kwargs.pop("padding", "valid")
    if padding != "valid":
      raise ValueError(f"PaddedConv2D pads symmetrically itself; padding must "
                       f"be 'valid' (the default), got {padding!r}.")
    super().__init__(filters, kernel_size, padding="valid", **kwargs)
    if self.data_format != "channels_last" or self.groups != 1:
      raise ValueError(f"PaddedConv2D supports data_format='channels_last' "
                       f"and groups=1, got {self.data_format!r} and "
                       f"{self.groups!r}.")
    self._pad_kernel = _single_int("kernel_size", self.kernel_size)
    self._pad_dilation = _single_int("dilation_rate", self.dilation_rate)

  def build(self, input_shape):
    super().build(_padded_spatial_shape(input_shape, self._pad_kernel,
                                        self._pad_dilation))

  def call(self, inputs):
    # Conv2D.call would check its output against compute_output_shape of
    # the padded input (which pads again), so the convolution is run here.
    outputs = self.convolution_op(
        pad_symmetric(inputs, self._pad_kernel, self._pad_dilation),
        self.kernel)
    if self.use_bias:
      outputs = tf.nn.bias_add(outputs, self.bias)
    if self.activation is not None:
      outputs = self.activation(outputs)
    return outputs

  def compute_output_shape(self, input_shape):
    return super().compute_output_shape(_padded_spatial_shape(
        input_shape, self._pad_kernel, self._pad_dilation))


@tf_keras.utils.register_keras_serializable(package="AxialDeepLab")
class PaddedMaxPool2D(tf_keras.layers.MaxPool2D):
  """MaxPool2D with symmetric padding: PyTorch's `MaxPool2d(k, s, k // 2)`."""

  def __init__(self, pool_size=3, strides=2, **kwargs):
    padding = kwargs.pop("padding", "valid")
    if padding != "valid":
      raise ValueError(f"PaddedMaxPool2D pads symmetrically itself; padding "
                       f"must be 'valid' (the default), got {padding!r}.")
    super().__init__(pool_size, strides, padding="valid", **kwargs)
    self._pad_kernel = _single_int("pool_size", self.pool_size)

  def call(self, inputs):
    return super().call(pad_symmetric(inputs, self._pad_kernel,
                                      constant_value=None))

  def compute_output_shape(self, input_shape):
    return super().compute_output_shape(_padded_spatial_shape(
        input_shape, self._pad_kernel, 1))


def conv2d(filters: int, kernel_size, name: str, kernel_initializer,
           kernel_regularizer=None, bias_regularizer=None,
           use_bias: bool = True, **kwargs) -> tf_keras.layers.Conv2D:
  """A Conv2D with its own copy of `kernel_initializer`.

  Args:
    filters: output channels.
    kernel_size: int or (height, width).
    name: layer name.
    kernel_initializer: initializer (cloned, so layers never share one).
    kernel_regularizer: regularizer of the kernel, or None.
    bias_regularizer: regularizer of the bias (only used with use_bias).
    use_bias: add a bias.
    **kwargs: more Conv2D arguments (strides, padding, ...).

  Returns:
    The (unbuilt) layer.
  """
  return tf_keras.layers.Conv2D(
      filters, kernel_size, use_bias=use_bias,
      kernel_initializer=tf_utils.clone_initializer(kernel_initializer),
      kernel_regularizer=kernel_regularizer,
      bias_regularizer=bias_regularizer if use_bias else None, name=name,
      **kwargs)


def depthwise_conv2d(kernel_size, name: str, kernel_initializer,
                     kernel_regularizer=None, bias_regularizer=None,
                     **kwargs) -> tf_keras.layers.DepthwiseConv2D:
  """A 'same'-padded DepthwiseConv2D with bias and its own initializer copy."""
  return tf_keras.layers.DepthwiseConv2D(
      kernel_size=kernel_size, padding="same", use_bias=True,
      depthwise_initializer=tf_utils.clone_initializer(kernel_initializer),
      depthwise_regularizer=kernel_regularizer,
      bias_regularizer=bias_regularizer, name=name, **kwargs)


@tf_keras.utils.register_keras_serializable(package="axial_deeplab_tf")
class TwoPassSyncBatchNormalization(tf_keras.layers.BatchNormalization):
  """BatchNormalization(synchronized=True) with two-pass batch statistics.

  tf_keras sums x and x^2 across replicas and takes Var = E[x^2] - E[x]^2:
  one all-reduce pass, but in float32 the difference of two large numbers
  keeps only the leading digits when a channel's mean is large against its
  spread, and two summation orders (XLA's and the TF kernels', or two
  replica layouts) then give visibly different variances. Here the mean is
  all-reduced first and then the sum of (x - mean)^2: one more all-reduce,
  a variance as exact as a single device's tf.nn.moments (Panoptic-DeepLab-
  R50, two replicas, 20 float32 steps compiled against uncompiled: 1.0e-4
  apart with the one-pass statistics, 1.0e-5 with these). Same arguments,
  variables and inference as its base; `use_two_pass_sync_statistics`
  gives a built model's synchronized batch norms this class.
  """

  def _sync_calculate_mean_and_var(self, x, reduction_axes, keep_dims,
                                   mask=None):
    replica_ctx = tf.distribute.get_replica_context()
    if replica_ctx is None or mask is not None:
      return super()._sync_calculate_mean_and_var(
          x, reduction_axes, keep_dims, mask=mask)
    with tf.name_scope("moments"):
      # float16 sums overflow: float16 statistics are computed in float32.
      y = tf.cast(x, tf.float32) if x.dtype == tf.float16 else x
      total = replica_ctx.all_reduce(
          tf.distribute.ReduceOp.SUM,
          tf.reduce_sum(y, axis=reduction_axes, keepdims=True))
      count = replica_ctx.all_reduce(
          tf.distribute.ReduceOp.SUM,
          tf.reduce_sum(tf.ones_like(y), axis=reduction_axes, keepdims=True))
      mean = tf.math.divide_no_nan(total, count)
      squares = replica_ctx.all_reduce(
          tf.distribute.ReduceOp.SUM,
          tf.reduce_sum(tf.square(y - mean), axis=reduction_axes,
                        keepdims=True))
      variance = tf.math.divide_no_nan(squares, count)
      if not keep_dims:
        mean = tf.squeeze(mean, reduction_axes)
        variance = tf.squeeze(variance, reduction_axes)
      if x.dtype == tf.float16:
        return tf.cast(mean, tf.float16), tf.cast(variance, tf.float16)
      return mean, variance


def use_two_pass_sync_statistics(model: tf.Module) -> int:
  """Makes every synchronized tf_keras BatchNormalization of `model` a
  `TwoPassSyncBatchNormalization` (the class only: its variables, config
  and inference are the same). Layers built by Model Garden's modules are
  reached too, which is why this works on the built model.

  Returns:
    How many layers changed.
  """
  changed = 0
  for layer in model.submodules:
    if (type(layer) is tf_keras.layers.BatchNormalization and  # pylint: disable=unidiomatic-typecheck
        layer.synchronized):
      layer.__class__ = TwoPassSyncBatchNormalization
      changed += 1
  return changed


def batch_norm(momentum: float, epsilon: float, use_sync_bn: bool,
               name: str, **kwargs) -> tf_keras.layers.BatchNormalization:
  """A BatchNormalization, synchronised across replicas if `use_sync_bn`
  (its two-pass statistics: `TwoPassSyncBatchNormalization`)."""
  cls = (TwoPassSyncBatchNormalization if use_sync_bn else
         tf_keras.layers.BatchNormalization)
  return cls(
      momentum=momentum, epsilon=epsilon, synchronized=use_sync_bn, name=name,
      **kwargs)


def resize_bilinear(x: tf.Tensor, size, align_corners: bool = False
                   ) -> tf.Tensor:
  """Bilinear resize of [batch, h, w, c] to `size`, in the dtype of `x`.

  Args:
    x: [batch, height, width, channels].
    size: (new_height, new_width), ints or an int32 tensor.
    align_corners: False: half-pixel centres (`tf.image.resize`); True: the
      corner pixels of input and output aligned (TF1's `resize_bilinear`,
      as deeplab2 and the official ISANet code resize).

  Returns:
    [batch, new_height, new_width, channels] in the dtype of `x`.
  """
  dtype = x.dtype
  # The resize computes in float32 whatever the input (the kernels' output
  # is float32). Casting half-precision input first gives the same numbers
  # and keeps the gradient's type right under XLA, whose ResizeBilinearGrad
  # on a bfloat16 image yields float32 ("Seen floating point types of
  # different precisions" where it meets the input's other gradients).
  if dtype in (tf.bfloat16, tf.float16):
    x = tf.cast(x, tf.float32)
  if align_corners:
    y = tf.compat.v1.image.resize_bilinear(x, size, align_corners=True)
  else:
    y = tf.image.resize(x, size, method=tf.image.ResizeMethod.BILINEAR)
  return tf.cast(y, dtype)


def serialize_regularizer(regularizer) -> Optional[Dict[str, Any]]:
  """Config of a regularizer (object, name or config), None for None."""
  if regularizer is None:
    return None
  return tf_keras.regularizers.serialize(
      tf_keras.regularizers.get(regularizer))


def serialize_initializer(initializer) -> Optional[Dict[str, Any]]:
  """Config of an initializer (object, name or config), None for None."""
  if initializer is None:
    return None
  return tf_keras.initializers.serialize(
      tf_keras.initializers.get(initializer))


def _load(kind: str, value):
  if kind == layer_specs.REGULARIZER:
    return tf_keras.regularizers.get(value)
  return tf_keras.initializers.get(value)


def _dump(kind: str, value):
  if kind == layer_specs.AS_GIVEN and (value is None or
                                       isinstance(value, (str, dict))):
    return value
  if kind != layer_specs.REGULARIZER:
    return serialize_initializer(value)
  return serialize_regularizer(value)


def takes(spec: layer_specs.LayerSpec, defaults=None):
  """Constructor decorator of a tf_keras layer from its shared spec
  (`defaults`: see `LayerSpec.constructor`)."""
  return spec.constructor(_load, defaults)


# get_config from the layer's spec (`_spec`) and its stored `_arguments`.
SpecConfig = layer_specs.config_mixin(_dump)


def weight_config(kernel_initializer, kernel_regularizer,
                  bias_regularizer) -> Dict[str, Any]:
  """get_config entries of the initializer and regularizer arguments."""
  return {
      "kernel_initializer": serialize_initializer(kernel_initializer),
      "kernel_regularizer": serialize_regularizer(kernel_regularizer),
      "bias_regularizer": serialize_regularizer(bias_regularizer),
  }


class ConvLayerMixin:
  """Convolution and batch-norm factories of a layer, from its arguments.

  A layer calls `_set_conv_arguments` (and `_set_norm_arguments` if it has
  batch norms) in its constructor, creates sub-layers with `_conv`,
  `_depthwise_conv` and `_batch_norm`, and adds `_conv_config()` and
  `_norm_config()` to its get_config.
  """

  def _set_conv_arguments(self, kernel_initializer, kernel_regularizer,
                          bias_regularizer) -> None:
    self._kernel_initializer = tf_keras.initializers.get(kernel_initializer)
    self._kernel_regularizer = tf_keras.regularizers.get(kernel_regularizer)
    self._bias_regularizer = tf_keras.regularizers.get(bias_regularizer)

  def _set_norm_arguments(self, use_sync_bn: bool, norm_momentum: float,
                          norm_epsilon: float) -> None:
    self._use_sync_bn = use_sync_bn
    self._norm_momentum = norm_momentum
    self._norm_epsilon = norm_epsilon

  def _conv(self, filters: int, kernel_size, name: str, use_bias: bool = True,
            **kwargs) -> tf_keras.layers.Conv2D:
    return conv2d(filters, kernel_size, name, self._kernel_initializer,
                  self._kernel_regularizer, self._bias_regularizer,
                  use_bias=use_bias, **kwargs)

  def _depthwise_conv(self, kernel_size,
                      name: str) -> tf_keras.layers.DepthwiseConv2D:
    return depthwise_conv2d(kernel_size, name, self._kernel_initializer,
                            self._kernel_regularizer, self._bias_regularizer)

  def _batch_norm(self, name: str) -> tf_keras.layers.BatchNormalization:
    return batch_norm(self._norm_momentum, self._norm_epsilon,
                      self._use_sync_bn, name)

  def _conv_config(self) -> Dict[str, Any]:
    return weight_config(self._kernel_initializer, self._kernel_regularizer,
                         self._bias_regularizer)

  def _norm_config(self) -> Dict[str, Any]:
    return {"use_sync_bn": self._use_sync_bn,
            "norm_momentum": self._norm_momentum,
            "norm_epsilon": self._norm_epsilon}


def make_qkv_projection(input_shape, total_depth: int, kernel_regularizer,
                        norm_momentum: float, norm_epsilon: float,
                        use_sync_bn: bool
                       ) -> Tuple[tf_keras.layers.Conv2D,
                                  tf_keras.layers.BatchNormalization]:
  """Creates and builds the bias-free 1x1 [q|k|v] projection and its BN.

  The kernel is initialised with a truncated normal of stddev channels^-0.5
  as in the axial-attention layer; the single batch norm over the
  concatenated channels is what keeps the attention logits well scaled.
  Both are built right away (not on first call) so that all weights exist,
  e.g. for set_weights or checkpoint restore, right after the caller's
  build.

  Args:
    input_shape: [batch, height, width, channels] with known channels.
    total_depth: 2 * key_depth + value_depth.
    kernel_regularizer: regulariser of the projection kernel, or None.
    norm_momentum: batch-norm moving-average momentum.
    norm_epsilon: batch-norm epsilon.
    use_sync_bn: synchronise batch statistics across replicas.

  Returns:
    (conv, batch_norm) sub-layers, built.
  """
  channels = int(tf.TensorShape(input_shape)[-1])
  conv = tf_keras.layers.Conv2D(
      total_depth, 1, use_bias=False,
      kernel_initializer=tf_keras.initializers.TruncatedNormal(
          stddev=channels ** -0.5),
      kernel_regularizer=kernel_regularizer, name="qkv_projection")
  norm = batch_norm(norm_momentum, norm_epsilon, use_sync_bn,
                    "qkv_batch_norm", axis=-1)
  build_in_scope(conv, input_shape)
  build_in_scope(norm, conv.compute_output_shape(input_shape))
  return conv, norm


class SelfAttention2DBase(RejectKeras3Tensors, SpecConfig,
                          tf_keras.layers.Layer):
  """Shared part of the 2D self-attention baselines (local and global).

  Holds and checks the arguments both take, builds the batch-normalised
  [q|k|v] projection and the output pooling, and gives the output shape and
  the shared get_config entries. Subclasses add their own arguments and the
  attention itself.
  """

  def __init__(self, arguments: Dict[str, Any], **kwargs):
    """Stores the checked arguments of the subclass's spec.

    Args:
      arguments: what the subclass's `layer_specs` spec returned (see there
        for their meaning), with the regularizer loaded.
      **kwargs: tf_keras.layers.Layer arguments.
    """
    super().__init__(**kwargs)
    layer_specs.store(self, arguments)
    self._key_head_depth = self._key_depth // self._num_heads
    self._value_head_depth = self._value_depth // self._num_heads

  def _build_qkv_projection(self, input_shape) -> None:
    """Checks the input shape; creates and builds the q/k/v projection."""
    check_image_input_shape(self.name, input_shape)
    self._qkv_conv, self._qkv_norm = make_qkv_projection(
        input_shape, 2 * self._key_depth + self._value_depth,
        self._kernel_regularizer, self._norm_momentum, self._norm_epsilon,
        self._use_sync_bn)

  def _build_pool(self) -> None:
    """Creates the output average pooling when strides > 1."""
    if self._strides > 1:
      self._pool = tf_keras.layers.AveragePooling2D(
          self._strides, self._strides, padding="same")

  def _pool_output(self, outputs):
    """Average-pools the attention output by `strides` (if > 1)."""
    if self._strides > 1:
      return self._pool(outputs)
    return outputs

  def _project_qkv(self, inputs, training):
    """Returns q [.., key_depth], k [.., key_depth], v [.., value_depth]."""
    qkv = self._qkv_norm(self._qkv_conv(inputs), training=training)
    return tf.split(qkv, [self._key_depth, self._key_depth,
                          self._value_depth], axis=-1)

  def compute_output_shape(self, input_shape):
    shape = tf.TensorShape(input_shape).as_list()
    size = [None if d is None else int(math.ceil(d / self._strides))
            for d in shape[1:3]]
    return tf.TensorShape([shape[0]] + size + [self._value_depth])


# Makers of the generic kinds of `layer_specs` sub-layer plans from
# tf_keras.layers; a layer adds its own kinds (convs from its weight settings,
# nested layers).
SUBLAYERS = layer_specs.generic_sublayer_factories(tf_keras.layers)
