"""ISANet: dilated ResNet (output stride 8) + Interlaced Sparse Self-Attention.

Huang et al., "Interlaced Sparse Self-Attention for Semantic Segmentation",
arXiv 1907.12273. Zoo names: isanet_r50, isanet_r101.

Parameter accounting (19 classes, mmsegmentation's head variant):
  ISA decode head            11,815,443  (= `decode_head`)
    3x3 conv 2048->512 + BN   9,438,208
    ISSA, 2 attention blocks  1,842,176  (each: query 197,632, key 197,632,
                                          value 262,656, output 263,168)
    1x1 conv 1024->512 + BN     525,312
    classifier 512->19            9,747
  auxiliary FCN head          2,364,691  (= `auxiliary_head`; 3x3 conv
                                          1024->256 + BN, classifier)
The published head figure counts the decode head only; BN counts gamma and
beta. The auxiliary head is used in training only, with loss weight
`AUX_LOSS_WEIGHT` = 0.4 (total loss = CE(semantic_logits) + 0.4 *
CE(aux_logits)).
"""

from typing import Any, Dict, Optional, Sequence

import tensorflow as tf
import tf_keras

from official.modeling import tf_utils
from axial_deeplab_tf.layers import common
from axial_deeplab_tf.layers import hamburger
from axial_deeplab_tf.layers import issa
from axial_deeplab_tf.modeling import registry
from axial_deeplab_tf.modeling import segnext

# Weight of the auxiliary FCN head's cross-entropy in the training loss.
AUX_LOSS_WEIGHT = 0.4


def _act(name: str):
  if name == "relu":
    return tf.nn.relu
  return lambda x: tf.nn.leaky_relu(x, alpha=0.01)


def _check_activation(value: Any) -> str:
  if value not in ("relu", "leaky_relu"):
    raise ValueError(f"activation must be 'relu' or 'leaky_relu', got "
                     f"{value!r}.")
  return value


def _check_rate(name: str, value: Any) -> float:
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
      0.0 <= value < 1.0):
    raise ValueError(f"{name} must be a float in [0, 1), got {value!r}.")
  return float(value)


def _check_positive_int(name: str, value: Any) -> int:
  if isinstance(value, bool) or not isinstance(value, int) or value < 1:
    raise ValueError(f"{name} must be a positive int, got {value!r}.")
  return value


def _classifier(num_classes: int, kernel_regularizer):
  """The 1x1 classifier of both heads: bias, N(0, 0.01) kernel init."""
  return common.conv2d(num_classes, 1, "classifier",
                       tf_keras.initializers.RandomNormal(stddev=0.01),
                       kernel_regularizer)


def _serialized(config: Dict[str, Any]) -> Dict[str, Any]:
  """A head's arguments with the initializer and regularizer serialised."""
  config = dict(config)
  config["kernel_initializer"] = common.serialize_initializer(
      config["kernel_initializer"])
  config["kernel_regularizer"] = common.serialize_regularizer(
      config["kernel_regularizer"])
  return config


