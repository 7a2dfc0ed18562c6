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
from official.vision.modeling.decoders import aspp
from official.vision.modeling.layers import deeplab as deeplab_layers

from axial_deeplab_tf.layers import common
from axial_deeplab_tf.layers.axial_attention import AxialBlock
from axial_deeplab_tf.modeling.backbones import axial_resnet
from axial_deeplab_tf.modeling.registry import register_model

OUTPUT_KEYS = ("semantic_logits", "center_heatmap", "offset_map")


def _bn(config, name):
  return common.batch_norm(config["norm_momentum"], config["norm_epsilon"],
                           config["use_sync_bn"], name)


class _ConfiguredLayer(tf_keras.layers.Layer):
  """A layer whose constructor arguments are the dict `self._config`."""

  def get_config(self):
    config = super().get_config()
    config.update(self._config)
    config["kernel_regularizer"] = common.serialize_regularizer(
        self._config["kernel_regularizer"])
    return config


@tf_keras.utils.register_keras_serializable(package="AxialDeepLab")
class SeparableConvBlock(_ConfiguredLayer):
  """Depthwise k x k conv + BN + ReLU, pointwise 1x1 conv + BN + ReLU."""

  def __init__(self, filters: int, kernel_size: int = 5,
               norm_momentum: float = 0.99, norm_epsilon: float = 1e-3,
               use_sync_bn: bool = False, kernel_regularizer=None, **kwargs):
    super().__init__(**kwargs)
    self._config = dict(filters=filters, kernel_size=kernel_size,
                        norm_momentum=norm_momentum,
                        norm_epsilon=norm_epsilon, use_sync_bn=use_sync_bn,
                        kernel_regularizer=kernel_regularizer)
    self._depthwise = tf_keras.layers.DepthwiseConv2D(
        kernel_size, padding="same", use_bias=False,
        depthwise_regularizer=kernel_regularizer, name="depthwise")
    self._bn1 = _bn(self._config, "depthwise_bn")
    self._pointwise = tf_keras.layers.Conv2D(
        filters, 1, use_bias=False, kernel_initializer="he_normal",
        kernel_regularizer=kernel_regularizer, name="pointwise")
    self._bn2 = _bn(self._config, "pointwise_bn")

  def call(self, inputs, training=None):
    x = tf.nn.relu(self._bn1(self._depthwise(inputs), training=training))
    return tf.nn.relu(self._bn2(self._pointwise(x), training=training))



class _NamedSpatialPyramidPooling(deeplab_layers.SpatialPyramidPooling):
  """Model Garden's ASPP core with every sub-layer named after its role.

  Model Garden builds the branches as Sequentials of auto-named layers
  (`conv2d`, `batch_normalization_1`, ...) whose variables ignore the
  enclosing name scopes, so two ASPPs in one model (or an ASPP and a
  functional backbone) repeat variable names. Here each layer is renamed,
  before it creates variables, to `<prefix>_<branch>_<kind>`: the math,
  the parameters and the object graph (hence TF checkpoints) stay Model
  Garden's.
  """

  def __init__(self, prefix: str, **kwargs):
    super().__init__(**kwargs)
    self._prefix = prefix

  def build(self, input_shape):
    super().build(input_shape)
    branches = [("conv1x1", self.aspp_layers[0])]
    branches += [(f"atrous{i + 1}", s)
                 for i, s in enumerate(self.aspp_layers[1:-1])]
    branches += [("pool", self.aspp_layers[-1]),
                 ("projection", self.projection)]
    for branch, sequential in branches:
      self._rename(f"{self._prefix}_{branch}", sequential)

  def _rename(self, prefix, sequential):
    sequential._name = prefix  # pylint: disable=protected-access
    kinds = {}
    for layer in sequential.layers:
      if isinstance(layer, tf_keras.Sequential):
        self._rename(prefix, layer)
        continue
      kind = {tf_keras.layers.Conv2D: "conv",
              tf_keras.layers.DepthwiseConv2D: "depthwise",
              tf_keras.layers.BatchNormalization: "bn"}.get(
                  type(layer), type(layer).__name__.lower())
      count = kinds[kind] = kinds.get(kind, 0) + 1
      layer._name = (f"{prefix}_{kind}" if count == 1 else  # pylint: disable=protected-access
                     f"{prefix}_{kind}{count}")


