"""Axial-DeepLab and Panoptic-DeepLab panoptic segmentation models.

Both follow Panoptic-DeepLab (Cheng et al., CVPR 2020): a backbone at output
stride 16, dual decoders (semantic: 256 channels with low-level projections
64/32; instance: 128 channels with projections 32/16) that upsample to
stride 4 by fusing the stride-8 and stride-4 backbone features with 5x5
depthwise-separable convolutions, and three heads (semantic logits, center
heatmap, center offsets). All outputs are bilinearly resized to the input
size; offsets are rescaled by the resize ratio.

Axial-DeepLab (Wang et al., ECCV 2020, section 4.2) uses an Axial-ResNet with
the three-conv "inception" stem, span 65 in every axial block, output stride
16 and a 1x1 conv + BN + ReLU where Panoptic-DeepLab has ASPP. Its
axial-decoder variant (appendix B) replaces the dual decoders by one decoder
that fuses with an axial-attention block at each upsampling stage.
"""

import contextlib
from typing import Any, Dict, Optional, Sequence
from unittest import mock

import tensorflow as tf
import tf_keras

from official.vision.modeling.backbones import resnet_deeplab

from axial_deeplab_tf.layers import common
from axial_deeplab_tf.modeling.backbones import axial_resnet
# The decoder and head live in decoders/ and heads/; their names stay
# importable from here.
from axial_deeplab_tf.modeling.decoders.panoptic_deeplab import _NamedASPP  # pylint: disable=unused-import,protected-access
from axial_deeplab_tf.modeling.decoders.panoptic_deeplab import _NamedSpatialPyramidPooling  # pylint: disable=unused-import,protected-access
from axial_deeplab_tf.modeling.decoders.panoptic_deeplab import PanopticDeepLabDecoder
from axial_deeplab_tf.modeling.decoders.panoptic_deeplab import SeparableConvBlock  # pylint: disable=unused-import
from axial_deeplab_tf.modeling.heads.panoptic_deeplab import PredictionHead
from axial_deeplab_tf.modeling.registry import register_model

OUTPUT_KEYS = ("semantic_logits", "center_heatmap", "offset_map")


@tf_keras.utils.register_keras_serializable(package="AxialDeepLab")
class PanopticDeepLabModel(tf_keras.Model):
  """Backbone + decoders + semantic / center / offset heads.

  Input: [batch, h, w, 3] images in [0, 255] (normalised inside as
  x / 127.5 - 1). Output dict at input resolution: `semantic_logits`
  [batch, h, w, num_classes], `center_heatmap` [batch, h, w, 1] (raw, no
  sigmoid), `offset_map` [batch, h, w, 2] ordered (dy, dx) in pixels of the
  input, pointing from each pixel to its instance center.
  """

  def __init__(self, backbone: tf_keras.Model, semantic_decoder,
               instance_decoder, num_classes: int,
               semantic_head_channels: int = 256,
               instance_head_channels: int = 32,
               norm_momentum: float = 0.99, norm_epsilon: float = 1e-3,
               use_sync_bn: bool = False, kernel_regularizer=None, **kwargs):
    super().__init__(**kwargs)
    if not isinstance(num_classes, int) or num_classes <= 0:
      raise ValueError(f"num_classes must be a positive int, got "
                       f"{num_classes!r}.")
    self.backbone = backbone
    self.semantic_decoder = semantic_decoder
    # None: the heads share the semantic decoder (axial-decoder variant).
    self.instance_decoder = instance_decoder
    self._num_classes = num_classes
    head = dict(norm_momentum=norm_momentum, norm_epsilon=norm_epsilon,
                use_sync_bn=use_sync_bn, kernel_regularizer=kernel_regularizer)
    self.semantic_head = PredictionHead(semantic_head_channels, num_classes,
                                        name="semantic_head", **head)
    self.center_head = PredictionHead(instance_head_channels, 1,
                                      name="center_head", **head)
    self.offset_head = PredictionHead(instance_head_channels, 2,
                                      name="offset_head", **head)

  @property
  def num_classes(self) -> int:
    return self._num_classes

  @property
  def checkpoint_items(self) -> Dict[str, tf.Module]:
    return {"backbone": self.backbone}

  def call(self, images, training=None):
    if images.shape.rank != 4:
      raise ValueError(f"images must be [batch, height, width, 3], got shape "
                       f"{images.shape}.")
    size = tf.shape(images)[1:3]
    x = tf.cast(images, self.compute_dtype) / 127.5 - 1.0
    endpoints = self.backbone(x, training=training)
    semantic_features = self.semantic_decoder(endpoints, training=training)
    if self.instance_decoder is None:
      instance_features = semantic_features
    else:
      instance_features = self.instance_decoder(endpoints, training=training)
    semantic = self.semantic_head(semantic_features, training=training)
    center = self.center_head(instance_features, training=training)
    offset = self.offset_head(instance_features, training=training)
    feature_size = tf.shape(offset)[1:3]
    scale = tf.cast(size, tf.float32) / tf.cast(feature_size, tf.float32)
    outputs = {
        "semantic_logits": common.resize_bilinear(tf.cast(semantic, tf.float32), size),
        "center_heatmap": common.resize_bilinear(tf.cast(center, tf.float32), size),
        "offset_map": common.resize_bilinear(tf.cast(offset, tf.float32), size) *
                      tf.reshape(scale, [1, 1, 1, 2]),
    }
    return outputs


