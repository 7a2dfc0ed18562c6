"""AxialAttention against a dense numpy reference with an explicit band mask."""

import os
import tempfile

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from axial_deeplab_tf.layers import AxialAttention, AxialAttention2D, AxialBlock

EPS = 1e-3


def _bn_np(x, axes, gamma, beta, mean=None, var=None, mask=None):
  """Batch norm over `axes`; training statistics when mean is None."""
  if mean is None:
    if mask is None:
      mean = x.mean(axis=axes, keepdims=True)
      var = x.var(axis=axes, keepdims=True)
    else:
      m = np.broadcast_to(mask, x.shape)
      count = m.sum(axis=axes, keepdims=True)
      mean = (x * m).sum(axis=axes, keepdims=True) / count
      var = (((x - mean) * m)**2).sum(axis=axes, keepdims=True) / count
  return (x - mean) / np.sqrt(var + EPS) * gamma + beta


def reference_axial(layer, x, training):
  """Dense position-sensitive axial attention in numpy (float64)."""
  x = x.astype(np.float64)
  b, length, _ = x.shape
  heads = layer._num_heads
  dk = layer._key_depth // heads
  dv = layer._value_depth // heads
  w = layer._qkv.kernel.numpy().astype(np.float64)
  qkv = x @ w
  bn = layer._qkv_bn
  g, be = bn.gamma.numpy(), bn.beta.numpy()
  if training:
    qkv = _bn_np(qkv, (0, 1), g, be)
  else:
    qkv = _bn_np(qkv, (0, 1), g, be, bn.moving_mean.numpy(),
                 bn.moving_variance.numpy())
  q = qkv[..., :heads * dk].reshape(b, length, heads, dk)
  k = qkv[..., heads * dk:2 * heads * dk].reshape(b, length, heads, dk)
  v = qkv[..., 2 * heads * dk:].reshape(b, length, heads, dv)
  radius = layer._radius
  center = radius
  rel = np.arange(length)[None, :] - np.arange(length)[:, None]  # m - l
  if layer.span is None:
    mask = np.ones((length, length))
  else:
    mask = (np.abs(rel) <= (layer.span - 1) // 2).astype(np.float64)
  idx = np.clip(rel + center, 0, layer.table_rows - 1)
  terms = [np.einsum("blnd,bmnd->bnlm", q, k)]
  if layer.query_positional is not None:
    r = layer.query_positional.numpy().astype(np.float64)[idx]  # [l, m, d]
    terms.append(np.einsum("blnd,lmd->bnlm", q, r))
  if layer.key_positional is not None:
    r = layer.key_positional.numpy().astype(np.float64)[idx]
    terms.append(np.einsum("bmnd,lmd->bnlm", k, r))
  gam = layer.similarity_gamma.numpy()
  bet = layer.similarity_beta.numpy()
  mm = layer.similarity_moving_mean.numpy()
  mv = layer.similarity_moving_variance.numpy()
  sim = 0
  for t, term in enumerate(terms):
    gt = gam[t][None, :, None, None]
    bt = bet[t][None, :, None, None]
    if training:
      sim = sim + _bn_np(term, (0, 2, 3), gt, bt, mask=mask[None, None])
    else:
      sim = sim + _bn_np(term, (0, 2, 3), gt, bt, mm[t][None, :, None, None],
                         mv[t][None, :, None, None])
  sim = np.where(mask[None, None] > 0, sim, -np.inf)
  sim = sim - sim.max(-1, keepdims=True)
  a = np.exp(sim)
  a = a / a.sum(-1, keepdims=True)
  outs = [np.einsum("bnlm,bmnd->blnd", a, v).reshape(b, length, heads * dv)]
  if layer.value_positional is not None:
    r = layer.value_positional.numpy().astype(np.float64)[idx]
    outs.append(
        np.einsum("bnlm,lmd->blnd", a, r).reshape(b, length, heads * dv))
  stacked = np.stack(outs, axis=2)
  obn = layer._output_bn
  g, be = obn.gamma.numpy(), obn.beta.numpy()
  if training:
    stacked = _bn_np(stacked, (0, 1), g, be)
  else:
    stacked = _bn_np(stacked, (0, 1), g, be, obn.moving_mean.numpy(),
                     obn.moving_variance.numpy())
  return stacked.sum(axis=2)


def _randomise(layer, rng):
  """Non-trivial BN parameters and statistics so inference mode is tested."""
  for var in layer.weights:
    name = var.name
    if "gamma" in name:
      var.assign(rng.uniform(0.5, 1.5, var.shape))
    elif "beta" in name:
      var.assign(rng.uniform(-0.5, 0.5, var.shape))
    elif "moving_mean" in name:
      var.assign(rng.uniform(-0.5, 0.5, var.shape))
    elif "moving_variance" in name:
      var.assign(rng.uniform(0.5, 2.0, var.shape))


CASES = [
    # heads, span, max_length, length, (q, k, v positional)
    (8, None, 12, 12, (True, True, True)),
    (4, None, 16, 11, (True, True, True)),
    (2, None, 9, 9, (False, False, False)),
    (2, None, 9, 7, (True, False, False)),
    (8, 5, None, 23, (True, True, True)),
    (4, 7, None, 40, (True, True, True)),
    (2, 3, None, 17, (False, True, False)),
    (1, 9, None, 5, (True, True, True)),  # span longer than the input.
    (4, 5, None, 9, (False, False, True)),
]


@pytest.mark.parametrize("heads,span,max_length,length,pos", CASES)
@pytest.mark.parametrize("training", [False, True])
def test_matches_dense_reference(heads, span, max_length, length, pos,
                                 training):
  rng = np.random.default_rng(0)
  layer = AxialAttention(
      num_heads=heads, key_depth=2 * heads, value_depth=4 * heads, span=span,
      max_length=max_length, use_query_positional=pos[0],
      use_key_positional=pos[1], use_value_positional=pos[2],
      block_length=4)
  x = rng.normal(size=(3, length, 6)).astype(np.float32)
  layer.build(x.shape)
  _randomise(layer, rng)
  expected = reference_axial(layer, x, training)
  got = layer(x, training=training).numpy()
  np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-4)