@tf_keras.utils.register_keras_serializable(package="AxialDeepLab")
class ISAHead(tf_keras.layers.Layer):
  """ISANet decode head.

  x = act(BN(conv3x3(features)));  y = ISSA(x);
  logits = conv1x1(dropout(act(BN(conv1x1(concat[y, x])))))
  """

  def __init__(self,
               num_classes: int,
               channels: int = 512,
               key_channels: int = 256,
               partition_factors: Sequence[int] = (8, 8),
               dropout_rate: float = 0.1,
               activation: str = "relu",
               use_sync_bn: bool = False,
               norm_momentum: float = 0.9,
               norm_epsilon: float = 1e-5,
               kernel_initializer: Any = "he_normal",
               kernel_regularizer: Optional[
                   tf_keras.regularizers.Regularizer] = None,
               value_use_bias: bool = True,
               **kwargs):
    """Initializes the head.

    Args:
      num_classes: number of classes.
      channels: width of the head and of ISSA's values/outputs (512).
      key_channels: ISSA query/key channels (256).
      partition_factors: ISSA (P_h, P_w).
      dropout_rate: spatial dropout before the classifier (0.1 as
        mmsegmentation; the official code uses 0.05).
      activation: "relu" or "leaky_relu" (slope 0.01), for the whole head.
      use_sync_bn: synchronise BN across replicas.
      norm_momentum: BN momentum (Keras convention).
      norm_epsilon: BN epsilon.
      kernel_initializer: initializer of the non-classifier convs.
      kernel_regularizer: optional regularizer of all conv kernels.
      value_use_bias: ISSA value convs with a bias (mmsegmentation) or
        without (False, the official code).
      **kwargs: keyword arguments of `tf_keras.layers.Layer`.
    """
    super().__init__(**kwargs)
    self._config_dict = {
        "num_classes": _check_positive_int("num_classes", num_classes),
        "channels": _check_positive_int("channels", channels),
        "value_use_bias": value_use_bias,
        "key_channels": key_channels,
        "partition_factors": list(partition_factors),
        "dropout_rate": _check_rate("dropout_rate", dropout_rate),
        "activation": activation,
        "use_sync_bn": use_sync_bn,
        "norm_momentum": norm_momentum,
        "norm_epsilon": norm_epsilon,
        "kernel_initializer": kernel_initializer,
        "kernel_regularizer": kernel_regularizer,
    }
    initializer = tf_keras.initializers.get(kernel_initializer)
    regularizer = tf_keras.regularizers.get(kernel_regularizer)
    norm = dict(momentum=norm_momentum, epsilon=norm_epsilon,
                use_sync_bn=use_sync_bn)
    self.in_conv = common.conv2d(channels, 3, "in_conv", initializer,
                                 regularizer, use_bias=False, padding="same")
    self.in_norm = common.batch_norm(name="in_bn", **norm)
    self.issa = issa.InterlacedSparseSelfAttention(
        key_channels=key_channels, partition_factors=partition_factors,
        activation=activation, use_sync_bn=use_sync_bn,
        norm_momentum=norm_momentum, norm_epsilon=norm_epsilon,
        kernel_initializer=initializer, kernel_regularizer=regularizer,
        value_use_bias=value_use_bias, name="issa")
    self.out_conv = common.conv2d(channels, 1, "out_conv", initializer,
                                  regularizer, use_bias=False)
    self.out_norm = common.batch_norm(name="out_bn", **norm)
    self.dropout = tf_keras.layers.SpatialDropout2D(dropout_rate)
    self.classifier = _classifier(num_classes, regularizer)
    self._act = _act(activation)

  def call(self, inputs, training=None):
    """Computes logits.

    Args:
      inputs: [batch, height, width, channels_in] backbone features.
      training: bool; BN statistics and dropout.

    Returns:
      [batch, height, width, num_classes] logits.
    """
    x = self._act(self.in_norm(self.in_conv(inputs), training=training))
    y = self.issa(x, training=training)
    y = tf.concat([y, x], axis=-1)
    y = self._act(self.out_norm(self.out_conv(y), training=training))
    return self.classifier(self.dropout(y, training=training))

  def get_config(self) -> Dict[str, Any]:
    config = super().get_config()
    config.update(_serialized(self._config_dict))
    return config


