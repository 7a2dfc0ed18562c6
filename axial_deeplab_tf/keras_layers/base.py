"""Pieces shared by the Keras 3 layers: registration, norms, drop path.

Everything here uses `keras` and `keras.ops` only, so it runs on the
TensorFlow, JAX and PyTorch backends.
"""

from typing import Any, Dict, Optional, Sequence

import keras
import numpy as np
from keras import ops

from axial_deeplab_tf import attention_math
from axial_deeplab_tf import layer_specs

PACKAGE = "AxialDeepLab"


def register(cls):
  """Registers a class for `.keras` saving under the package name."""
  return keras.saving.register_keras_serializable(package=PACKAGE)(cls)


def serialize(obj) -> Optional[Dict[str, Any]]:
  """Config of an initializer/regularizer object or name; None for None."""
  if obj is None:
    return None
  return keras.saving.serialize_keras_object(obj)


def _load(kind: str, value):
  if kind == layer_specs.REGULARIZER:
    return keras.regularizers.get(value)
  return keras.initializers.get(value)


def takes(spec: layer_specs.LayerSpec, defaults=None):
  """Constructor decorator of a Keras 3 layer from its shared spec
  (`defaults`: see `LayerSpec.constructor`)."""
  return spec.constructor(_load, defaults)


# get_config from the layer's spec (`_spec`) and its stored `_arguments`.
SpecConfig = layer_specs.config_mixin(lambda kind, value: serialize(value))


def initializer(value, default=None):
  """A fresh initializer from a name, config or object (else `default`)."""
  if value is None:
    return default
  init = keras.initializers.get(value)
  return init.__class__.from_config(init.get_config())


def static_dim(x, axis: int):
  """The static size of `axis` if known, else the run-time one."""
  size = x.shape[axis]
  return size if size is not None else ops.shape(x)[axis]


def check_image_shape(layer_name: str, input_shape) -> int:
  """Checks a [batch, height, width, channels] shape; returns channels."""
  return attention_math.check_image_shape(layer_name, tuple(input_shape))


def masked_moments(x, axes: Sequence[int], mask=None):
  """Mean and (biased) variance of x over `axes`, counting only `mask` > 0.

  Args:
    x: float tensor.
    axes: axes to reduce (the rest keep their size, as keepdims=False).
    mask: None or a 0/1 float tensor broadcastable to x.

  Returns:
    (mean, variance) over the kept axes.
  """
  if mask is None:
    mean = ops.mean(x, axis=axes, keepdims=True)
    var = ops.mean(ops.square(x - mean), axis=axes, keepdims=True)
  else:
    mask = ops.broadcast_to(ops.cast(mask, x.dtype), ops.shape(x))
    count = ops.sum(mask, axis=axes, keepdims=True)
    mean = ops.sum(x * mask, axis=axes, keepdims=True) / count
    var = ops.sum(ops.square(x - mean) * mask, axis=axes,
                  keepdims=True) / count
  return ops.squeeze(mean, axes), ops.squeeze(var, axes)


class MomentNorm(keras.layers.Layer):
  """Batch norm with parameters of any `shape` and masked statistics.

  Its variables are the tf_keras BatchNormalization's (gamma, beta,
  moving_mean, moving_variance) of shape `shape` (None: the channel axis,
  known at build), which must match the trailing axes of the input;
  statistics are over the leading axes, and with `valid` only over entries
  where it is 1 (tf_keras' masked batch norm). Normalisation uses the
  biased batch variance; the moving variance tracks the unbiased one when
  `unbiased_moving_variance` (what tf_keras' fused kernel does for rank-4
  channels-last inputs), else the biased one.
  """

  def __init__(self, shape: Optional[Sequence[int]] = None,
               momentum: float = 0.99, epsilon: float = 1e-3,
               gamma_initializer="ones",
               unbiased_moving_variance: bool = False, **kwargs):
    super().__init__(**kwargs)
    self._shape = None if shape is None else tuple(int(s) for s in shape)
    self._momentum = float(momentum)
    self._epsilon = float(epsilon)
    self._gamma_initializer = gamma_initializer
    self._unbiased = bool(unbiased_moving_variance)

  def build(self, input_shape=None):
    if self._shape is None:
      self._shape = (int(input_shape[-1]),)
    self.gamma = self.add_weight(
        name="gamma", shape=self._shape,
        initializer=keras.initializers.get(self._gamma_initializer))
    self.beta = self.add_weight(name="beta", shape=self._shape,
                                initializer="zeros")
    self.moving_mean = self.add_weight(
        name="moving_mean", shape=self._shape, initializer="zeros",
        trainable=False)
    self.moving_variance = self.add_weight(
        name="moving_variance", shape=self._shape, initializer="ones",
        trainable=False)

  def update(self, mean, var):
    """Moves the moving averages towards a batch's statistics."""
    m = self._momentum
    self.moving_mean.assign(self.moving_mean * m +
                            ops.stop_gradient(mean) * (1.0 - m))
    self.moving_variance.assign(self.moving_variance * m +
                                ops.stop_gradient(var) * (1.0 - m))

  def call(self, x, training=None, valid=None):
    if training:
      axes = list(range(len(x.shape) - len(self._shape)))
      x32 = ops.cast(x, "float32")
      mean, var = masked_moments(x32, axes, valid)
      moving_var = var
      if self._unbiased:
        if valid is None:
          count = 1
          for a in axes:
            count = count * ops.shape(x)[a]
          count = ops.cast(count, "float32")
        else:
          count = ops.sum(ops.broadcast_to(ops.cast(valid, "float32"),
                                           ops.shape(x)), axis=axes)
        moving_var = var * count / ops.maximum(count - 1.0, 1.0)
      self.update(mean, moving_var)
    else:
      mean, var = self.moving_mean, self.moving_variance
    scale = self.gamma * ops.rsqrt(var + self._epsilon)
    y = (ops.cast(x, "float32") - mean) * scale + self.beta
    return ops.cast(y, x.dtype)

  def compute_output_shape(self, input_shape):
    return input_shape

  def get_config(self):
    config = super().get_config()
    config.update({
        "shape": None if self._shape is None else list(self._shape),
        "momentum": self._momentum, "epsilon": self._epsilon,
        "gamma_initializer": serialize(self._gamma_initializer),
        "unbiased_moving_variance": self._unbiased})
    return config


