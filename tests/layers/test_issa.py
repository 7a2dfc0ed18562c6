"""ISSA against an explicit loop over long-range then short-range groups."""

import math

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from axial_deeplab_tf.layers import issa


def _randomize(layer, rng, x, gain=1.5):
  """Random weights that keep activations and attention logits O(1).

  BN scales near 1, kernels of std gain / sqrt(fan_in), and BN moving
  statistics set from the batch statistics of `x` (then jittered), so that
  pre-activations are centred: otherwise ReLUs die, attention is nearly
  uniform, and a wrong grouping would go unnoticed.
  """
  for w in layer.weights:
    shape = w.shape.as_list()
    if "gamma" in w.name:
      value = rng.normal(1.0, 0.2, shape)
    elif "kernel" in w.name:
      value = rng.normal(0.0, gain / math.sqrt(shape[-2]), shape)
    else:
      value = rng.normal(0.0, 0.3, shape)
    w.assign(value.astype(w.dtype.as_numpy_dtype))
  norms = [m for m in layer.submodules
           if isinstance(m, tf_keras.layers.BatchNormalization)]
  for bn in norms:
    bn.momentum = 0.0
  layer(x, training=True)
  for bn in norms:
    bn.momentum = 0.9
    bn.moving_mean.assign_add(rng.normal(0.0, 0.1, bn.moving_mean.shape))
    bn.moving_variance.assign(bn.moving_variance * rng.uniform(
        0.8, 1.25, bn.moving_variance.shape))


@pytest.fixture
def float64():
  """Builds layers in float64 so that only the grouping can differ."""
  policy = tf_keras.mixed_precision.global_policy()
  floatx = tf_keras.backend.floatx()
  tf_keras.backend.set_floatx("float64")
  tf_keras.mixed_precision.set_global_policy("float64")
  yield
  tf_keras.mixed_precision.set_global_policy(policy)
  tf_keras.backend.set_floatx(floatx)


def _np_params(block):
  """The block's weights as float64 numpy arrays."""
  def conv(layer):
    kernel = layer.kernel.numpy()[0, 0].astype(np.float64)
    bias = layer.bias.numpy().astype(np.float64) if layer.use_bias else 0.0
    return kernel, bias

  def bn(layer):
    scale = layer.gamma.numpy() / np.sqrt(layer.moving_variance.numpy() +
                                          layer.epsilon)
    return scale.astype(np.float64), (
        layer.beta.numpy() - layer.moving_mean.numpy() * scale).astype(
            np.float64)

  return {
      "leaky": block._activation == "leaky_relu",
      "query": [f(l) for l, f in zip(block.query_layers, [conv, bn] * 2)],
      "key": [f(l) for l, f in zip(block.key_layers, [conv, bn] * 2)],
      "value": conv(block.value_conv),
      "output": [conv(block.output_conv), bn(block.output_norm)],
  }


def _np_block(p, x):
  """Dense attention among the rows of x [L, C] with parameters `p`."""
  def act(z):
    return np.where(z > 0, z, 0.01 * z) if p["leaky"] else np.maximum(z, 0)

  def conv_bn_act(params, z):
    for (kernel, bias), (scale, shift) in zip(params[0::2], params[1::2]):
      z = act((z @ kernel + bias) * scale + shift)
    return z

  q = conv_bn_act(p["query"], x)
  k = conv_bn_act(p["key"], x)
  v = x @ p["value"][0] + p["value"][1]
  logits = q @ k.T / math.sqrt(q.shape[1])
  logits -= logits.max(axis=1, keepdims=True)
  attn = np.exp(logits)
  attn /= attn.sum(axis=1, keepdims=True)
  return conv_bn_act(p["output"], attn @ v)