def test_gradients_reach_every_weight():
  for span, max_length in [(None, 10), (5, None)]:
    layer = AxialAttention(num_heads=2, key_depth=4, value_depth=8, span=span,
                           max_length=max_length, block_length=3)
    x = tf.random.normal([2, 10, 6])
    with tf.GradientTape() as tape:
      y = layer(x, training=True)
      loss = tf.reduce_sum(y * tf.random.normal(y.shape))
    grads = tape.gradient(loss, layer.trainable_weights)
    assert len(grads) == len(layer.trainable_weights) == 10
    for g, w in zip(grads, layer.trainable_weights):
      assert g is not None, w.name
      assert float(tf.reduce_max(tf.abs(g))) > 0, w.name


@pytest.mark.parametrize("span,length", [(5, 21), (7, 30)])
def test_local_span_gradient_support_is_exact(span, length):
  layer = AxialAttention(num_heads=2, key_depth=4, value_depth=8, span=span,
                         block_length=4)
  x = tf.random.normal([1, length, 4])
  layer(x, training=False)
  radius = (span - 1) // 2
  for l in (0, length // 2, length - 1):
    with tf.GradientTape() as tape:
      tape.watch(x)
      y = layer(x, training=False)[0, l]
      loss = tf.reduce_sum(y)
    g = tf.reduce_sum(tf.abs(tape.gradient(loss, x)[0]), axis=-1).numpy()
    dist = np.abs(np.arange(length) - l)
    assert np.all(g[dist > radius] == 0), (l, g)
    assert np.all(g[dist <= radius] > 0), (l, g)


def test_local_span_covering_input_equals_global():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(2, 9, 6)).astype(np.float32)
  local = AxialAttention(num_heads=2, key_depth=4, value_depth=8, span=17,
                         block_length=4)
  glob = AxialAttention(num_heads=2, key_depth=4, value_depth=8,
                        max_length=9)
  local.build(x.shape)
  glob.build(x.shape)
  # Same tables: the local span-17 table has distances -8..8, as the global
  # table of 9 positions.
  glob.set_weights(local.get_weights())
  for training in (False, True):
    np.testing.assert_allclose(
        local(x, training=training).numpy(),
        glob(x, training=training).numpy(), atol=1e-5)
  # A long local input split into blocks equals the same layer on the
  # unblocked (global) path when the span covers everything.
  x2 = rng.normal(size=(2, 8, 6)).astype(np.float32)
  blocked = AxialAttention(num_heads=2, key_depth=4, value_depth=8, span=15,
                           block_length=2)
  blocked.build(x2.shape)
  ref = reference_axial(blocked, x2, training=True)
  np.testing.assert_allclose(blocked(x2, training=True).numpy(), ref,
                             atol=1e-5, rtol=1e-4)


