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

from official.vision.modeling.backbones import resnet_deeplab
from official.vision.modeling.layers import nn_blocks
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
      **kwargs: keyword arguments of `tf_keras.layers.Layer`.
    """
    super().__init__(**kwargs)
    self._config_dict = {
        "num_classes": _check_positive_int("num_classes", num_classes),
        "channels": _check_positive_int("channels", channels),
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
        name="issa")
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
  """Auxiliary FCN head: conv3x3, BN, ReLU, spatial dropout, 1x1 classifier."""

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
      **kwargs: keyword arguments of `tf_keras.layers.Layer`.
    """
    super().__init__(**kwargs)
    self._config_dict = {
        "num_classes": _check_positive_int("num_classes", num_classes),
        "channels": _check_positive_int("channels", channels),
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

  def call(self, inputs, training=None):
    """Computes logits.

    Args:
      inputs: [batch, height, width, channels_in].
      training: bool; BN statistics and dropout.

    Returns:
      [batch, height, width, num_classes] logits.
    """
    x = tf.nn.relu(self.norm(self.conv(inputs), training=training))
    return self.classifier(self.dropout(x, training=training))

  def get_config(self) -> Dict[str, Any]:
    config = super().get_config()
    config.update(_serialized(self._config_dict))
    return config


def build_dilated_resnet(depth: int,
                         stem_type: str = "v1",
                         use_sync_bn: bool = False,
                         norm_momentum: float = 0.9,
                         norm_epsilon: float = 1e-5,
                         kernel_regularizer: Optional[
                             tf_keras.regularizers.Regularizer] = None
                        ) -> tf_keras.Model:
  """Model Garden's DilatedResNet at output stride 8, exposing stages 3 and 4.

  Stages 3 and 4 keep stride 8 with dilations 2 and 4.

  Args:
    depth: 50 or 101.
    stem_type: "v0" (7x7 conv) or "v1" (three 3x3 convs, the deep stem of the
      reference implementations).
    use_sync_bn: synchronise BN across replicas.
    norm_momentum: BN momentum (Keras convention).
    norm_epsilon: BN epsilon.
    kernel_regularizer: optional regularizer of the conv kernels.

  Returns:
    A functional model mapping [batch, height, width, 3] to {"c4": stage 3
    output [batch, h/8, w/8, 1024], "c5": stage 4 output [batch, h/8, w/8,
    2048]}.
  """
  if depth not in (50, 101):
    raise ValueError(f"depth must be 50 or 101, got {depth!r}.")
  if stem_type not in ("v0", "v1"):
    raise ValueError(f"stem_type must be 'v0' or 'v1', got {stem_type!r}.")
  resnet = resnet_deeplab.DilatedResNet(
      model_id=depth, output_stride=8, stem_type=stem_type,
      use_sync_bn=use_sync_bn, norm_momentum=norm_momentum,
      norm_epsilon=norm_epsilon, kernel_regularizer=kernel_regularizer)
  # DilatedResNet only returns its last stage at output stride 8; the
  # auxiliary head needs stage 3, the output of its last 1024-channel block.
  stage3 = [layer for layer in resnet.layers
            if isinstance(layer, nn_blocks.BottleneckBlock) and
            layer.output.shape[-1] == 1024]
  if not stage3:
    raise RuntimeError("Could not find the stage-3 blocks of DilatedResNet.")
  outputs = {"c4": stage3[-1].output, "c5": resnet.output["3"]}
  return tf_keras.Model(inputs=resnet.inputs, outputs=outputs,
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
      activation: ISA head activation, "relu" or "leaky_relu" (0.01).
      use_auxiliary_head: build the auxiliary FCN head on stage 3.
      aux_channels: auxiliary head width.
      aux_dropout_rate: auxiliary head dropout.
      use_sync_bn: synchronise BN across replicas.
      norm_momentum: BN momentum (Keras convention; PyTorch 0.1 == 0.9).
      norm_epsilon: BN epsilon.
      kernel_regularizer: optional regularizer of every conv kernel
        (backbone and heads).
      **kwargs: keyword arguments of `tf_keras.Model`.
    """
    super().__init__(**kwargs)
    if not isinstance(use_auxiliary_head, bool):
      raise TypeError(f"use_auxiliary_head must be a bool, got "
                      f"{use_auxiliary_head!r}.")
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
    }
    kernel_regularizer = tf_keras.regularizers.get(kernel_regularizer)
    norm = dict(use_sync_bn=use_sync_bn, norm_momentum=norm_momentum,
                norm_epsilon=norm_epsilon,
                kernel_regularizer=kernel_regularizer)
    self.backbone = build_dilated_resnet(backbone_depth, stem_type, **norm)
    self.decode_head = ISAHead(
        num_classes=num_classes, channels=head_channels,
        key_channels=key_channels, partition_factors=partition_factors,
        dropout_rate=dropout_rate, activation=activation, name="isa_head",
        **norm)
    self.auxiliary_head = None
    if use_auxiliary_head:
      self.auxiliary_head = FCNHead(
          num_classes=num_classes, channels=aux_channels,
          dropout_rate=aux_dropout_rate, name="aux_head", **norm)

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
    features = self.backbone(inputs, training=training)
    logits = self.decode_head(features["c5"], training=training)
    outputs = {"semantic_logits": hamburger.resize_bilinear(
        tf.cast(logits, tf.float32), size)}
    if training and self.auxiliary_head is not None:
      aux = self.auxiliary_head(features["c4"], training=training)
      outputs["aux_logits"] = hamburger.resize_bilinear(
          tf.cast(aux, tf.float32), size)
    return outputs

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
      norm_momentum, norm_epsilon, kernel_regularizer).

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
