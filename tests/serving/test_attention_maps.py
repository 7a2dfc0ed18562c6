"""Attention maps rebuilt from the weights, checked against the layer itself."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from axial_deeplab_tf.layers.axial_attention import AxialAttention
from axial_deeplab_tf.layers.axial_attention import AxialAttention2D
from axial_deeplab_tf.serving import attention_maps as am


def _randomize_norms(layer, rng):
  """Non-trivial batch-norm statistics and affine parameters."""
  for w in layer.weights:
    name = w.name.split("/")[-1]
    if name.startswith(("moving_variance", "similarity_moving_variance")):
      w.assign(rng.uniform(0.5, 2.0, size=w.shape))
    elif name.startswith(("moving_mean", "similarity_moving_mean")):
      w.assign(rng.normal(size=w.shape) * 0.3)
    elif name.startswith(("gamma", "beta", "similarity_gamma",
                          "similarity_beta")):
      w.assign(rng.normal(size=w.shape))


@pytest.mark.parametrize("span, max_length, length, positional", [
    (5, None, 13, (True, True, True)),     # local, longer than the span
    (5, None, 3, (True, True, True)),      # local, shorter than the span
    (None, 9, 9, (True, True, True)),      # global
    (None, 9, 6, (False, True, False)),    # global, shorter than max_length
    (7, None, 30, (True, False, True)),
    (3, None, 11, (False, False, False)),  # content only
])
def test_rebuilt_output_matches_the_layer(span, max_length, length,
                                          positional):
  rng = np.random.default_rng(length)
  layer = AxialAttention(num_heads=2, key_depth=4, value_depth=8, span=span,
                         max_length=max_length,
                         use_query_positional=positional[0],
                         use_key_positional=positional[1],
                         use_value_positional=positional[2])
  x = rng.normal(size=(3, length, 6)).astype(np.float32)
  layer(x)
  _randomize_norms(layer, rng)
  expected = layer(x, training=False).numpy()
  radius = (span - 1) // 2 if span else max_length - 1
  for query in sorted({0, length // 2, length - 1}):
    result = am.query_attention(layer, x, query)
    np.testing.assert_allclose(result.output, expected[:, query], atol=2e-5,
                               rtol=1e-5)
    assert result.weights.shape == (3, 2, length)
    np.testing.assert_allclose(result.weights.sum(-1), 1.0, atol=1e-12)
    outside = np.abs(np.arange(length) - query) > radius
    assert np.all(result.weights[..., outside] == 0)
    assert np.all(np.isneginf(result.similarity[..., outside]))
    assert np.all(result.weights[..., ~outside] > 0)


def test_query_attention_checks_arguments():
  layer = AxialAttention(num_heads=2, key_depth=4, value_depth=8, span=3)
  with pytest.raises(ValueError, match="built"):
    am.query_attention(layer, np.zeros((1, 5, 6)), 0)
  layer(np.zeros((1, 5, 6), np.float32))
  with pytest.raises(ValueError, match="query_index"):
    am.query_attention(layer, np.zeros((1, 5, 6)), 5)
  with pytest.raises(ValueError, match="channels"):
    am.query_attention(layer, np.zeros((1, 5, 7)), 0)
  with pytest.raises(ValueError, match=r"\[batch, length, channels\]"):
    am.query_attention(layer, np.zeros((5, 6)), 0)


def _two_block_model():
  """Pooling then two AxialAttention2D layers, as a functional model."""
  inputs = tf_keras.Input((None, None, 3))
  x = tf_keras.layers.AveragePooling2D(2)(tf.cast(inputs, tf.float32) / 255.)
  first = AxialAttention2D(num_heads=2, key_depth=4, value_depth=8, span=5,
                           name="first")
  second = AxialAttention2D(num_heads=2, key_depth=4, value_depth=8,
                            span=None, max_length=16, name="second")
  outputs = second(first(x))
  return tf_keras.Model(inputs, outputs, name="toy"), first, second


def test_model_maps_follow_the_query_through_the_layers():
  rng = np.random.default_rng(7)
  model, first, second = _two_block_model()
  for layer in (first.height_attention, first.width_attention,
                second.height_attention, second.width_attention):
    _randomize_norms(layer, rng)
  assert list(am.find_axial_attention_2d(model)) == ["first", "second"]
  image = rng.integers(0, 256, size=(19, 25, 3), dtype=np.uint8)
  query = (13, 7)
  maps = am.attention_maps(model, image, "first", 1, query)
  # Features are the 2x2-pooled image: 9 x 12; the query cell is
  # (13 * 9 // 19, 7 * 12 // 25).
  assert maps.feature_size == (9, 12)
  assert maps.query_feature == (6, 3)
  pooled = tf_keras.layers.AveragePooling2D(2)(
      image[None].astype(np.float32) / 255.).numpy()[0]
  column = pooled[:, 3][None]  # The height layer sees columns.
  want = am.query_attention(first.height_attention, column, 6).weights[0, 1]
  np.testing.assert_allclose(maps.height_weights, want, atol=1e-12)
  # The width layer sees rows of the height layer's output.
  rows = first.height_attention(
      np.transpose(pooled, (1, 0, 2)), training=False).numpy()
  row = np.transpose(rows, (1, 0, 2))[6][None]
  rebuilt = am.query_attention(first.width_attention, row, 3)
  np.testing.assert_allclose(maps.width_weights, rebuilt.weights[0, 1],
                             atol=1e-5)
  # Those rows are what the 2D layer's width pass attends over: the output
  # rebuilt from them is the layer's own output at the query.
  layer_out = first(pooled[None], training=False).numpy()[0, 6, 3]
  np.testing.assert_allclose(rebuilt.output[0], layer_out, atol=2e-5,
                             rtol=1e-5)
  assert abs(maps.width_weights.sum() - 1) < 1e-9
  # Local span 5: nothing beyond 2 cells from the query.
  assert np.all(maps.height_weights[np.abs(np.arange(9) - 6) > 2] == 0)
  # By index, the second (global) layer: every cell gets weight.
  second_maps = am.attention_maps(model, image, 1, 0, query)
  assert second_maps.block == "second"
  assert np.all(second_maps.height_weights > 0)
  # The layers are back to their own call after recording.
  assert "call" not in vars(first)


def test_model_maps_check_arguments():
  model, _, _ = _two_block_model()
  image = np.zeros((8, 8, 3), np.uint8)
  with pytest.raises(ValueError, match="head must be"):
    am.attention_maps(model, image, 0, 2, (1, 1))
  with pytest.raises(ValueError, match="outside"):
    am.attention_maps(model, image, 0, 0, (8, 1))
  with pytest.raises(ValueError, match="Unknown block 'third'"):
    am.attention_maps(model, image, "third", 0, (1, 1))
  with pytest.raises(ValueError, match="out of range"):
    am.attention_maps(model, image, 2, 0, (1, 1))
  with pytest.raises(ValueError, match="uint8"):
    am.attention_maps(model, image.astype(np.float32), 0, 0, (1, 1))