class _NamedASPP(aspp.ASPP):
  """Model Garden's ASPP decoder whose sub-layers carry `prefix` names."""

  def __init__(self, prefix: str, **kwargs):
    super().__init__(**kwargs)
    self._aspp_layer = lambda **kw: _NamedSpatialPyramidPooling(prefix, **kw)


def _resize(x, size):
  return tf.image.resize(x, size, method="bilinear")


@tf_keras.utils.register_keras_serializable(package="AxialDeepLab")
class PanopticDeepLabDecoder(_ConfiguredLayer):
  """One Panoptic-DeepLab decoder branch.

  Takes the stride-16 feature (through ASPP or a 1x1 projection) and, for the
  stride-8 and stride-4 features in turn: projects the low-level feature (1x1
  conv + BN + ReLU), upsamples the current feature to its size, concatenates
  and fuses (5x5 depthwise-separable conv, or an axial-attention block).
  Inputs: a dict of backbone endpoints. Output: [batch, h/4, w/4, channels].
  """

  def __init__(self,
               high_key: str,
               low_keys: Sequence[str],
               channels: int = 256,
               low_channels: Sequence[int] = (64, 32),
               context: str = "projection",
               context_channels: int = 256,
               aspp_dilation_rates: Sequence[int] = (6, 12, 18),
               fusion: str = "separable_conv",
               fusion_span: int = 65,
               num_heads: int = 8,
               norm_momentum: float = 0.99,
               norm_epsilon: float = 1e-3,
               use_sync_bn: bool = False,
               kernel_regularizer=None,
               **kwargs):
    """Creates the decoder.

    Args:
      high_key: endpoint of the stride-16 feature.
      low_keys: endpoints of the stride-8 and stride-4 features.
      channels: decoder channels.
      low_channels: projection channels of each low-level feature.
      context: "projection" (1x1 conv + BN + ReLU, Axial-DeepLab) or "aspp"
        (Panoptic-DeepLab).
      context_channels: output channels of the context module.
      aspp_dilation_rates: ASPP rates at output stride 16.
      fusion: "separable_conv" or "axial" (appendix B axial decoder).
      fusion_span: span of the axial fusion blocks.
      num_heads: heads of the axial fusion blocks.
      norm_momentum, norm_epsilon, use_sync_bn: batch norm settings.
      kernel_regularizer: for convolutions.
      **kwargs: layer arguments.
    """
    super().__init__(**kwargs)
    if len(low_keys) != len(low_channels):
      raise ValueError(f"low_keys {list(low_keys)} and low_channels "
                       f"{list(low_channels)} must have the same length.")
    if context not in ("projection", "aspp"):
      raise ValueError(f"context must be 'projection' or 'aspp', got "
                       f"{context!r}.")
    if fusion not in ("separable_conv", "axial"):
      raise ValueError(f"fusion must be 'separable_conv' or 'axial', got "
                       f"{fusion!r}.")
    if fusion == "axial" and (channels % 4 or (channels // 4) % num_heads):
      raise ValueError(f"axial fusion needs channels divisible by 4 * "
                       f"num_heads = {4 * num_heads}, got channels={channels}.")
    self._config = dict(
        high_key=high_key, low_keys=list(low_keys), channels=channels,
        low_channels=list(low_channels), context=context,
        context_channels=context_channels,
        aspp_dilation_rates=list(aspp_dilation_rates), fusion=fusion,
        fusion_span=fusion_span, num_heads=num_heads,
        norm_momentum=norm_momentum, norm_epsilon=norm_epsilon,
        use_sync_bn=use_sync_bn, kernel_regularizer=kernel_regularizer)
    conv = dict(use_bias=False, kernel_initializer="he_normal",
                kernel_regularizer=kernel_regularizer)
    if context == "aspp":
      self._aspp = _NamedASPP(
          prefix=f"{self.name}_aspp", level=4, dilation_rates=list(aspp_dilation_rates),
          num_filters=context_channels, use_sync_bn=use_sync_bn,
          norm_momentum=norm_momentum, norm_epsilon=norm_epsilon,
          kernel_regularizer=kernel_regularizer, output_tensor=True,
          name="aspp")
    else:
      self._context_conv = tf_keras.layers.Conv2D(
          context_channels, 1, name="context_conv", **conv)
      self._context_bn = _bn(self._config, "context_bn")
    self._low_convs, self._low_bns, self._fuse = [], [], []
    for i, low in enumerate(low_channels):
      self._low_convs.append(
          tf_keras.layers.Conv2D(low, 1, name=f"low{i}_conv", **conv))
      self._low_bns.append(_bn(self._config, f"low{i}_bn"))
      if fusion == "separable_conv":
        self._fuse.append(SeparableConvBlock(
            channels, 5, norm_momentum=norm_momentum,
            norm_epsilon=norm_epsilon, use_sync_bn=use_sync_bn,
            kernel_regularizer=kernel_regularizer, name=f"fuse{i}"))
      else:
        # Axial block with 4f = channels outputs.
        self._fuse.append(AxialBlock(
            filters=channels // 4, span=fusion_span, num_heads=num_heads,
            norm_momentum=norm_momentum, norm_epsilon=norm_epsilon,
            use_sync_bn=use_sync_bn, kernel_regularizer=kernel_regularizer,
            name=f"fuse{i}"))

  def call(self, endpoints, training=None):
    c = self._config
    high = endpoints[c["high_key"]]
    if c["context"] == "aspp":
      x = self._aspp({"4": high}, training=training)
    else:
      x = tf.nn.relu(self._context_bn(self._context_conv(high),
                                      training=training))
    for key, conv, bn, fuse in zip(c["low_keys"], self._low_convs,
                                   self._low_bns, self._fuse):
      low = endpoints[key]
      low = tf.nn.relu(bn(conv(low), training=training))
      x = tf.cast(_resize(x, tf.shape(low)[1:3]), low.dtype)
      x = fuse(tf.concat([x, low], axis=-1), training=training)
    return x



@tf_keras.utils.register_keras_serializable(package="AxialDeepLab")
class PredictionHead(_ConfiguredLayer):
  """5x5 depthwise-separable conv then a 1x1 conv with bias."""

  def __init__(self, head_channels: int, output_channels: int,
               norm_momentum: float = 0.99, norm_epsilon: float = 1e-3,
               use_sync_bn: bool = False, kernel_regularizer=None, **kwargs):
    super().__init__(**kwargs)
    self._config = dict(head_channels=head_channels,
                        output_channels=output_channels,
                        norm_momentum=norm_momentum,
                        norm_epsilon=norm_epsilon, use_sync_bn=use_sync_bn,
                        kernel_regularizer=kernel_regularizer)
    self._conv = SeparableConvBlock(
        head_channels, 5, norm_momentum=norm_momentum,
        norm_epsilon=norm_epsilon, use_sync_bn=use_sync_bn,
        kernel_regularizer=kernel_regularizer, name="separable")
    self._classifier = tf_keras.layers.Conv2D(
        output_channels, 1, use_bias=True,
        kernel_initializer=tf_keras.initializers.TruncatedNormal(stddev=0.01),
        kernel_regularizer=kernel_regularizer, name="classifier")

  def call(self, inputs, training=None):
    return self._classifier(self._conv(inputs, training=training))



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
        "semantic_logits": _resize(tf.cast(semantic, tf.float32), size),
        "center_heatmap": _resize(tf.cast(center, tf.float32), size),
        "offset_map": _resize(tf.cast(offset, tf.float32), size) *
                      tf.reshape(scale, [1, 1, 1, 2]),
    }
    return outputs


def _assemble(backbone: tf_keras.Model, num_classes: int,
              semantic_channels: int, instance_channels: int,
              decoder: Dict[str, Any], *, kernel_regularizer, name: str,
              norm_momentum: float, norm_epsilon: float, use_sync_bn: bool,
              axial_fusion_span: Optional[int] = None
             ) -> PanopticDeepLabModel:
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
  return _assemble(
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
  return _assemble(
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
