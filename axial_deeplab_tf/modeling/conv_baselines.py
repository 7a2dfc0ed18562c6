"""Convolutional Panoptic-DeepLab baselines with the Axial-ResNet layout.

`build_conv_resnet_backbone` is a bottleneck ResNet whose stages have the
same block counts and block widths f (output 4f) as the Axial-ResNet of the
same depth and width multiplier, with 3x3 convolutions where Axial-ResNet
has axial attention (Model Garden's `nn_blocks.BottleneckBlock`), the
three-conv "inception" stem of Panoptic-DeepLab (the "beta" ResNets of
DeepLab; its stride-2 conv and max pool padded symmetrically, as the
official codes pad them), and output stride 16 by a dilation rate of 2 in the last stage.
Its endpoints carry the Axial-ResNet names ("res2".."res5"), so the same
Panoptic-DeepLab decoders and heads sit on top of either backbone.

`build_panoptic_deeplab_conv` wraps it in `PanopticDeepLabModel`. With
context="aspp" it is Panoptic-DeepLab (ResNet-50-beta, OS16); with
context="projection" its decoders and heads are exactly those of
Axial-DeepLab, so a comparison isolates the backbone's operator (used by the
scale stress test, gin/stress/).
"""

from typing import Optional, Sequence, Tuple

import tf_keras

from official.vision.modeling.layers import nn_blocks

from axial_deeplab_tf.layers import common
from axial_deeplab_tf.modeling import axial_deeplab
from axial_deeplab_tf.modeling.backbones import axial_resnet
from axial_deeplab_tf.modeling.registry import register_model


def build_conv_resnet_backbone(
    depth: int = 50,
    width_multiplier: float = 1.0,
    stem_channels: Sequence[int] = (64, 64, 128),
    output_stride: int = 16,
    norm_momentum: float = 0.99,
    norm_epsilon: float = 1e-3,
    use_sync_bn: bool = False,
    kernel_regularizer=None,
    input_size: Optional[Tuple[Optional[int], Optional[int]]] = None,
    name: str = "conv_resnet") -> tf_keras.Model:
  """Builds a bottleneck ResNet with the three-conv stem.

  Args:
    depth: 26, 50 or 101; the block layout of `axial_resnet.LAYOUTS`.
    width_multiplier: scales the stage widths (64, 128, 256, 512).
    stem_channels: channels of the three 3x3 stem convolutions (strides 2,
      1, 1), followed by a 3x3 stride-2 max pool.
    output_stride: 32, or 16 (the last stage keeps stride 16 and dilates its
      3x3 convolutions by 2).
    norm_momentum, norm_epsilon, use_sync_bn: batch norm settings.
    kernel_regularizer: for convolutions.
    input_size: (height, width) of the input, entries may be None.
    name: model name.

  Returns:
    A tf_keras.Model mapping normalised images [batch, h, w, 3] to a dict of
    endpoints "stem" (stride 4) and "res2".."res5", each
    [batch, h / stride, w / stride, 4f].

  Raises:
    ValueError: on an unknown depth, stride, stem or width.
  """
  if depth not in axial_resnet.LAYOUTS:
    raise ValueError(f"depth must be one of {sorted(axial_resnet.LAYOUTS)}, "
                     f"got {depth!r}.")
  if output_stride not in (16, 32):
    raise ValueError(f"output_stride must be 16 or 32, got "
                     f"{output_stride!r}.")
  if not width_multiplier > 0:
    raise ValueError(f"width_multiplier must be positive, got "
                     f"{width_multiplier!r}.")
  if len(stem_channels) != 3 or min(stem_channels) <= 0:
    raise ValueError(f"stem_channels must be 3 positive ints, got "
                     f"{stem_channels!r}.")
  height, width = input_size if input_size is not None else (None, None)
  layout = axial_resnet.LAYOUTS[depth]
  widths = [max(1, int(round(w * width_multiplier)))
            for w in axial_resnet.BASE_WIDTHS]
  norm = dict(norm_momentum=norm_momentum, norm_epsilon=norm_epsilon,
              use_sync_bn=use_sync_bn)

  inputs = tf_keras.Input(shape=(height, width, 3), name="images")
  x = inputs
  for i, (filters, strides) in enumerate(zip(stem_channels, (2, 1, 1))):
    x = common.PaddedConv2D(
        filters, 3, strides=strides, use_bias=False,
        kernel_initializer="he_normal", kernel_regularizer=kernel_regularizer,
        name=f"stem_conv{i + 1}")(x)
    x = tf_keras.layers.BatchNormalization(
        momentum=norm_momentum, epsilon=norm_epsilon,
        synchronized=use_sync_bn, name=f"stem_bn{i + 1}")(x)
    x = tf_keras.layers.ReLU(name=f"stem_relu{i + 1}")(x)
  x = common.PaddedMaxPool2D(3, strides=2, name="stem_pool")(x)
  endpoints = {"stem": x}
  for stage, (num_blocks, filters) in enumerate(zip(layout, widths)):
    strides, dilation = (1 if stage == 0 else 2), 1
    if stage == 3 and output_stride == 16:
      # DeepLab's atrous last stage: keep the resolution, widen the view.
      strides, dilation = 1, 2
    for i in range(num_blocks):
      x = nn_blocks.BottleneckBlock(
          filters=filters, strides=strides if i == 0 else 1,
          dilation_rate=dilation, use_projection=i == 0,
          kernel_initializer="he_normal",
          kernel_regularizer=kernel_regularizer,
          name=f"res{stage + 2}_block{i + 1}", **norm)(x)
    endpoints[f"res{stage + 2}"] = x
  return tf_keras.Model(inputs, endpoints, name=name)