def test_positional_tables_start_different():
  layer = AxialAttention(num_heads=2, key_depth=4, value_depth=4, span=5)
  layer.build([None, 7, 3])
  assert not np.allclose(layer.query_positional.numpy(),
                         layer.key_positional.numpy())


@pytest.mark.parametrize("kwargs,match", [
    (dict(key_depth=6, num_heads=4, max_length=4), "key_depth"),
    (dict(value_depth=6, num_heads=4, max_length=4), "value_depth"),
    (dict(span=4), "span"),
    (dict(span=0), "span"),
    (dict(span=-3), "span"),
    (dict(span=None), "max_length"),
    (dict(num_heads=0, max_length=4), "num_heads"),
])
def test_bad_arguments(kwargs, match):
  with pytest.raises(ValueError, match=match):
    AxialAttention(**kwargs)


def test_bad_input_rank_and_length():
  layer = AxialAttention(num_heads=2, key_depth=4, value_depth=4, max_length=5)
  with pytest.raises(ValueError, match="rank 3"):
    layer(tf.zeros([1, 2, 5, 3]))
  with pytest.raises(ValueError, match="max_length"):
    layer(tf.zeros([1, 6, 3]))
  layer2d = AxialAttention2D(num_heads=2, key_depth=4, value_depth=4, span=3)
  with pytest.raises(ValueError, match="rank 4"):
    layer2d(tf.zeros([1, 5, 3]))


def _reference_2d(layer2d, x, training):
  b, h, w, c = x.shape
  cols = np.transpose(x, [0, 2, 1, 3]).reshape(b * w, h, c)
  y = reference_axial(layer2d.height_attention, cols, training)
  dv = y.shape[-1]
  y = np.transpose(y.reshape(b, w, h, dv), [0, 2, 1, 3])
  rows = y.reshape(b * h, w, dv)
  return reference_axial(layer2d.width_attention, rows,
                         training).reshape(b, h, w, dv)


def test_axial_2d_matches_reference_and_strides():
  rng = np.random.default_rng(2)
  layer = AxialAttention2D(num_heads=2, key_depth=4, value_depth=8,
                           span=(5, 3))
  x = rng.normal(size=(2, 11, 7, 3)).astype(np.float32)
  layer.build(x.shape)
  _randomise(layer.height_attention, rng)
  _randomise(layer.width_attention, rng)
  np.testing.assert_allclose(layer(x, training=False).numpy(),
                             _reference_2d(layer, x, False), atol=1e-5,
                             rtol=1e-4)
  strided = AxialAttention2D(num_heads=2, key_depth=4, value_depth=8,
                             span=(5, 3), strides=2)
  strided.build(x.shape)
  strided.set_weights(layer.get_weights())
  full = _reference_2d(layer, x, False)
  got = strided(x, training=False).numpy()
  assert got.shape == (2, 6, 4, 8)
  # Average pooling of the full-resolution output ("same" padding).
  np.testing.assert_allclose(got[:, :5, :3],
                             full[:, :10, :6].reshape(2, 5, 2, 3, 2, 8).mean(
                                 (2, 4)), atol=1e-5, rtol=1e-4)


def test_dynamic_shapes_xla_and_odd_sizes():
  layer = AxialAttention2D(num_heads=2, key_depth=8, value_depth=8, span=65)
  layer.build([None, None, None, 4])
  fn = tf.function(lambda x: layer(x, training=False),
                   input_signature=[tf.TensorSpec([None, None, None, 4])])
  xla = tf.function(lambda x: layer(x, training=False), jit_compile=True)
  train = tf.function(lambda x: layer(x, training=True),
                      input_signature=[tf.TensorSpec([None, None, None, 4])])
  for shape in [(1, 257, 129, 4), (2, 31, 97, 4), (1, 1, 3, 4)]:
    x = tf.random.normal(shape)
    eager = layer(x, training=False).numpy()
    np.testing.assert_allclose(fn(x).numpy(), eager, atol=1e-4)
    np.testing.assert_allclose(xla(x).numpy(), eager, atol=1e-4)
    assert train(x).shape == shape[:3] + (8,)


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision(policy):
  tf_keras.mixed_precision.set_global_policy(policy)
  try:
    layer = AxialAttention2D(num_heads=2, key_depth=8, value_depth=8, span=5)
    x = tf.random.normal([2, 9, 13, 4])
    with tf.GradientTape() as tape:
      y = layer(x, training=True)
      loss = tf.reduce_mean(tf.cast(y, tf.float32))
    assert y.dtype == tf.as_dtype(policy.split("_")[1])
    grads = tape.gradient(loss, layer.trainable_weights)
    assert all(g is not None for g in grads)
    assert layer.height_attention.similarity_gamma.dtype == tf.float32
    assert np.all(np.isfinite(
        layer.height_attention.similarity_moving_variance.numpy()))
    out = layer(x, training=False)
    assert np.all(np.isfinite(tf.cast(out, tf.float32).numpy()))
  finally:
    tf_keras.mixed_precision.set_global_policy("float32")