def _np_issa(layer, image):
  """ISSA of one image [H, W, C] by explicit loops over the groups."""
  p_h, p_w = layer._partition_factors
  h, w, c = image.shape
  q_h, q_w = -(-h // p_h), -(-w // p_w)
  top, left = (q_h * p_h - h) // 2, (q_w * p_w - w) // 2
  x = np.zeros((q_h * p_h, q_w * p_w, c))
  x[top:top + h, left:left + w] = image
  long_params = _np_params(layer.long_range)
  short_params = _np_params(layer.short_range)
  # Long range: positions with the same offset (a, b) inside their cell.
  out_c = None
  y = None
  for a in range(p_h):
    for b in range(p_w):
      rows = [qh * p_h + a for qh in range(q_h)]
      cols = [qw * p_w + b for qw in range(q_w)]
      group = x[np.ix_(rows, cols)].reshape(q_h * q_w, c)
      out = _np_block(long_params, group)
      if y is None:
        out_c = out.shape[1]
        y = np.zeros((q_h * p_h, q_w * p_w, out_c))
      y[np.ix_(rows, cols)] = out.reshape(q_h, q_w, out_c)
  # Short range: each contiguous p_h x p_w cell.
  z = np.zeros_like(y)
  for qh in range(q_h):
    for qw in range(q_w):
      cell = y[qh * p_h:(qh + 1) * p_h, qw * p_w:(qw + 1) * p_w]
      out = _np_block(short_params, cell.reshape(p_h * p_w, out_c))
      z[qh * p_h:(qh + 1) * p_h, qw * p_w:(qw + 1) * p_w] = out.reshape(
          p_h, p_w, out_c)
  return z[top:top + h, left:left + w]


def _check_against_loops(size, partition, activation, dtype, tolerance):
  rng = np.random.default_rng(sum(size))
  x = rng.normal(size=(2,) + size + (6,)).astype(dtype)
  layer = issa.InterlacedSparseSelfAttention(
      key_channels=4, value_channels=5, output_channels=7,
      partition_factors=partition, activation=activation)
  layer(x)
  _randomize(layer, rng, x)
  got = layer(x, training=False).numpy()
  assert got.dtype == dtype
  assert got.shape == (2,) + size + (7,)
  # The outputs vary over the image, so the comparison is not vacuous.
  assert got.std(axis=(1, 2)).max() > 0.2
  for b in range(2):
    want = _np_issa(layer, x[b].astype(np.float64))
    np.testing.assert_allclose(got[b], want, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("size,partition,activation", [
    ((97, 97), (8, 8), "relu"),
    ((65, 129), (8, 8), "relu"),
    ((16, 21), (8, 8), "leaky_relu"),
    ((10, 9), (3, 4), "relu"),
])
def test_issa_matches_explicit_group_loops(size, partition, activation,
                                           float64):
  del float64  # Fixture: float64 layers, so 1e-5 checks the grouping only.
  _check_against_loops(size, partition, activation, np.float64, 1e-5)


def test_issa_float32_close_to_explicit_group_loops():
  # Sharp attention (logits up to ~20) magnifies float32 rounding.
  _check_against_loops((65, 129), (8, 8), "relu", np.float32, 5e-4)


def test_block_is_dense_attention():
  rng = np.random.default_rng(3)
  x = rng.normal(size=(3, 5, 4, 6)).astype(np.float32)
  block = issa.ISSASelfAttentionBlock(key_channels=4)
  block(x)
  _randomize(block, rng, x)
  got = block(x).numpy()
  params = _np_params(block)
  for g in range(3):
    want = _np_block(params, x[g].reshape(20, 6).astype(np.float64))
    np.testing.assert_allclose(got[g].reshape(20, 6), want, rtol=1e-5,
                               atol=1e-5)


def _dependency(layer, x):
  """|d out[i, j, :].sum() / d x[k, l, :]| summed over channels: [h, w, h, w].

  Inference is per image, so one backward pass over h*w copies of the image,
  copy b selecting output position b, gives the whole Jacobian pattern.
  """
  _, h, w, _ = x.shape
  copies = tf.constant(np.repeat(x, h * w, axis=0))
  select = np.eye(h * w, dtype=np.float32).reshape(h * w, h, w, 1)
  with tf.GradientTape() as tape:
    tape.watch(copies)
    loss = tf.reduce_sum(layer(copies, training=False) * select)
  grad = tape.gradient(loss, copies).numpy()
  return np.abs(grad).sum(axis=-1).reshape(h, w, h, w)


def test_every_output_depends_on_every_input():
  rng = np.random.default_rng(4)
  x = rng.normal(size=(1, 7, 9, 3)).astype(np.float32)
  layer = issa.InterlacedSparseSelfAttention(
      key_channels=4, partition_factors=(3, 4), activation="leaky_relu")
  layer(x)
  _randomize(layer, rng, x)
  dep = _dependency(layer, x)
  assert dep.min() > 1e-7, f"{(dep <= 1e-7).sum()} pairs are independent"
  # The long-range pass alone does not connect every pair, so the check has
  # teeth: replace the short-range pass by the identity.
  short_range = layer.short_range
  try:
    layer.short_range = lambda t, training=None: t
    dep_long = _dependency(layer, x)
  finally:
    layer.short_range = short_range
  # Connected exactly when the padded coordinates (pad 1 on top, 1 on the
  # left) share the offset inside their 3x4 cell.
  rows = (np.arange(7) + 1) % 3
  cols = (np.arange(9) + 1) % 4
  same = ((rows[:, None, None, None] == rows[None, None, :, None]) &
          (cols[None, :, None, None] == cols[None, None, None, :]))
  np.testing.assert_array_equal(dep_long > 1e-7, same)


def test_unknown_shapes_xla_and_training():
  rng = np.random.default_rng(5)
  layer = issa.InterlacedSparseSelfAttention(key_channels=4,
                                             partition_factors=(4, 4))
  x = rng.normal(size=(2, 13, 10, 8)).astype(np.float32)
  eager = layer(x, training=False).numpy()
  fn = tf.function(lambda t: layer(t, training=False),
                   input_signature=[tf.TensorSpec([None, None, None, 8])])
  np.testing.assert_allclose(fn(x).numpy(), eager, rtol=1e-5, atol=1e-5)
  assert fn(x[:1, :5, :7]).shape == (1, 5, 7, 8)
  xla = tf.function(lambda t: layer(t, training=False), jit_compile=True)
  np.testing.assert_allclose(xla(x).numpy(), eager, rtol=1e-4, atol=1e-4)
  train = layer(x, training=True)
  assert train.shape == x.shape
  assert np.all(np.isfinite(train.numpy()))


def test_mixed_precision_softmax_in_float32():
  rng = np.random.default_rng(6)
  x = rng.normal(size=(1, 9, 9, 8)).astype(np.float32)
  previous = tf_keras.mixed_precision.global_policy()
  tf_keras.mixed_precision.set_global_policy("mixed_float16")
  try:
    layer = issa.InterlacedSparseSelfAttention(key_channels=8,
                                               partition_factors=(4, 4))
    y16 = layer(x)
  finally:
    tf_keras.mixed_precision.set_global_policy(previous)
  assert y16.dtype == tf.float16
  ref = issa.InterlacedSparseSelfAttention(key_channels=8,
                                           partition_factors=(4, 4))
  ref(x)
  ref.set_weights(layer.get_weights())
  np.testing.assert_allclose(y16.numpy(), ref(x).numpy(), atol=3e-2,
                             rtol=3e-2)


def test_param_count_config_and_errors():
  layer = issa.InterlacedSparseSelfAttention(key_channels=256)
  layer(tf.zeros([1, 8, 8, 512]))
  # Per pass: query and key 512*256 + 256*256 + 2 BN; value 512*512 + bias;
  # output 512*512 + BN (the ISANet head's numbers).
  per_pass = 2 * (512 * 256 + 256 * 256 + 2 * 512) + (512 * 512 + 512) + (
      512 * 512 + 1024)
  got = sum(int(np.prod(w.shape)) for w in layer.trainable_weights)
  assert got == 2 * per_pass == 1842176
  clone = tf_keras.layers.deserialize(tf_keras.layers.serialize(layer))
  assert isinstance(clone, issa.InterlacedSparseSelfAttention)
  assert clone.get_config() == layer.get_config()
  with pytest.raises(ValueError, match="partition_factors"):
    issa.InterlacedSparseSelfAttention(partition_factors=(8, 0))
  with pytest.raises(ValueError, match="activation"):
    issa.InterlacedSparseSelfAttention(activation="tanh")
  with pytest.raises(ValueError, match="key_channels"):
    issa.ISSASelfAttentionBlock(key_channels=0)


def test_saved_model_file_round_trip(tmp_path):
  inputs = tf_keras.Input((None, None, 6))
  layer = issa.InterlacedSparseSelfAttention(key_channels=4,
                                             partition_factors=(2, 3))
  model = tf_keras.Model(inputs, layer(inputs))
  x = np.random.default_rng(8).normal(size=(1, 7, 9, 6)).astype(np.float32)
  _randomize(layer, np.random.default_rng(7), x)
  path = str(tmp_path / "issa.keras")
  model.save(path)
  loaded = tf_keras.models.load_model(path)
  np.testing.assert_array_equal(loaded(x).numpy(), model(x).numpy())