def build_panoptic_deeplab_conv(
    num_classes: int = 133,
    input_size=None,
    depth: int = 50,
    width_multiplier: float = 1.0,
    stem_channels: Sequence[int] = (64, 64, 128),
    context: str = "aspp",
    context_channels: int = 256,
    aspp_dilation_rates: Sequence[int] = (6, 12, 18),
    semantic_channels: int = 256,
    instance_channels: int = 128,
    norm_momentum: float = 0.99,
    norm_epsilon: float = 1e-3,
    use_sync_bn: bool = False,
    kernel_regularizer=None,
    name: str = "panoptic_deeplab_conv"
) -> axial_deeplab.PanopticDeepLabModel:
  """Builds Panoptic-DeepLab on `build_conv_resnet_backbone` (OS16).

  Args:
    num_classes: semantic classes.
    input_size: unused (any input size works); kept so every zoo model takes
      it.
    depth: 26, 50 or 101.
    width_multiplier: scales the backbone stage widths.
    stem_channels: channels of the three stem convolutions.
    context: "aspp" (Panoptic-DeepLab) or "projection" (1x1 conv + BN + ReLU,
      the Axial-DeepLab decoders).
    context_channels: output channels of the context module.
    aspp_dilation_rates: ASPP rates at output stride 16.
    semantic_channels, instance_channels: decoder channels.
    norm_momentum, norm_epsilon, use_sync_bn: batch norm settings.
    kernel_regularizer: for convolutions.
    name: model name.

  Returns:
    A PanopticDeepLabModel (outputs as documented there).
  """
  del input_size
  norm = dict(norm_momentum=norm_momentum, norm_epsilon=norm_epsilon,
              use_sync_bn=use_sync_bn)
  backbone = build_conv_resnet_backbone(
      depth=depth, width_multiplier=width_multiplier,
      stem_channels=stem_channels, output_stride=16,
      kernel_regularizer=kernel_regularizer, name="backbone", **norm)
  decoder = dict(high_key="res5", low_keys=("res3", "res2"), context=context,
                 context_channels=context_channels,
                 aspp_dilation_rates=aspp_dilation_rates,
                 kernel_regularizer=kernel_regularizer, **norm)
  semantic_decoder = axial_deeplab.PanopticDeepLabDecoder(
      channels=semantic_channels, low_channels=(64, 32),
      name="semantic_decoder", **decoder)
  instance_decoder = axial_deeplab.PanopticDeepLabDecoder(
      channels=instance_channels, low_channels=(32, 16),
      name="instance_decoder", **decoder)
  model = axial_deeplab.PanopticDeepLabModel(
      backbone, semantic_decoder, instance_decoder, num_classes,
      kernel_regularizer=kernel_regularizer, name=name, **norm)
  model(tf_keras.Input((None, None, 3)))
  return model


for _depth in (26, 50):
  register_model(
      f"panoptic_deeplab_resnet{_depth}_beta", build_panoptic_deeplab_conv,
      task="panoptic",
      description=(f"Panoptic-DeepLab, bottleneck ResNet-{_depth} with the "
                   "three-conv stem (OS16, dilated last stage) + dual ASPP; "
                   "width_multiplier and context='projection' give the "
                   "matched convolutional baseline of the scale stress "
                   "test."),
      depth=_depth, width_multiplier=1.0, context="aspp", num_classes=133,
      name=f"panoptic_deeplab_resnet{_depth}_beta")
