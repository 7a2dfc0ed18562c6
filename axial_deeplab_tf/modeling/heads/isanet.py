"""ISANet's heads: the ISA decode head and the auxiliary FCN head.

Huang et al., "Interlaced Sparse Self-Attention for Semantic Segmentation",
arXiv 1907.12273; parameter accounting in `modeling/isanet.py`.
"""

from typing import Any, Optional, Sequence

import tensorflow as tf
import tf_keras

from axial_deeplab_tf.attention_math import check_rate
from axial_deeplab_tf.layers import common
from axial_deeplab_tf.layers import issa
from axial_deeplab_tf.modeling import layer_config


def _act(name: str):
  if name == "relu":
    return tf.nn.relu
  return lambda x: tf.nn.leaky_relu(x, alpha=0.01)


def _check_activation(value: Any) -> str:
  if value not in ("relu", "leaky_relu"):
    raise ValueError(f"activation must be 'relu' or 'leaky_relu', got "
                     f"{value!r}.")
  return value


def _classifier(num_classes: int, kernel_regularizer):
  """The 1x1 classifier of both heads: bias, N(0, 0.01) kernel init."""
  return common.conv2d(num_classes, 1, "classifier",
                       tf_keras.initializers.RandomNormal(stddev=0.01),
                       kernel_regularizer)


@tf_keras.utils.register_keras_serializable(package="AxialDeepLab")
class ISAHead(layer_config.ConfigDictLayer):
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
               value_use_bias: bool = True,
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
      value_use_bias: ISSA value convs with a bias (mmsegmentation) or
        without (False, the official code).
      **kwargs: keyword arguments of `tf_keras.layers.Layer`.
    """
    super().__init__(**kwargs)
    self._config_dict = {
        "num_classes": common.check_positive_int("num_classes", num_classes),
        "channels": common.check_positive_int("channels", channels),
        "value_use_bias": value_use_bias,
        "key_channels": key_channels,
        "partition_factors": list(partition_factors),
        "dropout_rate": check_rate("dropout_rate", dropout_rate),
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
        value_use_bias=value_use_bias, name="issa")
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


@tf_keras.utils.register_keras_serializable(package="AxialDeepLab")
class FCNHead(layer_config.ConfigDictLayer):
  """Auxiliary FCN head: conv3x3, BN, activation, dropout, 1x1 classifier."""

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
               activation: str = "relu",
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
      activation: "relu" or "leaky_relu" (slope 0.01) after the BN.
      **kwargs: keyword arguments of `tf_keras.layers.Layer`.
    """
    super().__init__(**kwargs)
    self._config_dict = {
        "num_classes": common.check_positive_int("num_classes", num_classes),
        "channels": common.check_positive_int("channels", channels),
        "activation": _check_activation(activation),
        "dropout_rate": check_rate("dropout_rate", dropout_rate),
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
    self._act = _act(activation)

  def call(self, inputs, training=None):
    """Computes logits.

    Args:
      inputs: [batch, height, width, channels_in].
      training: bool; BN statistics and dropout.

    Returns:
      [batch, height, width, num_classes] logits.
    """
    x = self._act(self.norm(self.conv(inputs), training=training))
    return self.classifier(self.dropout(x, training=training))
