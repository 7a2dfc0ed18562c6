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

from typing import Sequence

from axial_deeplab_tf.modeling import axial_deeplab
from axial_deeplab_tf.modeling.backbones.conv_resnet import build_conv_resnet_backbone
from axial_deeplab_tf.modeling.registry import register_model


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
  return axial_deeplab.assemble_panoptic_deeplab(
      backbone, num_classes, semantic_channels, instance_channels,
      decoder=dict(high_key="res5", low_keys=("res3", "res2"),
                   context=context, context_channels=context_channels,
                   aspp_dilation_rates=aspp_dilation_rates),
      kernel_regularizer=kernel_regularizer, name=name, **norm)


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
