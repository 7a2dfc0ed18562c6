"""The dilated ResNet (output stride 8) of ISANet, with its building blocks.

Model Garden's `BottleneckBlock` arithmetic and attribute names (so TF
checkpoints of models built on Model Garden's `DilatedResNet` restore), with
readable layer names and the options of the openseg (PyTorch) variant:
symmetric padding of strided convs, a ceil-mode stem max pool and the
first-block-halved dilation pattern.
"""

from typing import Any, Optional

import tensorflow as tf
import tf_keras

from official.modeling import tf_utils
from axial_deeplab_tf.layers import common
from axial_deeplab_tf.modeling import layer_config


# Bottleneck blocks per stage (ResNet-50 / -101).
RESNET_DEPTHS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
_DILATION_PATTERNS = ("uniform", "first_block_halved")


@tf_keras.utils.register_keras_serializable(package="AxialDeepLab")
class CeilModeMaxPool2D(tf_keras.layers.Layer):
  """3x3 stride-2 max pool with one pixel of padding and ceil rounding.

  PyTorch's `MaxPool2d(3, 2, padding=1, ceil_mode=True)` (the openseg ResNet
  stem): output size floor(n / 2) + 1 per axis; padding counts as -inf.
  """

  def call(self, inputs):
    shape = tf.shape(inputs)
    after_h = 2 - shape[1] % 2
    after_w = 2 - shape[2] % 2
    x = tf.pad(inputs, [[0, 0], [1, after_h], [1, after_w], [0, 0]],
               constant_values=float("-inf"))
    return tf.nn.max_pool2d(x, 3, 2, "VALID")


@tf_keras.utils.register_keras_serializable(package="AxialDeepLab")
class ResNetBottleneck(layer_config.ConfigDictLayer):
  """ResNet v1.5 bottleneck (stride and dilation on the 3x3 conv).

  relu(BN(conv1x1(relu(BN(conv3x3(relu(BN(conv1x1(x)))))))) + shortcut(x)),
  shortcut = BN(conv1x1 stride s) or identity. The computation and the
  sub-layer attributes are those of Model Garden's `BottleneckBlock`
  (without SE and stochastic depth), so checkpoints of ISANet models built
  on it restore into this one; the sub-layers carry readable names.
  """

  def __init__(self,
               filters: int,
               strides: int = 1,
               dilation_rate: int = 1,
               use_projection: bool = False,
               symmetric_padding: bool = False,
               use_sync_bn: bool = False,
               norm_momentum: float = 0.9,
               norm_epsilon: float = 1e-5,
               kernel_initializer: Any = "VarianceScaling",
               kernel_regularizer: Optional[
                   tf_keras.regularizers.Regularizer] = None,
               **kwargs):
    """Initializes the block.

    Args:
      filters: channels of the first two convs (the output has 4x).
      strides: stride of the 3x3 conv and of the projection shortcut.
      dilation_rate: dilation of the 3x3 conv.
      use_projection: 1x1 conv + BN shortcut instead of the identity.
      symmetric_padding: pad a strided 3x3 conv by one pixel on each side
        (PyTorch `padding=1`) instead of TF 'same' (which pads 0 before and
        1 after at even sizes).
      use_sync_bn: synchronise BN across replicas.
      norm_momentum: BN momentum (Keras convention).
      norm_epsilon: BN epsilon.
      kernel_initializer: conv kernel initializer.
      kernel_regularizer: optional regularizer of the conv kernels.
      **kwargs: keyword arguments of `tf_keras.layers.Layer`.
    """
    super().__init__(**kwargs)
    self._config_dict = {
        "filters": filters, "strides": strides,
        "dilation_rate": dilation_rate, "use_projection": use_projection,
        "symmetric_padding": symmetric_padding, "use_sync_bn": use_sync_bn,
        "norm_momentum": norm_momentum, "norm_epsilon": norm_epsilon,
        "kernel_initializer": kernel_initializer,
        "kernel_regularizer": kernel_regularizer,
    }
    initializer = tf_keras.initializers.get(kernel_initializer)
    regularizer = tf_keras.regularizers.get(kernel_regularizer)

    def conv(channels, size, name, stride=1, dilation=1, padding="same"):
      return common.conv2d(channels, size, name,
                           tf_utils.clone_initializer(initializer),
                           regularizer, use_bias=False, strides=stride,
                           dilation_rate=dilation, padding=padding)

    def norm(name):
      return common.batch_norm(norm_momentum, norm_epsilon, use_sync_bn,
                               name)

    # Attribute names as Model Garden's BottleneckBlock (checkpoint paths).
    if use_projection:
      self._shortcut = conv(filters * 4, 1, "shortcut_conv", stride=strides)
      self._norm0 = norm("shortcut_bn")
    self._conv1 = conv(filters, 1, "conv1")
    self._norm1 = norm("bn1")
    self._pad2 = None
    if symmetric_padding and strides > 1:
      self._pad2 = tf_keras.layers.ZeroPadding2D(dilation_rate,
                                                 name="conv2_pad")
    self._conv2 = conv(filters, 3, "conv2", stride=strides,
                       dilation=dilation_rate,
                       padding="valid" if self._pad2 else "same")
    self._norm2 = norm("bn2")
    self._conv3 = conv(filters * 4, 1, "conv3")
    self._norm3 = norm("bn3")

  def call(self, inputs, training=None):
    """Applies the block.

    Args:
      inputs: [batch, height, width, channels].
      training: bool; BN batch statistics in training.

    Returns:
      [batch, height / strides, width / strides, 4 * filters].
    """
    shortcut = inputs
    if self._config_dict["use_projection"]:
      shortcut = self._norm0(self._shortcut(inputs), training=training)
    x = tf.nn.relu(self._norm1(self._conv1(inputs), training=training))
    if self._pad2 is not None:
      x = self._pad2(x)
    x = tf.nn.relu(self._norm2(self._conv2(x), training=training))
    x = self._norm3(self._conv3(x), training=training)
    return tf.nn.relu(x + shortcut)


