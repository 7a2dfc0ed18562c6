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

from axial_deeplab_tf.layers import common
from axial_deeplab_tf.modeling import model_inputs
from axial_deeplab_tf.modeling import registry
from axial_deeplab_tf.modeling.backbones.dilated_resnet import build_dilated_resnet
from axial_deeplab_tf.modeling.backbones.dilated_resnet import CeilModeMaxPool2D  # pylint: disable=unused-import
from axial_deeplab_tf.modeling.backbones.dilated_resnet import ResNetBottleneck  # pylint: disable=unused-import
from axial_deeplab_tf.modeling.backbones.dilated_resnet import RESNET_DEPTHS  # pylint: disable=unused-import
from axial_deeplab_tf.modeling.heads.isanet import FCNHead
from axial_deeplab_tf.modeling.heads.isanet import ISAHead

# Weight of the auxiliary FCN head's cross-entropy in the training loss.
AUX_LOSS_WEIGHT = 0.4


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
        `model_inputs.normalize_input`.
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
        "input_normalization": model_inputs.check_input_normalization(
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
        model_inputs.normalize_input(inputs,
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
    return common.resize_bilinear(
        tf.cast(logits, tf.float32), size,
        align_corners=self._config_dict["align_corners"])

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
  return model_inputs.build_with_input_size(ISANet, num_classes, input_size,
                                         **kwargs)


def _register():
  for depth in (50, 101):
    registry.register_model(
        f"isanet_r{depth}", build_isanet, task="semantic",
        description=(f"ISANet: dilated ResNet-{depth} (OS8) + interlaced "
                     "sparse self-attention head + auxiliary FCN head "
                     f"(loss weight {AUX_LOSS_WEIGHT})."),
        backbone_depth=depth)


_register()