def test_save_and_load_round_trip():
  inputs = tf_keras.Input([None, None, 6])
  x = AxialBlock(filters=4, span=5, num_heads=2, strides=2,
                 drop_path_rate=0.1)(inputs)
  x = AxialBlock(filters=4, max_length=8, num_heads=2)(x)
  model = tf_keras.Model(inputs, x)
  data = tf.random.normal([2, 16, 15, 6])
  model(data, training=True)
  expected = model(data, training=False).numpy()
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "model.keras")
    model.save(path)
    loaded = tf_keras.models.load_model(path)
  np.testing.assert_allclose(loaded(data, training=False).numpy(), expected,
                             atol=1e-6)


def test_recompute_grad_gives_same_results():
  rng = np.random.default_rng(3)
  x = tf.constant(rng.normal(size=(2, 12, 10, 8)).astype(np.float32))
  results = []
  for recompute in (False, True):
    tf_keras.utils.set_random_seed(5)
    block = AxialBlock(filters=4, span=5, num_heads=2,
                       recompute_grad=recompute)
    block.build(x.shape)
    if results:
      block.set_weights(results[0][2])
    weights = block.get_weights()
    with tf.GradientTape() as tape:
      y = block(x, training=True)
      loss = tf.reduce_sum(tf.square(y))
    grads = tape.gradient(loss, block.trainable_weights)
    results.append((y.numpy(), [g.numpy() for g in grads], weights,
                    [w.numpy() for w in block.non_trainable_weights]))
  np.testing.assert_allclose(results[0][0], results[1][0], atol=1e-6)
  for a, b in zip(results[0][1], results[1][1]):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-4)
  for a, b in zip(results[0][3], results[1][3]):
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_block_zero_init_is_identity_like():
  block = AxialBlock(filters=4, span=3, num_heads=2)
  x = tf.nn.relu(tf.random.normal([1, 6, 6, 16]))
  # gamma of the last BN starts at zero: the block is relu(shortcut).
  np.testing.assert_allclose(block(x, training=False).numpy(), x.numpy(),
                             atol=1e-6)


@pytest.mark.parametrize("attention_type", ["axial", "local", "global"])
def test_block_gives_its_regularizer_and_norm_settings_to_attention(
    attention_type):
  weight_decay = 0.01
  block = AxialBlock(filters=4, span=5, num_heads=2,
                     attention_type=attention_type, kernel_size=3,
                     kernel_regularizer=tf_keras.regularizers.l2(weight_decay),
                     norm_momentum=0.5, norm_epsilon=0.02, use_sync_bn=True)
  block(tf.random.normal([2, 6, 5, 8]), training=False)
  # Every kernel of the block, the attention's q/k/v projection included,
  # is regularised: the losses add up to wd * sum(w^2) over all of them.
  kernels = [w.numpy() for w in block.trainable_weights
             if w.name.endswith("kernel:0")]
  attention_kernels = [w for w in block.trainable_weights
                       if "/attention/" in w.name and
                       w.name.endswith("kernel:0")]
  assert attention_kernels
  expected = weight_decay * sum(float(np.sum(np.square(k))) for k in kernels)
  np.testing.assert_allclose(float(tf.add_n(block.losses)), expected,
                             rtol=1e-5)
  norms = [layer for layer in block._flatten_layers(include_self=False)
           if isinstance(layer, tf_keras.layers.BatchNormalization)]
  attention_norms = [layer for layer in norms
                     if layer in block._attention._flatten_layers()]
  assert attention_norms
  for layer in norms:
    assert (layer.momentum, layer.epsilon, layer.synchronized) == (
        0.5, 0.02, True), layer.name