def build_dilated_resnet(depth: int,
                         stem_type: str = "v1",
                         use_sync_bn: bool = False,
                         norm_momentum: float = 0.9,
                         norm_epsilon: float = 1e-5,
                         kernel_regularizer: Optional[
                             tf_keras.regularizers.Regularizer] = None,
                         symmetric_padding: bool = False,
                         ceil_mode_max_pool: bool = False,
                         dilation_pattern: str = "uniform"
                        ) -> tf_keras.Model:
  """Dilated ResNet at output stride 8, exposing stages 3 and 4.

  Stages 3 and 4 keep stride 8 with dilations 2 and 4. The defaults compute
  what Model Garden's `DilatedResNet(output_stride=8)` computes (and its
  checkpoints restore here); the three last arguments give the openseg
  (PyTorch) variant instead.

  Args:
    depth: 50 or 101.
    stem_type: "v0" (7x7 conv, 64) or "v1" (three 3x3 convs 64, 64, 128, the
      deep stem of the reference implementations).
    use_sync_bn: synchronise BN across replicas.
    norm_momentum: BN momentum (Keras convention).
    norm_epsilon: BN epsilon.
    kernel_regularizer: optional regularizer of the conv kernels.
    symmetric_padding: strided convs pad k // 2 on every side (PyTorch)
      instead of TF 'same'; matters at even sizes.
    ceil_mode_max_pool: the stem max pool pads one pixel and rounds up
      (PyTorch `ceil_mode=True`, openseg) instead of TF 'same'.
    dilation_pattern: "uniform" (every block of stage 3 at dilation 2, of
      stage 4 at 4; Model Garden and DeepLab) or "first_block_halved" (the
      first block of each dilated stage at half the rate, as openseg and
      PSPNet convert the strided blocks).

  Returns:
    A functional model mapping [batch, height, width, 3] to {"c4": stage 3
    output [batch, h/8, w/8, 1024], "c5": stage 4 output [batch, h/8, w/8,
    2048]}. Layer names: stem_conv1, stem_bn1, ..., stage2_block1, ...
  """
  if depth not in RESNET_DEPTHS:
    raise ValueError(f"depth must be 50 or 101, got {depth!r}.")
  if stem_type not in ("v0", "v1"):
    raise ValueError(f"stem_type must be 'v0' or 'v1', got {stem_type!r}.")
  if dilation_pattern not in _DILATION_PATTERNS:
    raise ValueError(f"dilation_pattern must be one of {_DILATION_PATTERNS}, "
                     f"got {dilation_pattern!r}.")
  regularizer = tf_keras.regularizers.get(kernel_regularizer)
  initializer = "VarianceScaling"
  inputs = tf_keras.Input(shape=(None, None, 3))

  def conv(x, channels, size, name, stride=1):
    padding = "same"
    if symmetric_padding and stride > 1:
      x = tf_keras.layers.ZeroPadding2D(size // 2, name=f"{name}_pad")(x)
      padding = "valid"
    return common.conv2d(channels, size, name,
                         tf_keras.initializers.get(initializer), regularizer,
                         use_bias=False, strides=stride, padding=padding)(x)

  def norm(x, name):
    return common.batch_norm(norm_momentum, norm_epsilon, use_sync_bn,
                             name)(x)

  x = inputs
  if stem_type == "v0":
    stem = [(64, 7, 2)]
  else:
    stem = [(64, 3, 2), (64, 3, 1), (128, 3, 1)]
  for i, (channels, size, stride) in enumerate(stem):
    x = conv(x, channels, size, f"stem_conv{i + 1}", stride)
    x = norm(x, f"stem_bn{i + 1}")
    x = tf_keras.layers.Activation("relu", name=f"stem_relu{i + 1}")(x)
  if ceil_mode_max_pool:
    x = CeilModeMaxPool2D(name="stem_pool")(x)
  else:
    x = tf_keras.layers.MaxPool2D(3, 2, padding="same", name="stem_pool")(x)

  endpoints = {}
  for stage, (filters, blocks) in enumerate(
      zip((64, 128, 256, 512), RESNET_DEPTHS[depth])):
    dilation = (1, 1, 2, 4)[stage]
    for block in range(blocks):
      rate = dilation
      if block == 0 and dilation > 1 and (
          dilation_pattern == "first_block_halved"):
        rate = dilation // 2
      x = ResNetBottleneck(
          filters, strides=2 if (stage == 1 and block == 0) else 1,
          dilation_rate=rate, use_projection=block == 0,
          symmetric_padding=symmetric_padding, use_sync_bn=use_sync_bn,
          norm_momentum=norm_momentum, norm_epsilon=norm_epsilon,
          kernel_initializer=initializer, kernel_regularizer=regularizer,
          name=f"stage{stage + 2}_block{block + 1}")(x)
    endpoints[stage] = x
  outputs = {"c4": endpoints[2], "c5": endpoints[3]}
  return tf_keras.Model(inputs=inputs, outputs=outputs,
                        name=f"dilated_resnet{depth}")
