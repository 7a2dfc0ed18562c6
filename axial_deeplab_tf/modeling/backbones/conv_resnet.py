"""A bottleneck ResNet with the Axial-ResNet layout (the convolutional baseline).

Same block counts and block widths f (output 4f) as the Axial-ResNet of the
same depth and width multiplier, with 3x3 convolutions where Axial-ResNet has
axial attention (Model Garden's `nn_blocks.BottleneckBlock`), the three-conv
"inception" stem (the "beta" ResNets of DeepLab; its stride-2 conv and max
pool padded symmetrically, as the official codes pad them), and output
stride 16 by a dilation rate of 2 in the last stage. Its endpoints carry the
Axial-ResNet names ("res2".."res5").
"""

from typing import Optional, Sequence, Tuple

import tf_keras

from official.vision.modeling.layers import nn_blocks

from axial_deeplab_tf.layers import common
from axial_deeplab_tf.modeling.backbones import axial_resnet


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
    x = common.batch_norm(norm_momentum, norm_epsilon, use_sync_bn,
                          f"stem_bn{i + 1}")(x)
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

