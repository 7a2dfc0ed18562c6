"""deeplab2's Panoptic-DeepLab decoder: its ASPP, fusion blocks and branches.

Every resize is bilinear with aligned corners, as deeplab2 resizes; the
sub-layers keep deeplab2's attribute names, so a checkpoint of its trainer
maps onto them one variable for one variable (see `modeling/
deeplab2_panoptic.py` for how it differs from `decoders/panoptic_deeplab.py`).
"""

from typing import Dict, Optional, Sequence, Tuple

import tensorflow as tf
import tf_keras

from axial_deeplab_tf.layers import common
from axial_deeplab_tf.modeling.backbones import deeplab2_resnet
from axial_deeplab_tf.modeling.backbones.deeplab2_resnet import ConvBN


class _DepthwiseBN(tf_keras.layers.Layer):
  """Depthwise k x k conv ('same') + BN + ReLU."""

  def __init__(self, kernel_size: int, norm_momentum: float,
               norm_epsilon: float, kernel_regularizer=None, **kwargs):
    super().__init__(**kwargs)
    del kernel_regularizer  # deeplab2 leaves depthwise kernels unregularized.
    self._depthwise_conv = tf_keras.layers.DepthwiseConv2D(
        kernel_size, padding="same", use_bias=False, name="depthwise_conv")
    self._batch_norm = common.batch_norm(norm_momentum, norm_epsilon, False,
                                         "batch_norm", axis=3)

  def call(self, x, training=None):
    return tf.nn.relu(self._batch_norm(self._depthwise_conv(x),
                                       training=training))


class SeparableConvBN(tf_keras.layers.Layer):
  """Depthwise k x k conv + BN + ReLU, pointwise 1x1 conv + BN + ReLU."""

  def __init__(self, filters: int, kernel_size: int = 5,
               norm_momentum: float = deeplab2_resnet.NORM_MOMENTUM,
               norm_epsilon: float = deeplab2_resnet.NORM_EPSILON,
               kernel_regularizer=None, **kwargs):
    super().__init__(**kwargs)
    norm = dict(norm_momentum=norm_momentum, norm_epsilon=norm_epsilon)
    self._depthwise = _DepthwiseBN(kernel_size, name="depthwise", **norm)
    # deeplab2 does not pass weight decay to its decoder convolutions.
    del kernel_regularizer
    self._pointwise = ConvBN(filters, 1, relu=True, name="pointwise", **norm)

  def call(self, x, training=None):
    return self._pointwise(self._depthwise(x, training=training),
                           training=training)


class _Stacked(tf_keras.layers.Layer):
  """One separable conv block under the attribute deeplab2 gives it."""

  def __init__(self, filters: int, norm_momentum: float, norm_epsilon: float,
               **kwargs):
    super().__init__(**kwargs)
    self._conv1_bn_act = SeparableConvBN(
        filters, 5, norm_momentum=norm_momentum, norm_epsilon=norm_epsilon,
        name="conv1_bn_act")

  def call(self, x, training=None):
    return self._conv1_bn_act(x, training=training)


class _ASPPBranch(tf_keras.layers.Layer):
  """A wrapper holding one ConvBN as `_conv_bn_act` (atrous or pooling)."""

  def __init__(self, filters: int, kernel_size: int, rate: int, pool: bool,
               norm: Dict[str, float], **kwargs):
    super().__init__(**kwargs)
    self._pool = pool
    self.pool_size: Optional[Tuple[int, int]] = None
    self._conv_bn_act = ConvBN(filters, kernel_size, rate=rate, relu=True,
                               name="conv_bn_act", **norm)

  def call(self, x, training=None):
    if not self._pool:
      return self._conv_bn_act(x, training=training)
    if self.pool_size is None:
      pooled = tf.reduce_mean(x, axis=[1, 2], keepdims=True)
    else:
      pooled = tf.nn.avg_pool2d(x, self.pool_size, strides=self.pool_size,
                                padding="VALID")
    y = self._conv_bn_act(pooled, training=training)
    return common.resize_bilinear(y, tf.shape(x)[1:3], align_corners=True)