@tf_keras.utils.register_keras_serializable(package="AxialDeepLab")
class FCNHead(tf_keras.layers.Layer):
  """Auxiliary FCN head: conv3x3, BN, activation, dropout, 1x1 classifier."""

  def __init__(self,
               num_classes: int,
               channels: int = 256,
               dropout_rate: float = 0.1,
               use_sync_bn: bool = False,
               norm_momentum: float = 0.9,
               norm_epsilon: float = 1e-5,
               kernel_initializer: Any = "he_normal",
               kernel_regularizer: Optional[
                   tf_keras.regularizers.Regularizer] = None,
               activation: str = "relu",
               **kwargs):
    """Initializes the head.

    Args:
      num_classes: number of classes.
      channels: width of the 3x3 conv.
      dropout_rate: spatial dropout before the classifier.
      use_sync_bn: synchronise BN across replicas.
      norm_momentum: BN momentum (Keras convention).
      norm_epsilon: BN epsilon.
      kernel_initializer: initializer of the 3x3 conv.
      kernel_regularizer: optional regularizer of both conv kernels.
      activation: "relu" or "leaky_relu" (slope 0.01) after the BN.
      **kwargs: keyword arguments of `tf_keras.layers.Layer`.
    """
    super().__init__(**kwargs)
    self._config_dict = {
        "num_classes": _check_positive_int("num_classes", num_classes),
        "channels": _check_positive_int("channels", channels),
        "activation": _check_activation(activation),
        "dropout_rate": _check_rate("dropout_rate", dropout_rate),
        "use_sync_bn": use_sync_bn,
        "norm_momentum": norm_momentum,
        "norm_epsilon": norm_epsilon,
        "kernel_initializer": kernel_initializer,
        "kernel_regularizer": kernel_regularizer,
    }
    regularizer = tf_keras.regularizers.get(kernel_regularizer)
    self.conv = common.conv2d(
        channels, 3, "conv", tf_keras.initializers.get(kernel_initializer),
        regularizer, use_bias=False, padding="same")
    self.norm = common.batch_norm(norm_momentum, norm_epsilon, use_sync_bn,
                                  "bn")
    self.dropout = tf_keras.layers.SpatialDropout2D(dropout_rate)
    self.classifier = _classifier(num_classes, regularizer)
    self._act = _act(activation)

  def call(self, inputs, training=None):
    """Computes logits.

    Args:
      inputs: [batch, height, width, channels_in].
      training: bool; BN statistics and dropout.

    Returns:
      [batch, height, width, num_classes] logits.
    """
    x = self._act(self.norm(self.conv(inputs), training=training))
    return self.classifier(self.dropout(x, training=training))

  def get_config(self) -> Dict[str, Any]:
    config = super().get_config()
    config.update(_serialized(self._config_dict))
    return config


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
class ResNetBottleneck(tf_keras.layers.Layer):
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

  def get_config(self) -> Dict[str, Any]:
    config = super().get_config()
    config.update(self._config_dict)
    config["kernel_initializer"] = common.serialize_initializer(
        config["kernel_initializer"])
    config["kernel_regularizer"] = common.serialize_regularizer(
        config["kernel_regularizer"])
    return config


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