register(MomentNorm)


def batch_norm(momentum: float, epsilon: float, name: str,
               gamma_initializer="ones") -> MomentNorm:
  """A channels-last batch norm that updates its moving averages as the
  tf_keras BatchNormalization of a rank-4 input (unbiased moving variance).
  """
  return MomentNorm(None, momentum=momentum, epsilon=epsilon,
                    gamma_initializer=gamma_initializer,
                    unbiased_moving_variance=True, name=name)


@register
class DropPath(keras.layers.Layer):
  """Stochastic depth: drops a whole sample's branch with probability rate.

  Kept samples are scaled by 1 / (1 - rate) in training; identity otherwise.
  """

  def __init__(self, rate: float = 0.0, seed: Optional[int] = None,
               **kwargs):
    super().__init__(**kwargs)
    self._rate = attention_math.check_rate("drop_path_rate", rate)
    self._seed = seed
    self._seed_generator = keras.random.SeedGenerator(seed)

  def call(self, x, training=None):
    if not training or self._rate == 0.0:
      return x
    keep = 1.0 - self._rate
    shape = [ops.shape(x)[0]] + [1] * (len(x.shape) - 1)
    noise = keras.random.uniform(shape, seed=self._seed_generator,
                                 dtype=x.dtype)
    return x * ops.floor(keep + noise) / keep

  def compute_output_shape(self, input_shape):
    return input_shape

  def get_config(self):
    config = super().get_config()
    config.update({"rate": self._rate, "seed": self._seed})
    return config


@register
class SymmetricPad(keras.layers.Layer):
  """Pads height and width by dilation * (k - 1) / 2 on each side.

  With a 'valid' convolution or pooling after it this is the symmetric
  padding of the tf_keras stems (`layers.common.PaddedConv2D` /
  `PaddedMaxPool2D`, PyTorch's `padding=k // 2`). `fill="min"` pads with the
  dtype's lowest value (for max pooling), else with zeros.
  """

  def __init__(self, kernel_size: int, dilation_rate: int = 1,
               fill: str = "zeros", **kwargs):
    super().__init__(**kwargs)
    self._kernel_size = attention_math.check_positive_int("kernel_size",
                                                          kernel_size)
    self._dilation_rate = attention_math.check_positive_int(
        "dilation_rate", dilation_rate)
    if fill not in ("zeros", "min"):
      raise ValueError(f"fill must be 'zeros' or 'min', got {fill!r}.")
    self._fill = fill
    self._pad = attention_math.symmetric_padding(kernel_size, dilation_rate)

  def call(self, inputs):
    before, after = self._pad
    value = 0.0
    if self._fill == "min":
      value = float(np.finfo(np.dtype(keras.backend.standardize_dtype(
          inputs.dtype))).min)
    return ops.pad(inputs, [[0, 0], [before, after], [before, after], [0, 0]],
                   constant_values=value)

  def compute_output_shape(self, input_shape):
    total = sum(self._pad)
    return (input_shape[0],
            *[None if d is None else d + total for d in input_shape[1:3]],
            input_shape[3])

  def get_config(self):
    config = super().get_config()
    config.update({"kernel_size": self._kernel_size,
                   "dilation_rate": self._dilation_rate, "fill": self._fill})
    return config


# Makers of the generic kinds of `layer_specs` sub-layer plans from
# keras.layers; a layer adds its own kinds (convs from its weight settings,
# nested layers).
SUBLAYERS = layer_specs.generic_sublayer_factories(keras.layers)