def assemble_panoptic_deeplab(
    backbone: tf_keras.Model, num_classes: int, semantic_channels: int,
    instance_channels: int, decoder: Dict[str, Any], *, kernel_regularizer,
    name: str, norm_momentum: float, norm_epsilon: float, use_sync_bn: bool,
    axial_fusion_span: Optional[int] = None) -> PanopticDeepLabModel:
  """Adds Panoptic-DeepLab decoders and heads to a backbone and builds it.

  Args:
    backbone: model returning a dict of endpoints.
    num_classes: semantic classes.
    semantic_channels, instance_channels: decoder channels.
    decoder: PanopticDeepLabDecoder arguments naming the endpoints and the
      context module (high_key, low_keys, context, context_channels).
    kernel_regularizer: for convolutions.
    name: model name.
    norm_momentum, norm_epsilon, use_sync_bn: batch norm settings.
    axial_fusion_span: None for the dual decoders (semantic low-level
      projections 64/32, instance 32/16); an int for the single appendix-B
      decoder whose fusion blocks are axial with this span.

  Returns:
    The PanopticDeepLabModel, built for [batch, None, None, 3] inputs.
  """
  norm = dict(norm_momentum=norm_momentum, norm_epsilon=norm_epsilon,
              use_sync_bn=use_sync_bn)
  decoder = dict(decoder, kernel_regularizer=kernel_regularizer, **norm)
  if axial_fusion_span is not None:
    semantic_decoder = PanopticDeepLabDecoder(
        channels=semantic_channels, low_channels=(64, 32), fusion="axial",
        fusion_span=axial_fusion_span, name="decoder", **decoder)
    instance_decoder = None
  else:
    semantic_decoder = PanopticDeepLabDecoder(
        channels=semantic_channels, low_channels=(64, 32),
        name="semantic_decoder", **decoder)
    instance_decoder = PanopticDeepLabDecoder(
        channels=instance_channels, low_channels=(32, 16),
        name="instance_decoder", **decoder)
  model = PanopticDeepLabModel(backbone, semantic_decoder, instance_decoder,
                               num_classes,
                               kernel_regularizer=kernel_regularizer,
                               name=name, **norm)
  model(tf_keras.Input((None, None, 3)))
  return model


def build_axial_deeplab(num_classes: int = 133,
                        input_size=None,
                        width_multiplier: float = 1.0,
                        depth: int = 50,
                        span: int = 65,
                        axial_decoder: bool = False,
                        semantic_channels: int = 256,
                        instance_channels: int = 128,
                        context_channels: int = 256,
                        stem_channels: Sequence[int] = (64, 64, 128),
                        drop_path_rate: float = 0.0,
                        norm_momentum: float = 0.99,
                        norm_epsilon: float = 1e-3,
                        use_sync_bn: bool = False,
                        recompute_grad: bool = False,
                        kernel_regularizer=None,
                        name: str = "axial_deeplab") -> PanopticDeepLabModel:
  """Builds Axial-DeepLab.

  Args:
    num_classes: semantic classes.
    input_size: unused by the local-span model (any size works); kept so
      every zoo model takes it.
    width_multiplier: S 0.5, M 0.75, L 1.0, XL 2.0.
    depth: Axial-ResNet depth (50).
    span: local span of every axial block.
    axial_decoder: the appendix-B single axial decoder.
    semantic_channels, instance_channels: decoder channels.
    context_channels: channels of the 1x1 projection replacing ASPP.
    stem_channels: channels of the three stem convolutions.
    drop_path_rate: final stochastic-depth rate of the backbone.
    norm_momentum, norm_epsilon, use_sync_bn: batch norm settings.
    recompute_grad: recompute attention maps in the backward pass.
    kernel_regularizer: for convolutions.
    name: model name.

  Returns:
    A PanopticDeepLabModel.
  """
  del input_size
  norm = dict(norm_momentum=norm_momentum, norm_epsilon=norm_epsilon,
              use_sync_bn=use_sync_bn)
  backbone = axial_resnet.build_axial_resnet_backbone(
      input_size=None, depth=depth, width_multiplier=width_multiplier,
      stem="inception", stem_channels=stem_channels, span=span,
      output_stride=16,
      drop_path_rate=drop_path_rate, recompute_grad=recompute_grad,
      kernel_regularizer=kernel_regularizer, name="backbone", **norm)
  return assemble_panoptic_deeplab(
      backbone, num_classes, semantic_channels, instance_channels,
      decoder=dict(high_key="res5", low_keys=("res3", "res2"),
                   context="projection", context_channels=context_channels),
      axial_fusion_span=span if axial_decoder else None,
      kernel_regularizer=kernel_regularizer, name=name, **norm)