@tf_keras.utils.register_keras_serializable(package="AxialDeepLab")
class ISANet(tf_keras.Model):
  """ISANet: dilated ResNet -> ISA head, plus an auxiliary FCN head.

  Call returns {"semantic_logits": float32 [batch, height, width,
  num_classes]} at input resolution; with training=True (and
  use_auxiliary_head) also "aux_logits" of the same shape from the FCN head
  on stage 3, to be weighted by `AUX_LOSS_WEIGHT` (0.4) in the loss.
  """

  def __init__(self,
               num_classes: int,
               backbone_depth: int = 50,
               stem_type: str = "v1",
               head_channels: int = 512,
               key_channels: int = 256,
               partition_factors: Sequence[int] = (8, 8),
               dropout_rate: float = 0.1,
               activation: str = "relu",
               use_auxiliary_head: bool = True,
               aux_channels: int = 256,
               aux_dropout_rate: float = 0.1,
               use_sync_bn: bool = False,
               norm_momentum: float = 0.9,
               norm_epsilon: float = 1e-5,
               kernel_regularizer: Optional[
                   tf_keras.regularizers.Regularizer] = None,
               symmetric_padding: bool = False,
               ceil_mode_max_pool: bool = False,
               dilation_pattern: str = "uniform",
               value_use_bias: bool = True,
               align_corners: bool = False,
               input_normalization: Optional[str] = None,
               **kwargs):
    """Initializes the model.

    Args:
      num_classes: number of semantic classes.
      backbone_depth: ResNet depth, 50 or 101.
      stem_type: ResNet stem, "v0" or "v1" (deep stem).
      head_channels: ISA head width (512).
      key_channels: ISSA query/key channels (256).
      partition_factors: ISSA (P_h, P_w).
      dropout_rate: ISA head dropout before the classifier.
      activation: activation of both heads, "relu" or "leaky_relu" (0.01;
        the official code's in-place ABN).
      use_auxiliary_head: build the auxiliary FCN head on stage 3.
      aux_channels: auxiliary head width.
      aux_dropout_rate: auxiliary head dropout.
      use_sync_bn: synchronise BN across replicas.
      norm_momentum: BN momentum (Keras convention; PyTorch 0.1 == 0.9).
      norm_epsilon: BN epsilon.
      kernel_regularizer: optional regularizer of every conv kernel
        (backbone and heads).
      symmetric_padding: backbone strided convs pad symmetrically as
        PyTorch does (see `build_dilated_resnet`).
      ceil_mode_max_pool: backbone stem max pool as PyTorch's ceil mode.
      dilation_pattern: "uniform" or "first_block_halved" (openseg).
      value_use_bias: ISSA value convs with a bias (False: official code).
      align_corners: upsample the logits to the input size with
        align_corners=True (the official code) instead of half-pixel
        centres.
      input_normalization: None (inputs used as given) or "caffe_bgr"
        (RGB [0, 255] inputs reversed to BGR with the BGR mean subtracted,
        as openseg feeds its models) or "imagenet_rgb"; see
        `segnext.normalize_input`.
      **kwargs: keyword arguments of `tf_keras.Model`.
    """
    super().__init__(**kwargs)
    for name, value in (("use_auxiliary_head", use_auxiliary_head),
                        ("symmetric_padding", symmetric_padding),
                        ("ceil_mode_max_pool", ceil_mode_max_pool),
                        ("align_corners", align_corners)):
      if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {value!r}.")
    self._config_dict = {
        "num_classes": num_classes,
        "backbone_depth": backbone_depth,
        "stem_type": stem_type,
        "head_channels": head_channels,
        "key_channels": key_channels,
        "partition_factors": list(partition_factors),
        "dropout_rate": dropout_rate,
        "activation": activation,
        "use_auxiliary_head": use_auxiliary_head,
        "aux_channels": aux_channels,
        "aux_dropout_rate": aux_dropout_rate,
        "use_sync_bn": use_sync_bn,
        "norm_momentum": norm_momentum,
        "norm_epsilon": norm_epsilon,
        "kernel_regularizer": kernel_regularizer,
        "symmetric_padding": symmetric_padding,
        "ceil_mode_max_pool": ceil_mode_max_pool,
        "dilation_pattern": dilation_pattern,
        "value_use_bias": value_use_bias,
        "align_corners": align_corners,
        "input_normalization": segnext.check_input_normalization(
            input_normalization),
    }
    kernel_regularizer = tf_keras.regularizers.get(kernel_regularizer)
    norm = dict(use_sync_bn=use_sync_bn, norm_momentum=norm_momentum,
                norm_epsilon=norm_epsilon,
                kernel_regularizer=kernel_regularizer)
    self.backbone = build_dilated_resnet(
        backbone_depth, stem_type, symmetric_padding=symmetric_padding,
        ceil_mode_max_pool=ceil_mode_max_pool,
        dilation_pattern=dilation_pattern, **norm)
    self.decode_head = ISAHead(
        num_classes=num_classes, channels=head_channels,
        key_channels=key_channels, partition_factors=partition_factors,
        dropout_rate=dropout_rate, activation=activation,
        value_use_bias=value_use_bias, name="isa_head", **norm)
    self.auxiliary_head = None
    if use_auxiliary_head:
      self.auxiliary_head = FCNHead(
          num_classes=num_classes, channels=aux_channels,
          dropout_rate=aux_dropout_rate, activation=activation,
          name="aux_head", **norm)

  def build(self, input_shape):
    super().build(input_shape)
    # The auxiliary head only runs in training; create its variables now so
    # that checkpoints and optimizers see every weight from the start.
    if self.auxiliary_head is not None and not self.auxiliary_head.built:
      self.auxiliary_head(
          tf_keras.Input(self.backbone.output["c4"].shape[1:]))

  def call(self, inputs, training=None) -> Dict[str, tf.Tensor]:
    """Predicts semantic logits.

    Args:
      inputs: [batch, height, width, 3] normalised images.
      training: Python bool (None = inference); in training the auxiliary
        logits are returned too.

    Returns:
      {"semantic_logits": float32 [batch, height, width, num_classes]} and,
      in training with the auxiliary head, "aux_logits" of the same shape.
    """
    if training is not None and not isinstance(training, bool):
      raise TypeError("ISANet needs a Python bool `training` (the outputs "
                      f"differ), got {training!r}.")
    size = tf.shape(inputs)[1:3]
    features = self.backbone(
        segnext.normalize_input(inputs,
                                self._config_dict["input_normalization"]),
        training=training)
    logits = self.decode_head(features["c5"], training=training)
    outputs = {"semantic_logits": self.upsample(logits, size)}
    if training and self.auxiliary_head is not None:
      aux = self.auxiliary_head(features["c4"], training=training)
      outputs["aux_logits"] = self.upsample(aux, size)
    return outputs

  def upsample(self, logits: tf.Tensor, size) -> tf.Tensor:
    """Bilinear float32 upsampling of head logits to `size` (model's mode).

    Args:
      logits: [batch, h, w, num_classes].
      size: (height, width).

    Returns:
      float32 [batch, height, width, num_classes].
    """
    logits = tf.cast(logits, tf.float32)
    if self._config_dict["align_corners"]:
      return tf.raw_ops.ResizeBilinear(images=logits, size=size,
                                       align_corners=True,
                                       half_pixel_centers=False)
    return hamburger.resize_bilinear(logits, size)

  def get_config(self) -> Dict[str, Any]:
    config = dict(self._config_dict)
    config["kernel_regularizer"] = common.serialize_regularizer(
        config["kernel_regularizer"])
    return config

  @classmethod
  def from_config(cls, config, custom_objects=None):
    return cls(**config)