class ASPP(tf_keras.layers.Layer):
  """deeplab2's ASPP (or its 1x1 projection alone)."""

  def __init__(self, filters: int, atrous_rates: Sequence[int],
               only_1x1_proj_conv: bool = False,
               norm_momentum: float = deeplab2_resnet.NORM_MOMENTUM,
               norm_epsilon: float = deeplab2_resnet.NORM_EPSILON, **kwargs):
    super().__init__(**kwargs)
    norm = dict(norm_momentum=norm_momentum, norm_epsilon=norm_epsilon)
    if not only_1x1_proj_conv and len(atrous_rates) != 3:
      raise ValueError(f"atrous_rates must have 3 entries, got "
                       f"{list(atrous_rates)}.")
    self._only_proj = only_1x1_proj_conv
    self._proj_conv_bn_act = ConvBN(filters, 1, relu=True,
                                    name="proj_conv_bn_act", **norm)
    if not only_1x1_proj_conv:
      self._conv_bn_act = ConvBN(filters, 1, relu=True, name="conv_bn_act",
                                 **norm)
      for i, rate in enumerate(atrous_rates):
        setattr(self, f"_aspp_conv{i + 1}", _ASPPBranch(
            filters, 3, rate, False, norm, name=f"aspp_conv{i + 1}"))
      self._aspp_pool = _ASPPBranch(filters, 1, 1, True, norm,
                                    name="aspp_pool")
      self._proj_drop = tf_keras.layers.Dropout(0.1)

  def set_pool_size(self, pool_size: Optional[Tuple[int, int]]) -> None:
    """None: global average; (h, w): tiled average pooling (deeplab2)."""
    if not self._only_proj:
      self._aspp_pool.pool_size = None if pool_size is None else tuple(
          int(p) for p in pool_size)

  def call(self, x, training=None):
    if self._only_proj:
      return self._proj_conv_bn_act(x, training=training)
    branches = [self._conv_bn_act(x, training=training),
                self._aspp_conv1(x, training=training),
                self._aspp_conv2(x, training=training),
                self._aspp_conv3(x, training=training),
                self._aspp_pool(x, training=training)]
    y = self._proj_conv_bn_act(tf.concat(branches, axis=3), training=training)
    return self._proj_drop(y, training=training)


class SingleDecoder(tf_keras.layers.Layer):
  """ASPP on the high-level feature, then per low-level feature: 1x1
  projection + BN + ReLU, upsample (aligned corners), concatenate, fuse."""

  def __init__(self, high_key: str, low_keys: Sequence[str],
               low_channels: Sequence[int], aspp_channels: int,
               decoder_channels: int, atrous_rates: Sequence[int],
               aspp_use_only_1x1_proj_conv: bool = False,
               norm_momentum: float = deeplab2_resnet.NORM_MOMENTUM,
               norm_epsilon: float = deeplab2_resnet.NORM_EPSILON, **kwargs):
    super().__init__(**kwargs)
    if len(low_keys) != len(low_channels):
      raise ValueError(f"low_keys {list(low_keys)} and low_channels "
                       f"{list(low_channels)} must have the same length.")
    norm = dict(norm_momentum=norm_momentum, norm_epsilon=norm_epsilon)
    self._high_key = high_key
    self._low_keys = list(low_keys)
    self._aspp = ASPP(aspp_channels, atrous_rates,
                      aspp_use_only_1x1_proj_conv, name="aspp", **norm)
    for i, channels in enumerate(low_channels):
      setattr(self, f"_low_level_conv{i + 1}", ConvBN(
          channels, 1, relu=True, name=f"low_level_conv{i + 1}", **norm))
      setattr(self, f"_fusion_conv{i + 1}", _Stacked(
          decoder_channels, name=f"fusion_conv{i + 1}", **norm))

  def set_pool_size(self, pool_size) -> None:
    self._aspp.set_pool_size(pool_size)

  def call(self, endpoints, training=None):
    x = self._aspp(endpoints[self._high_key], training=training)
    for i, key in enumerate(self._low_keys):
      low = getattr(self, f"_low_level_conv{i + 1}")(endpoints[key],
                                                      training=training)
      x = common.resize_bilinear(x, tf.shape(low)[1:3], align_corners=True)
      x = getattr(self, f"_fusion_conv{i + 1}")(tf.concat([x, low], axis=3),
                                                training=training)
    return x
