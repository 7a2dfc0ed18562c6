"""Tests GlobalSelfAttention2D against an explicit all-pairs numpy loop."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from axial_deeplab_tf.layers.global_attention import GlobalSelfAttention2D

from tests.layers.attention_reference import average_pool_same
from tests.layers.attention_reference import randomise
from tests.layers.attention_reference import weights_by_name

EPS = 1e-3


def _reference(x, p, heads, key_depth, value_depth, span, projection, strides,
               training):
  """Dense numpy attention: explicit loop over every (query, key) pair."""
  x = x.astype(np.float64)
  b_, h_, w_, _ = x.shape
  qkv = np.einsum("bhwc,cd->bhwd", x, p["qkv_projection/kernel"][0, 0])
  if training:
    mean, var = qkv.mean((0, 1, 2)), qkv.var((0, 1, 2))
  else:
    mean = p["qkv_batch_norm/moving_mean"]
    var = p["qkv_batch_norm/moving_variance"]
  qkv = ((qkv - mean) / np.sqrt(var + EPS) * p["qkv_batch_norm/gamma"] +
         p["qkv_batch_norm/beta"])
  dq, dv = key_depth // heads, value_depth // heads
  q = qkv[..., :key_depth].reshape(b_, h_ * w_, heads, dq)
  k = qkv[..., key_depth:2 * key_depth].reshape(b_, h_ * w_, heads, dq)
  v = qkv[..., 2 * key_depth:].reshape(b_, h_ * w_, heads, dv)
  out = np.zeros([b_, h_ * w_, heads, dv])
  for b in range(b_):
    for n in range(heads):
      for l in range(h_ * w_):
        logits = np.zeros(h_ * w_)
        for m in range(h_ * w_):
          logits[m] = q[b, l, n] @ k[b, m, n]
          if span is not None:
            (i, j), (y, z) = divmod(l, w_), divmod(m, w_)
            logits[m] += (
                q[b, l, n, :dq // 2] @ p["query_positional_height"][
                    y - i + span[0] - 1] +
                q[b, l, n, dq // 2:] @ p["query_positional_width"][
                    z - j + span[1] - 1])
        att = np.exp(logits - logits.max())
        att /= att.sum()
        out[b, l, n] = att @ v[b, :, n]
  out = out.reshape(b_, h_, w_, value_depth)
  if projection:
    out = (np.einsum("bhwc,cd->bhwd", out, p["output_projection/kernel"][0, 0])
           + p["output_projection/bias"])
  if strides > 1:
    out = average_pool_same(out, strides)
  return out


CASES = [
    # heads, key, value, relative_span, projection, strides, shape
    (2, 8, 6, None, False, 1, (2, 3, 5, 4)),
    (1, 4, 4, (5, 6), True, 1, (2, 4, 5, 3)),
    (2, 8, 8, (3, 5), False, 2, (1, 3, 5, 4)),
]


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("case", CASES)
def test_forward_matches_dense_reference(case, training):
  heads, dk, dv, span, projection, strides, shape = case
  layer = GlobalSelfAttention2D(dk, dv, num_heads=heads,
                                use_relative_position=span is not None,
                                relative_span=span, strides=strides,
                                use_output_projection=projection)
  x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
  layer(x[:1])
  randomise(layer, 1)
  y = layer(x, training=training).numpy()
  expected = _reference(x, weights_by_name(layer), heads, dk, dv, span,
                        projection, strides, training)
  assert y.shape == expected.shape
  np.testing.assert_allclose(y, expected, atol=1e-5, rtol=1e-5)


def test_gradients_reach_every_weight():
  layer = GlobalSelfAttention2D(8, 8, num_heads=2, use_relative_position=True,
                                relative_span=(4, 6),
                                use_output_projection=True)
  x = tf.random.normal([2, 4, 6, 3], seed=1)
  with tf.GradientTape() as tape:
    y = layer(x, training=True)
    loss = tf.reduce_sum(y * tf.random.normal(y.shape, seed=2))
  grads = tape.gradient(loss, layer.trainable_weights)
  # qkv kernel, qkv BN gamma/beta, two positional tables, output kernel/bias.
  assert len(layer.trainable_weights) == 7
  for w, g in zip(layer.trainable_weights, grads):
    assert g is not None, w.name
    # Gathered tables get IndexedSlices; densify to check values.
    assert np.abs(tf.convert_to_tensor(g).numpy()).max() > 0, w.name


def test_unknown_shapes_jit_and_mixed_bfloat16():
  layer = GlobalSelfAttention2D(8, 8, num_heads=2, use_relative_position=True,
                                relative_span=(9, 9), strides=2)
  spec = tf.TensorSpec([None, None, None, 3])
  x = tf.random.normal([2, 7, 9, 3], seed=3)
  eager = layer(x).numpy()
  assert eager.shape == (2, 4, 5, 8)
  graph_fn = tf.function(lambda t: layer(t), input_signature=[spec])
  jit_fn = tf.function(lambda t: layer(t), input_signature=[spec],
                       jit_compile=True)
  np.testing.assert_allclose(graph_fn(x).numpy(), eager, atol=1e-5)
  np.testing.assert_allclose(jit_fn(x).numpy(), eager, atol=1e-4)
  with pytest.raises(tf.errors.InvalidArgumentError):
    graph_fn(tf.zeros([1, 10, 4, 3]))
  tf_keras.mixed_precision.set_global_policy("mixed_bfloat16")
  try:
    half = GlobalSelfAttention2D(8, 8, num_heads=2, use_relative_position=True,
                                 relative_span=(9, 9), strides=2)
    half.build(x.shape)
    half.set_weights(layer.get_weights())
    y = half(x)
  finally:
    tf_keras.mixed_precision.set_global_policy("float32")
  assert y.dtype == tf.bfloat16
  np.testing.assert_allclose(tf.cast(y, tf.float32).numpy(), eager,
                             atol=0.1, rtol=0.05)


def test_save_and_load_round_trip(tmp_path):
  inputs = tf_keras.Input([None, None, 3])
  outputs = GlobalSelfAttention2D(4, 6, num_heads=2, use_output_projection=True,
                                  strides=2)(inputs)
  model = tf_keras.Model(inputs, outputs)
  x = tf.random.normal([1, 5, 3, 3], seed=4)
  expected = model(x).numpy()
  path = str(tmp_path / "model.keras")
  model.save(path)
  loaded = tf_keras.models.load_model(path)
  np.testing.assert_allclose(loaded(x).numpy(), expected, atol=1e-6)


@pytest.mark.parametrize("kwargs, match", [
    (dict(key_depth=6, value_depth=8, num_heads=4), "divisible by num_heads"),
    (dict(key_depth=8, value_depth=8, use_relative_position=True),
     "relative_span"),
    (dict(key_depth=8, value_depth=8, relative_span=(4, 4)),
     "use_relative_position"),
    (dict(key_depth=8, value_depth=8, use_relative_position=True,
          relative_span=(4, 0)), "relative_span"),
    (dict(key_depth=12, value_depth=8, num_heads=4, use_relative_position=True,
          relative_span=(4, 4)), "even"),
    (dict(key_depth=8, value_depth=8, strides=-1), "strides"),
])
def test_bad_arguments(kwargs, match):
  with pytest.raises(ValueError, match=match):
    GlobalSelfAttention2D(**kwargs)


def test_input_larger_than_relative_span():
  layer = GlobalSelfAttention2D(8, 8, num_heads=2, use_relative_position=True,
                                relative_span=(4, 4))
  with pytest.raises(ValueError, match="exceeds relative_span"):
    layer(tf.zeros([1, 5, 4, 3]))