def build_isanet(num_classes: int,
                 input_size: Optional[Sequence[Optional[int]]] = None,
                 **kwargs) -> ISANet:
  """Builds an ISANet model with all variables (auxiliary head too) created.

  Args:
    num_classes: number of semantic classes.
    input_size: (height, width) or None; only used to build the variables.
    **kwargs: `ISANet` arguments (backbone_depth, stem_type, head_channels,
      key_channels, partition_factors, dropout_rate, activation,
      use_auxiliary_head, aux_channels, aux_dropout_rate, use_sync_bn,
      norm_momentum, norm_epsilon, kernel_regularizer, symmetric_padding,
      ceil_mode_max_pool, dilation_pattern, value_use_bias, align_corners,
      input_normalization).

  Returns:
    A built `ISANet`.
  """
  if isinstance(num_classes, bool) or not isinstance(
      num_classes, int) or num_classes < 1:
    raise ValueError(f"num_classes must be a positive int, got "
                     f"{num_classes!r}.")
  height, width = segnext.check_input_size(input_size)
  model = ISANet(num_classes=num_classes, **kwargs)
  model.build((None, height, width, 3))
  return model


def _register():
  for depth in (50, 101):
    registry.register_model(
        f"isanet_r{depth}", build_isanet, task="semantic",
        description=(f"ISANet: dilated ResNet-{depth} (OS8) + interlaced "
                     "sparse self-attention head + auxiliary FCN head "
                     f"(loss weight {AUX_LOSS_WEIGHT})."),
        backbone_depth=depth)


_register()