class _SymmetricStemLayers:
  """`tf_keras.layers` whose strided 'same' Conv2D / MaxPool2D pad symmetrically.

  Model Garden's DilatedResNet builds its stem from the module-level alias
  `layers`; while it is swapped for this namespace (only inside
  `_symmetric_stem`), its stride-2 stem conv and max pool become
  `PaddedConv2D` / `PaddedMaxPool2D`: same variables, the official codes'
  padding. Everything else is tf_keras.layers itself.
  """

  def __getattr__(self, name):
    return getattr(tf_keras.layers, name)

  @staticmethod
  def _strided_same(kwargs) -> bool:
    strides = kwargs.get("strides", 1)
    strided = any(s > 1 for s in strides) if isinstance(
        strides, (list, tuple)) else strides > 1
    return strided and kwargs.get("padding") == "same"

  def Conv2D(self, *args, **kwargs):  # pylint: disable=invalid-name
    if self._strided_same(kwargs):
      kwargs.pop("padding")
      return common.PaddedConv2D(*args, **kwargs)
    return tf_keras.layers.Conv2D(*args, **kwargs)

  def MaxPool2D(self, *args, **kwargs):  # pylint: disable=invalid-name
    if self._strided_same(kwargs):
      kwargs.pop("padding")
      return common.PaddedMaxPool2D(*args, **kwargs)
    return tf_keras.layers.MaxPool2D(*args, **kwargs)


@contextlib.contextmanager
def _symmetric_stem():
  with mock.patch.object(resnet_deeplab, "layers", _SymmetricStemLayers()):
    yield


def build_panoptic_deeplab_resnet(num_classes: int = 133,
                                  input_size=None,
                                  model_id: int = 50,
                                  semantic_channels: int = 256,
                                  instance_channels: int = 128,
                                  aspp_channels: int = 256,
                                  norm_momentum: float = 0.99,
                                  norm_epsilon: float = 1e-3,
                                  use_sync_bn: bool = False,
                                  kernel_regularizer=None,
                                  name: str = "panoptic_deeplab"):
  """Builds Panoptic-DeepLab with a dilated ResNet (output stride 16) + ASPP.

  The backbone is Model Garden's DilatedResNet with the three-conv stem,
  whose stride-2 conv and max pool pad symmetrically as the official codes
  do (the strided 3x3 convs inside its bottleneck blocks keep TF's 'same').
  """
  del input_size
  norm = dict(norm_momentum=norm_momentum, norm_epsilon=norm_epsilon,
              use_sync_bn=use_sync_bn)
  with _symmetric_stem():
    backbone = resnet_deeplab.DilatedResNet(
        model_id=model_id, output_stride=16, stem_type="v1",
        kernel_regularizer=kernel_regularizer, **norm)
  return assemble_panoptic_deeplab(
      backbone, num_classes, semantic_channels, instance_channels,
      decoder=dict(high_key="4", low_keys=("3", "2"), context="aspp",
                   context_channels=aspp_channels),
      kernel_regularizer=kernel_regularizer, name=name, **norm)


_SIZES = {"s": 0.5, "m": 0.75, "l": 1.0, "xl": 2.0}
for _size, _mult in _SIZES.items():
  register_model(
      f"axial_deeplab_{_size}", build_axial_deeplab, task="panoptic",
      description=(f"Axial-DeepLab-{_size.upper()}: Axial-ResNet-50 "
                   f"(x{_mult}), span 65, output stride 16, dual decoders."),
      width_multiplier=_mult, num_classes=133, name=f"axial_deeplab_{_size}")
register_model(
    "axial_deeplab_l_axial_decoder", build_axial_deeplab, task="panoptic",
    description="Axial-DeepLab-L with the single axial decoder (appendix B).",
    width_multiplier=1.0, axial_decoder=True, num_classes=133,
    name="axial_deeplab_l_axial_decoder")
register_model(
    "panoptic_deeplab_r50", build_panoptic_deeplab_resnet, task="panoptic",
    description="Panoptic-DeepLab, dilated ResNet-50 (OS16) + dual ASPP.",
    model_id=50, num_classes=133, name="panoptic_deeplab_r50")
