"""Tests LocalSelfAttention2D against an explicit per-window numpy loop."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from axial_deeplab_tf.layers.local_attention import LocalSelfAttention2D

from tests.layers.attention_reference import average_pool_same
from tests.layers.attention_reference import randomise
from tests.layers.attention_reference import weights_by_name

EPS = 1e-3  # Batch-norm epsilon used by the layer by default.


def _bn(x, p, prefix, training, axes, weights=None):
  """Reference batch norm over `axes` (weights: per-entry frequency)."""
  gamma, beta = p[prefix + "/gamma"], p[prefix + "/beta"]
  if training:
    if weights is None:
      weights = np.ones_like(x)
    weights = np.broadcast_to(weights, x.shape)
    total = weights.sum(axis=axes, keepdims=True)
    mean = (weights * x).sum(axis=axes, keepdims=True) / total
    var = (weights * (x - mean) ** 2).sum(axis=axes, keepdims=True) / total
  else:
    mean, var = p[prefix + "/moving_mean"], p[prefix + "/moving_variance"]
  return (x - mean) / np.sqrt(var + EPS) * gamma + beta


def _reference(x, p, heads, key_depth, value_depth, kernel_size, use_rel, ps,
               strides, training):
  """Dense numpy SASA: explicit loop over every query and its window."""
  x = x.astype(np.float64)
  b_, h_, w_, _ = x.shape
  qkv = np.einsum("bhwc,cd->bhwd", x, p["qkv_projection/kernel"][0, 0])
  qkv = _bn(qkv, p, "qkv_batch_norm", training, (0, 1, 2))
  dq, dv = key_depth // heads, value_depth // heads
  q = qkv[..., :key_depth].reshape(b_, h_, w_, heads, dq)
  k = qkv[..., key_depth:2 * key_depth].reshape(b_, h_, w_, heads, dq)
  v = qkv[..., 2 * key_depth:].reshape(b_, h_, w_, heads, dv)
  r = kernel_size // 2
  hq, hv = dq // 2, dv // 2
  # terms[t][b, i, j, n, a, c]: logit term t for the key at offset (a-r, c-r).
  terms = np.zeros([3, b_, h_, w_, heads, kernel_size, kernel_size])
  valid = np.zeros([h_, w_, kernel_size, kernel_size], bool)
  for i in range(h_):
    for j in range(w_):
      for a in range(kernel_size):
        for c in range(kernel_size):
          y, z = i + a - r, j + c - r
          if not (0 <= y < h_ and 0 <= z < w_):
            continue
          valid[i, j, a, c] = True
          terms[0, :, i, j, :, a, c] = (q[:, i, j] * k[:, y, z]).sum(-1)
          if use_rel:
            terms[1, :, i, j, :, a, c] = (
                q[:, i, j, :, :hq] @ p["query_positional_height"][a] +
                q[:, i, j, :, hq:] @ p["query_positional_width"][c])
          if ps:
            terms[2, :, i, j, :, a, c] = (
                k[:, y, z, :, :hq] @ p["key_positional_height"][a] +
                k[:, y, z, :, hq:] @ p["key_positional_width"][c])
  if ps:
    mask = valid[None, :, :, None].astype(np.float64)
    for t, name in enumerate(["content", "query_positional", "key_positional"]):
      moved = np.moveaxis(terms[t], 3, -1)  # Heads last, like BN channels.
      moved = _bn(moved, p, name + "_similarity_batch_norm", training,
                  (0, 1, 2, 3, 4), np.moveaxis(mask, 3, -1))
      terms[t] = np.moveaxis(moved, -1, 3)
  logits = terms.sum(0)
  logits = np.where(valid[None, :, :, None], logits, -np.inf)
  flat = logits.reshape(b_, h_, w_, heads, -1)
  att = np.exp(flat - flat.max(-1, keepdims=True))
  att = (att / att.sum(-1, keepdims=True)).reshape(logits.shape)
  out = np.zeros([b_, h_, w_, heads, dv])
  pos = np.zeros([b_, h_, w_, heads, dv])
  for i in range(h_):
    for j in range(w_):
      for a in range(kernel_size):
        for c in range(kernel_size):
          if not valid[i, j, a, c]:
            continue
          weight = att[:, i, j, :, a, c][..., None]
          out[:, i, j] += weight * v[:, i + a - r, j + c - r]
          if ps:
            pos[:, i, j, :, :hv] += weight * p["value_positional_height"][a]
            pos[:, i, j, :, hv:] += weight * p["value_positional_width"][c]
  out = out.reshape(b_, h_, w_, value_depth)
  if ps:
    out = (_bn(out, p, "content_output_batch_norm", training, (0, 1, 2)) +
           _bn(pos.reshape(out.shape), p, "value_positional_output_batch_norm",
               training, (0, 1, 2)))
  if strides > 1:
    out = average_pool_same(out, strides)
  return out


CASES = [
    # heads, key, value, kernel, use_rel, ps, strides, block, shape
    (2, 8, 8, 3, False, False, 1, 4, (2, 5, 7, 6)),
    (2, 8, 12, 3, True, False, 1, 2, (2, 5, 7, 6)),
    (1, 4, 4, 5, True, True, 1, 5, (2, 6, 4, 3)),
    (2, 8, 8, 3, True, True, 2, 4, (2, 5, 7, 6)),
    (2, 4, 8, 5, True, True, 1, 1, (1, 3, 8, 5)),
]


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("case", CASES)
def test_forward_matches_dense_reference(case, training):
  heads, dk, dv, ks, use_rel, ps, strides, block, shape = case
  layer = LocalSelfAttention2D(dk, dv, num_heads=heads, kernel_size=ks,
                               use_relative_position=use_rel,
                               position_sensitive=ps, strides=strides,
                               block_size=block)
  x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
  layer(x[:1])  # Builds every weight under the layer's name scope.
  randomise(layer, 1, other_stddev=0.3)
  y = layer(x, training=training).numpy()
  expected = _reference(x, weights_by_name(layer), heads, dk, dv, ks, use_rel,
                        ps, strides, training)
  assert y.shape == expected.shape
  np.testing.assert_allclose(y, expected, atol=1e-5, rtol=1e-5)


def test_block_size_does_not_change_result():
  x = np.random.default_rng(2).normal(size=(1, 9, 11, 4)).astype(np.float32)
  outs = []
  for block in (1, 3, 7, 16):
    layer = LocalSelfAttention2D(8, 8, num_heads=2, kernel_size=5,
                                 position_sensitive=True, block_size=block)
    layer.build(x.shape)
    randomise(layer, 3, other_stddev=0.3)
    outs.append(layer(x, training=True).numpy())
  for out in outs[1:]:
    np.testing.assert_allclose(out, outs[0], atol=1e-5)


def test_gradients_reach_every_weight():
  layer = LocalSelfAttention2D(8, 8, num_heads=2, kernel_size=3,
                               position_sensitive=True)
  x = tf.random.normal([2, 5, 6, 4], seed=1)
  with tf.GradientTape() as tape:
    y = layer(x, training=True)
    loss = tf.reduce_sum(y * tf.random.normal(y.shape, seed=2))
  grads = tape.gradient(loss, layer.trainable_weights)
  # qkv kernel, qkv BN, six positional tables, five term BNs.
  assert len(layer.trainable_weights) == 1 + 2 + 6 + 5 * 2
  for w, g in zip(layer.trainable_weights, grads):
    assert g is not None, w.name
    assert np.abs(g.numpy()).max() > 0, w.name


def test_receptive_field_is_exactly_the_window():
  # Inference mode: batch norms are per-pixel affine maps, so the output at
  # (i, j) may depend only on inputs within the k x k window.
  layer = LocalSelfAttention2D(8, 8, num_heads=2, kernel_size=5,
                               position_sensitive=True, block_size=3)
  x = tf.random.normal([1, 9, 10, 3], seed=4)
  layer(x)
  randomise(layer, 5, other_stddev=0.3)
  for i, j in [(0, 0), (4, 5), (8, 9), (3, 1)]:
    with tf.GradientTape() as tape:
      tape.watch(x)
      y = layer(x, training=False)[0, i, j]
      loss = tf.reduce_sum(y)
    g = np.abs(tape.gradient(loss, x).numpy()[0]).sum(-1)
    rows, cols = np.nonzero(g > 0)
    inside = np.zeros_like(g, bool)
    inside[max(i - 2, 0):i + 3, max(j - 2, 0):j + 3] = True
    assert np.all(inside[rows, cols])
    assert np.all(g[inside] > 0)


def test_unknown_shapes_jit_and_odd_sizes():
  layer = LocalSelfAttention2D(8, 8, num_heads=2, kernel_size=3,
                               position_sensitive=True, strides=2)
  layer(tf.zeros([1, 8, 8, 3]))
  spec = tf.TensorSpec([None, None, None, 3])
  graph_fn = tf.function(lambda t: layer(t, training=False),
                         input_signature=[spec])
  jit_fn = tf.function(lambda t: layer(t, training=False),
                       input_signature=[spec], jit_compile=True)
  for shape in [(1, 13, 7, 3), (2, 4, 17, 3)]:
    x = tf.random.normal(shape, seed=6)
    eager = layer(x, training=False).numpy()
    assert eager.shape == (shape[0], -(-shape[1] // 2), -(-shape[2] // 2), 8)
    np.testing.assert_allclose(graph_fn(x).numpy(), eager, atol=1e-5)
  # One XLA compilation (the slow part) on the last, odd-sized input.
  np.testing.assert_allclose(jit_fn(x).numpy(), eager, atol=1e-4)


def test_mixed_bfloat16():
  x = tf.random.normal([1, 6, 7, 4], seed=7)
  reference = LocalSelfAttention2D(8, 8, num_heads=2, kernel_size=3,
                                   position_sensitive=True)
  expected = reference(x, training=True).numpy()
  tf_keras.mixed_precision.set_global_policy("mixed_bfloat16")
  try:
    layer = LocalSelfAttention2D(8, 8, num_heads=2, kernel_size=3,
                                 position_sensitive=True)
    layer.build(x.shape)
    layer.set_weights(reference.get_weights())
    y = layer(x, training=True)
  finally:
    tf_keras.mixed_precision.set_global_policy("float32")
  assert y.dtype == tf.bfloat16
  np.testing.assert_allclose(tf.cast(y, tf.float32).numpy(), expected,
                             atol=0.15, rtol=0.05)


def test_save_and_load_round_trip(tmp_path):
  inputs = tf_keras.Input([None, None, 3])
  outputs = LocalSelfAttention2D(
      8, 12, num_heads=2, kernel_size=3, position_sensitive=True, strides=2,
      block_size=3, kernel_regularizer=tf_keras.regularizers.L2(1e-4))(inputs)
  model = tf_keras.Model(inputs, outputs)
  x = tf.random.normal([1, 7, 5, 3], seed=8)
  expected = model(x).numpy()
  path = str(tmp_path / "model.keras")
  model.save(path)
  loaded = tf_keras.models.load_model(path)
  np.testing.assert_allclose(loaded(x).numpy(), expected, atol=1e-6)
  config = loaded.layers[-1].get_config()
  assert config["block_size"] == 3 and config["position_sensitive"]
  assert len(loaded.losses) == 1  # The kernel regulariser survived.


@pytest.mark.parametrize("kwargs, match", [
    (dict(key_depth=8, value_depth=8, num_heads=3), "divisible by num_heads"),
    (dict(key_depth=8, value_depth=8, kernel_size=4), "must be odd"),
    (dict(key_depth=8, value_depth=8, kernel_size=0), "kernel_size"),
    (dict(key_depth=8, value_depth=8, strides=0), "strides"),
    (dict(key_depth=8, value_depth=8, use_relative_position=False,
          position_sensitive=True), "use_relative_position"),
    (dict(key_depth=24, value_depth=16, num_heads=8), "key_depth / num_heads"),
    (dict(key_depth=16, value_depth=24, num_heads=8, position_sensitive=True),
     "value_depth / num_heads"),
])
def test_bad_arguments(kwargs, match):
  with pytest.raises(ValueError, match=match):
    LocalSelfAttention2D(**kwargs)


def test_bad_input_rank():
  layer = LocalSelfAttention2D(8, 8, num_heads=2)
  with pytest.raises(ValueError, match="rank 4"):
    layer(tf.zeros([2, 5, 3]))
  with pytest.raises(TypeError, match="num_heads"):
    LocalSelfAttention2D(8, 8, num_heads=2.0)
