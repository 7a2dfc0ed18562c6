"""The Panoptic-DeepLab decoder (Cheng et al., CVPR 2020) and its fusion block.

One decoder branch takes the stride-16 backbone feature through a context
module (Model Garden's ASPP, or the 1x1 projection of Axial-DeepLab) and
upsamples it to stride 4, fusing the stride-8 and stride-4 features with 5x5
depthwise-separable convolutions (or, for the Axial-DeepLab appendix-B
decoder, axial-attention blocks).
"""

from typing import Sequence

import tensorflow as tf
import tf_keras

from official.vision.modeling.decoders import aspp
from official.vision.modeling.layers import deeplab as deeplab_layers

from axial_deeplab_tf.layers import common
from axial_deeplab_tf.layers.axial_attention import AxialBlock


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
      x = tf.cast(common.resize_bilinear(x, tf.shape(low)[1:3]), low.dtype)
      x = fuse(tf.concat([x, low], axis=-1), training=training)
    return x

