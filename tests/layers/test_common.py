"""The shared layer helpers: checks, sub-layer factories, configs."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from axial_deeplab_tf.layers import common
from axial_deeplab_tf.layers import GlobalSelfAttention2D
from axial_deeplab_tf.layers import LocalSelfAttention2D


def test_checks_name_the_argument():
  assert common.check_positive_int("n", np.int64(3)) == 3
  for value in (2.0, True, "2"):
    with pytest.raises(TypeError, match="n must be a positive int"):
      common.check_positive_int("n", value)
  with pytest.raises(ValueError, match="n must be a positive int, got 0"):
    common.check_positive_int("n", 0)
  common.check_even_head_depth("key_depth", 16, 4, "x")
  with pytest.raises(ValueError, match=r"key_depth / num_heads .* with x"):
    common.check_even_head_depth("key_depth", 12, 4, "x")
  with pytest.raises(ValueError, match="divisible by num_heads=3"):
    common.check_attention_depths(3, 6, 8)
  assert common.check_image_input_shape("L", [None, None, 4, 7]) == 7
  with pytest.raises(ValueError, match="L expects inputs of rank 4"):
    common.check_image_input_shape("L", [None, 4, 7])
  with pytest.raises(ValueError, match="L needs a known channel"):
    common.check_image_input_shape("L", [None, 4, 7, None])


def test_conv_factories_regularize_what_they_create():
  kernel_l2, bias_l2 = 0.1, 0.2
  x = tf.ones([1, 4, 4, 2])
  conv = common.conv2d(3, 1, "c", tf_keras.initializers.Constant(0.5),
                       tf_keras.regularizers.l2(kernel_l2),
                       tf_keras.regularizers.l2(bias_l2),
                       bias_initializer="ones")
  conv(x)
  # 2 x 3 kernel entries of 0.5, 3 biases of 1.
  np.testing.assert_allclose(sorted(float(l) for l in conv.losses),
                             sorted([kernel_l2 * 6 * 0.25, bias_l2 * 3]),
                             rtol=1e-6)
  no_bias = common.conv2d(3, 1, "c", "ones", tf_keras.regularizers.l2(0.1),
                          tf_keras.regularizers.l2(0.2), use_bias=False)
  no_bias(x)
  assert len(no_bias.losses) == 1 and no_bias.bias is None
  depthwise = common.depthwise_conv2d(
      3, "d", tf_keras.initializers.Constant(1.0),
      tf_keras.regularizers.l2(kernel_l2))
  y = depthwise(x)
  # 'same' padding: the centre pixels see all 9 ones of the input.
  assert y.shape == (1, 4, 4, 2) and float(y[0, 1, 1, 0]) == 9.0
  np.testing.assert_allclose(float(depthwise.losses[0]), kernel_l2 * 18,
                             rtol=1e-6)
  norm = common.batch_norm(0.5, 0.25, True, "n")
  assert (norm.momentum, norm.epsilon, norm.synchronized) == (0.5, 0.25, True)


def test_serialised_weight_arguments_load_back():
  config = common.weight_config("he_normal", "l2",
                                tf_keras.regularizers.l1(0.5))
  assert config["kernel_initializer"]["class_name"] == "HeNormal"
  kernel = tf_keras.regularizers.deserialize(config["kernel_regularizer"])
  bias = tf_keras.regularizers.deserialize(config["bias_regularizer"])
  np.testing.assert_allclose(float(kernel(tf.ones([2]))), 0.02, rtol=1e-6)
  np.testing.assert_allclose(float(bias(tf.ones([2]))), 1.0, rtol=1e-6)
  assert common.weight_config(None, None, None) == {
      "kernel_initializer": None, "kernel_regularizer": None,
      "bias_regularizer": None}


@pytest.mark.parametrize("layer_cls", [GlobalSelfAttention2D,
                                       LocalSelfAttention2D])
def test_attention_baselines_share_shape_and_config(layer_cls):
  layer = layer_cls(8, 12, num_heads=2, strides=3,
                    kernel_regularizer=tf_keras.regularizers.l2(0.1),
                    norm_momentum=0.5, norm_epsilon=0.25)
  assert layer.compute_output_shape([None, 7, None, 5]).as_list() == [
      None, 3, None, 12]
  assert layer(tf.ones([1, 7, 9, 5])).shape == (1, 3, 3, 12)
  config = layer.get_config()
  assert {k: config[k] for k in ("key_depth", "value_depth", "num_heads",
                                 "strides", "norm_momentum",
                                 "norm_epsilon")} == {
      "key_depth": 8, "value_depth": 12, "num_heads": 2, "strides": 3,
      "norm_momentum": 0.5, "norm_epsilon": 0.25}
  clone = layer_cls.from_config(config)
  clone(tf.ones([1, 7, 9, 5]))
  assert len(clone.losses) == 1
  assert clone._qkv_norm.momentum == 0.5  # pylint: disable=protected-access
