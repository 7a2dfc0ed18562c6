"""SegNeXt's decoder head: multi-level features, squeeze, Hamburger, align.

Guo et al., "SegNeXt: Rethinking Convolutional Attention Design for Semantic
Segmentation", NeurIPS 2022. The Hamburger (NMF) itself is a layer,
`layers/hamburger.py`.
"""

from typing import Any, Dict, Optional, Sequence

import tensorflow as tf
import tf_keras

from official.modeling import tf_utils

from axial_deeplab_tf.layers import common
from axial_deeplab_tf.layers import msca
from axial_deeplab_tf.layers.common import resize_bilinear
from axial_deeplab_tf.layers.hamburger import _check_positive_int  # pylint: disable=protected-access
from axial_deeplab_tf.layers.hamburger import _group_norm  # pylint: disable=protected-access
from axial_deeplab_tf.layers.hamburger import Hamburger


@tf_keras.utils.register_keras_serializable(package="AxialDeepLab")
class LightHamHead(common.RejectKeras3Tensors,
                   common.ConvLayerMixin, tf_keras.layers.Layer):
  """SegNeXt decoder: concat multi-level features, squeeze, Hamburger, align.

  Inputs are resized to the first input's size (bilinear, half-pixel) and
  concatenated; squeeze = 1x1 conv + GN + ReLU to ham_channels; Hamburger;
  align = 1x1 conv + GN + ReLU to `channels`; spatial dropout; 1x1
  classifier (bias, N(0, 0.01) init). Logits are at the first input's
  resolution (stride 8 in SegNeXt).
  """

  def __init__(self,
               num_classes: int,
               channels: int = 256,
               ham_channels: int = 256,
               rank: int = 64,
               num_channel_groups: int = 1,
               train_steps: int = 6,
               eval_steps: int = 7,
               inv_t: float = 1.0,
               one_step_gradient: bool = True,
               seed: Optional[int] = None,
               dropout_rate: float = 0.1,
               norm_groups: int = 32,
               norm_epsilon: float = 1e-5,
               kernel_initializer: Any = None,
               kernel_regularizer: Optional[
                   tf_keras.regularizers.Regularizer] = None,
               bias_regularizer: Optional[
                   tf_keras.regularizers.Regularizer] = None,
               **kwargs):
    """Initializes the head.

    Args:
      num_classes: number of output classes.
      channels: width of the align conv (input of the classifier).
      ham_channels: width of the squeeze conv and of the Hamburger.
      rank: NMF rank R (MD_R).
      num_channel_groups: NMF channel groups S.
      train_steps: NMF iterations in training.
      eval_steps: NMF iterations at inference.
      inv_t: NMF softmax inverse temperature.
      one_step_gradient: NMF gradient mode, see `NMF2D`.
      seed: NMF bases seed, see `NMF2D`.
      dropout_rate: spatial (channel-wise) dropout before the classifier.
      norm_groups: GroupNorm groups.
      norm_epsilon: GroupNorm epsilon.
      kernel_initializer: initializer of the non-classifier convs; default
        N(0, sqrt(2 / fan_out)).
      kernel_regularizer: optional regularizer of the conv kernels.
      bias_regularizer: optional regularizer of the conv biases.
      **kwargs: keyword arguments of `tf_keras.layers.Layer`.
    """
    super().__init__(**kwargs)
    self._num_classes = _check_positive_int("num_classes", num_classes)
    self._channels = _check_positive_int("channels", channels)
    self._ham_channels = _check_positive_int("ham_channels", ham_channels)
    self._norm_groups = _check_positive_int("norm_groups", norm_groups)
    for name, value in (("channels", channels),
                        ("ham_channels", ham_channels)):
      if value % norm_groups:
        raise ValueError(f"{name} ({value}) must be divisible by norm_groups "
                         f"({norm_groups}).")
    if isinstance(dropout_rate, bool) or not isinstance(
        dropout_rate, (int, float)) or not 0.0 <= dropout_rate < 1.0:
      raise ValueError(f"dropout_rate must be a float in [0, 1), got "
                       f"{dropout_rate!r}.")
    self._dropout_rate = float(dropout_rate)
    self._norm_epsilon = norm_epsilon
    self._set_conv_arguments(
        kernel_initializer or msca.he_fan_out_initializer(),
        kernel_regularizer, bias_regularizer)

    self.squeeze_conv = self._conv(ham_channels, 1, "squeeze_conv",
                                   use_bias=False)
    self.squeeze_norm = _group_norm(norm_groups, norm_epsilon, "squeeze_norm")
    self.hamburger = Hamburger(
        rank=rank, num_channel_groups=num_channel_groups,
        train_steps=train_steps, eval_steps=eval_steps, inv_t=inv_t,
        one_step_gradient=one_step_gradient, seed=seed,
        norm_groups=norm_groups, norm_epsilon=norm_epsilon,
        kernel_initializer=tf_utils.clone_initializer(
            self._kernel_initializer),
        kernel_regularizer=self._kernel_regularizer,
        bias_regularizer=self._bias_regularizer, name="hamburger")
    self.align_conv = self._conv(channels, 1, "align_conv", use_bias=False)
    self.align_norm = _group_norm(norm_groups, norm_epsilon, "align_norm")
    self.dropout = tf_keras.layers.SpatialDropout2D(self._dropout_rate)
    self.classifier = common.conv2d(
        num_classes, 1, "classifier",
        tf_keras.initializers.RandomNormal(stddev=0.01),
        self._kernel_regularizer, self._bias_regularizer)

  def call(self, inputs: Sequence[tf.Tensor], training=None):
    """Computes logits.

    Args:
      inputs: list of [batch, h_i, w_i, c_i] feature maps (SegNeXt: strides
        8, 16, 32); all are resized to (h_0, w_0).
      training: bool; dropout and the NMF step count.

    Returns:
      [batch, h_0, w_0, num_classes] logits.
    """
    if isinstance(inputs, dict) or not isinstance(
        inputs, (list, tuple)) or not inputs:
      raise TypeError("LightHamHead expects a non-empty list of feature maps, "
                      f"got {type(inputs).__name__}.")
    size = tf.shape(inputs[0])[1:3]
    dtype = inputs[0].dtype
    features = [inputs[0]]
    for feature in inputs[1:]:
      features.append(tf.cast(resize_bilinear(feature, size), dtype))
    x = tf.concat(features, axis=-1)
    x = tf.nn.relu(self.squeeze_norm(self.squeeze_conv(x)))
    x = self.hamburger(tf.cast(x, dtype), training=training)
    x = tf.nn.relu(self.align_norm(self.align_conv(x)))
    x = self.dropout(tf.cast(x, dtype), training=training)
    return self.classifier(x)

  def get_config(self) -> Dict[str, Any]:
    config = super().get_config()
    config.update(self.hamburger.nmf_config)
    config.update(self._conv_config())
    config.update({
        "num_classes": self._num_classes,
        "channels": self._channels,
        "ham_channels": self._ham_channels,
        "dropout_rate": self._dropout_rate,
        "norm_groups": self._norm_groups,
        "norm_epsilon": self._norm_epsilon,
    })
    return config
