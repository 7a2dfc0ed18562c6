"""Keras 3 Axial-ResNets built on tf_keras weights; copy_weights checks.

Runs in the test process: `import keras` is Keras 3 on the TensorFlow
backend here, next to the package's tf_keras models.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from axial_deeplab_tf import keras_layers as k3
from axial_deeplab_tf.layers import axial_attention
from axial_deeplab_tf.modeling.backbones import axial_resnet


def _randomise_norms(model, seed):
  """Random batch-norm statistics and affine terms; kernels as initialised.

  Gains stay below one (gamma / sqrt(variance) <= 1) so that 50 blocks do
  not amplify float32 rounding into visible differences.
  """
  rng = np.random.default_rng(seed)
  for w in model.weights:
    name = w.name
    if "moving_variance" in name:
      w.assign(rng.uniform(1.0, 2.0, w.shape).astype(np.float32))
    elif "moving_mean" in name or "beta" in name:
      w.assign(rng.normal(0.0, 0.1, w.shape).astype(np.float32))
    elif "gamma" in name:
      w.assign(rng.uniform(0.5, 1.0, w.shape).astype(np.float32))


@pytest.mark.slow
def test_axial_resnet_50s_logits_equal_with_copied_weights():
  size = (32, 32)
  old = axial_resnet.build_axial_resnet_classifier(
      num_classes=10, input_size=size, depth=50, width_multiplier=0.5,
      stem="conv", span=None, name="axial_resnet_50s")
  new = k3.build_zoo_classifier("50s", num_classes=10, input_size=size)
  _randomise_norms(old, 0)
  copied = k3.copy_weights(old, new)
  assert copied == len(old.weights) == len(new.weights)
  images = np.random.default_rng(1).uniform(
      0, 255, (2,) + size + (3,)).astype(np.float32)
  ref = old(tf.constant(images), training=False)["logits"].numpy()
  got = keras.ops.convert_to_numpy(new(images, training=False)["logits"])
  scale = max(1.0, float(np.abs(ref).max()))
  print(f"max abs logit difference {np.abs(ref - got).max():.3g} (scale {scale:.3g})")
  assert np.abs(ref - got).max() <= 1e-5 * scale, np.abs(ref - got).max()
  # And back: the tf_keras model takes the Keras 3 weights.
  rng = np.random.default_rng(2)
  fc = new.get_layer("fc")
  fc.kernel.assign(rng.normal(size=tuple(fc.kernel.shape)).astype("float32"))
  k3.copy_weights(new, old)
  ref = old(tf.constant(images), training=False)["logits"].numpy()
  got = keras.ops.convert_to_numpy(new(images, training=False)["logits"])
  assert np.abs(ref - got).max() <= 1e-5 * max(1.0, np.abs(ref).max())


@pytest.mark.parametrize("size", ["26s", "50s", "50m", "50l"])
def test_zoo_backbone_variable_layout_matches(size):
  depth, mult = k3.backbones.SIZES[size]
  old = axial_resnet.build_axial_resnet_backbone(
      input_size=(16, 16), depth=depth, width_multiplier=mult)
  new = k3.build_axial_resnet_backbone(
      input_size=(16, 16), depth=depth, width_multiplier=mult)
  pairs = k3.weight_pairs(old, new)
  assert len(pairs) == len(old.weights) == len(new.weights)
  old_params = sum(int(np.prod(w.shape)) for w in old.trainable_weights)
  new_params = sum(int(np.prod(w.shape)) for w in new.trainable_weights)
  assert old_params == new_params


def test_copy_weights_names_both_variables_on_a_shape_mismatch():
  old = axial_attention.AxialAttention(num_heads=2, key_depth=8,
                                       value_depth=8, span=3, name="old")
  new = k3.AxialAttention(num_heads=2, key_depth=8, value_depth=16, span=3,
                          name="new")
  old(tf.zeros([1, 4, 6]))
  new(np.zeros([1, 4, 6], np.float32))
  with pytest.raises(ValueError, match=r"'old'.*'new'") as info:
    k3.copy_weights(old, new)
  assert "shape" in str(info.value)


def test_copy_weights_refuses_different_variable_counts():
  old = axial_attention.AxialAttention(num_heads=2, key_depth=8,
                                       value_depth=8, span=3)
  new = k3.AxialAttention(num_heads=2, key_depth=8, value_depth=8, span=3,
                          use_value_positional=False)
  old(tf.zeros([1, 4, 6]))
  new(np.zeros([1, 4, 6], np.float32))
  with pytest.raises(ValueError, match="variables"):
    k3.copy_weights(old, new)


def test_copy_weights_needs_built_layers():
  old = axial_attention.AxialAttention(num_heads=2, key_depth=8,
                                       value_depth=8, span=3)
  old(tf.zeros([1, 4, 6]))
  with pytest.raises(ValueError, match="build it"):
    k3.copy_weights(old, k3.AxialAttention(num_heads=2, key_depth=8,
                                           value_depth=8, span=3))


def test_bad_arguments_name_the_argument():
  with pytest.raises(ValueError, match="span"):
    k3.AxialAttention(span=4)
  with pytest.raises(ValueError, match="max_length"):
    k3.AxialAttention(span=None)
  with pytest.raises(ValueError, match="key_depth"):
    k3.AxialAttention2D(num_heads=3, key_depth=8, value_depth=9, span=3)
  with pytest.raises(TypeError, match="strides"):
    k3.AxialBlock(filters=4, strides=1.5)
  with pytest.raises(ValueError, match="kernel_size"):
    k3.LocalSelfAttention2D(key_depth=8, value_depth=8, kernel_size=4)
  with pytest.raises(ValueError, match="partition_factors"):
    k3.InterlacedSparseSelfAttention(partition_factors=(2,))
  with pytest.raises(ValueError, match="rank 3"):
    k3.AxialAttention(span=3, key_depth=8, value_depth=8)(
        np.zeros([1, 2, 3, 4], np.float32))


def test_get_config_round_trip_and_keras_file(tmp_path):
  layer = k3.AxialBlock(filters=4, num_heads=2, span=(3, 5), strides=2,
                        kernel_regularizer=keras.regularizers.L2(1e-4))
  inputs = keras.Input((6, 6, 8))
  model = keras.Model(inputs, layer(inputs))
  clone = k3.AxialBlock.from_config(layer.get_config())
  assert clone.get_config() == layer.get_config()
  path = str(tmp_path / "block.keras")
  model.save(path)
  loaded = keras.models.load_model(path)
  x = np.random.default_rng(0).normal(size=(2, 6, 6, 8)).astype(np.float32)
  np.testing.assert_array_equal(
      keras.ops.convert_to_numpy(model(x)),
      keras.ops.convert_to_numpy(loaded(x)))
