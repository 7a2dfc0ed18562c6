"""MSCA and the MSCAN block against explicit numpy and torch references."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras
import torch
import torch.nn.functional as F

from axial_deeplab_tf.layers import msca


def _randomize(layer, rng, scale=0.3):
  """Gives every weight a random value: BN scales near 1, random statistics,
  layer scales near 0.5 so that both residual branches weigh in the output.
  """
  for w in layer.weights:
    shape = w.shape.as_list()
    if "moving_variance" in w.name:
      value = rng.uniform(0.5, 1.5, shape)
    elif "gamma" in w.name:
      value = rng.normal(1.0, 0.2, shape)
    elif "layer_scale" in w.name:
      value = rng.normal(0.5, 0.1, shape)
    else:
      value = rng.normal(0.0, scale, shape)
    w.assign(value.astype(np.float32))


def _np_depthwise(x, kernel, bias):
  """Depthwise cross-correlation with zero 'same' padding, by shifted sums.

  x: [b, h, w, c]; kernel: [kh, kw, c] (odd sizes); bias: [c].
  """
  kh, kw = kernel.shape[:2]
  _, h, w, _ = x.shape
  xp = np.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
  out = np.zeros_like(x)
  for i in range(kh):
    for j in range(kw):
      out += xp[:, i:i + h, j:j + w, :] * kernel[i, j]
  return out + bias


def _dw(layer):
  return (layer.depthwise_kernel.numpy()[:, :, :, 0].astype(np.float64),
          layer.bias.numpy().astype(np.float64))


def _np_msca(layer, x, base=5, strips=(7, 11, 21)):
  """MSCA by the spec (segnext_issa.md 1): a = dw base x base (x); a + the
  dw 1xk-then-kx1 branches of a for each k; 1x1 conv (bias); times x.
  The kernel shapes are checked against the spec, not read from the layer.
  """
  kernel, bias = _dw(layer.base_conv)
  assert kernel.shape[:2] == (base, base)
  a = _np_depthwise(x, kernel, bias)
  total = a.copy()
  assert len(layer.strip_convs) == len(strips)
  for k, (conv_row, conv_col) in zip(strips, layer.strip_convs):
    row, col = _dw(conv_row), _dw(conv_col)
    assert row[0].shape[:2] == (1, k) and col[0].shape[:2] == (k, 1)
    total += _np_depthwise(_np_depthwise(a, *row), *col)
  w = layer.mix_conv.kernel.numpy()[0, 0].astype(np.float64)
  return (total @ w + layer.mix_conv.bias.numpy()) * x


@pytest.mark.parametrize("shape", [(2, 9, 11, 4), (1, 24, 5, 3)])
def test_msca_matches_explicit_convolution(shape):
  # Strips (up to 21) longer than the map check the zero padding too.
  rng = np.random.default_rng(0)
  x = rng.normal(size=shape).astype(np.float32)
  layer = msca.MultiScaleConvAttention()
  layer(x)
  _randomize(layer, rng)
  want = _np_msca(layer, x.astype(np.float64))
  np.testing.assert_allclose(layer(x).numpy(), want, rtol=1e-5, atol=1e-5)


def test_strip_pair_equals_dense_outer_product_kernel():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(2, 15, 13, 3)).astype(np.float32)
  layer = msca.MultiScaleConvAttention(kernel_sizes=(7, 11))
  layer(x)
  _randomize(layer, rng)
  for conv_row, conv_col in layer.strip_convs:
    # Without biases, a 1xk conv then a kx1 conv is one kxk conv whose kernel
    # is the outer product of the two strips (also at the borders).
    conv_row.bias.assign(tf.zeros_like(conv_row.bias))
    conv_col.bias.assign(tf.zeros_like(conv_col.bias))
    row = conv_row.depthwise_kernel.numpy()[0, :, :, 0]  # [k, c]
    col = conv_col.depthwise_kernel.numpy()[:, 0, :, 0]  # [k, c]
    dense = np.einsum("ic,jc->ijc", col, row)[..., None]
    want = tf.nn.depthwise_conv2d(x, dense, [1, 1, 1, 1], "SAME")
    got = conv_col(conv_row(x))
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5,
                               atol=1e-5)


def _t(a):
  return torch.tensor(np.asarray(a), dtype=torch.float64)


def _torch_conv(x, layer, groups=1):
  """Applies a Keras (depthwise) conv layer's weights with torch, NCHW."""
  if groups == 1:
    kernel = _t(layer.kernel.numpy().transpose(3, 2, 0, 1))
  else:
    kernel = _t(layer.depthwise_kernel.numpy().transpose(2, 3, 0, 1))
  kh, kw = kernel.shape[2:]
  bias = _t(layer.bias.numpy()) if layer.use_bias else None
  return F.conv2d(x, kernel, bias, padding=(kh // 2, kw // 2), groups=groups)


def _torch_bn(x, bn):
  return F.batch_norm(x, _t(bn.moving_mean.numpy()),
                      _t(bn.moving_variance.numpy()), _t(bn.gamma.numpy()),
                      _t(bn.beta.numpy()), training=False, eps=bn.epsilon)


def torch_mscan_block(block, x):
  """MSCAN block in inference, written with torch ops on NCHW float64."""
  c = x.shape[1]
  y = _torch_bn(x, block.attn_norm)
  shortcut = y
  y = F.gelu(_torch_conv(y, block.attn_proj_in))
  m = block.msca
  a = _torch_conv(y, m.base_conv, groups=c)
  total = a
  for conv_row, conv_col in m.strip_convs:
    total = total + _torch_conv(_torch_conv(a, conv_row, c), conv_col, c)
  y = _torch_conv(total, m.mix_conv) * y
  y = _torch_conv(y, block.attn_proj_out) + shortcut
  x = x + _t(block.attn_layer_scale.numpy())[None, :, None, None] * y
  y = _torch_bn(x, block.mlp_norm)
  y = _torch_conv(y, block.mlp_fc1)
  y = F.gelu(_torch_conv(y, block.mlp_dwconv, groups=y.shape[1]))
  y = _torch_conv(y, block.mlp_fc2)
  return x + _t(block.mlp_layer_scale.numpy())[None, :, None, None] * y


def test_mscan_block_matches_torch_reference():
  rng = np.random.default_rng(2)
  x = rng.normal(size=(2, 7, 10, 6)).astype(np.float32)
  block = msca.MSCANBlock(mlp_ratio=2, drop_path_rate=0.2, dropout_rate=0.1)
  block(x)
  _randomize(block, rng, scale=0.2)
  want = torch_mscan_block(block, _t(x).permute(0, 3, 1, 2))
  got = block(x, training=False).numpy()
  # The residual branches change the input substantially.
  assert np.abs(got - x).mean() > 0.1
  np.testing.assert_allclose(got, want.permute(0, 2, 3, 1).numpy(),
                             rtol=1e-4, atol=1e-4)


def test_mscan_block_defaults_and_weight_count():
  block = msca.MSCANBlock(mlp_ratio=4)
  block(tf.zeros([1, 5, 5, 8]))
  np.testing.assert_allclose(block.attn_layer_scale.numpy(), 1e-2)
  np.testing.assert_allclose(block.mlp_layer_scale.numpy(), 1e-2)
  c, h = 8, 32
  # BN 2x2c, proj in/out, MSCA (5x5 + 3 strip pairs + 1x1), fc1, dw3x3, fc2,
  # two layer scales.
  want = (4 * c + 2 * (c * c + c) + (25 * c + c) +
          2 * c * (7 + 11 + 21) + 6 * c + (c * c + c) + (c * h + h) +
          (9 * h + h) + (h * c + c) + 2 * c)
  got = sum(int(np.prod(w.shape)) for w in block.trainable_weights)
  assert got == want


def test_drop_path_drops_whole_samples_in_training():
  tf.random.set_seed(3)
  block = msca.MSCANBlock(drop_path_rate=0.5)
  x = tf.random.normal([64, 4, 4, 4])
  block(x)
  # With layer scale 1e-2 the residual branches are small but non-zero; a
  # dropped sample keeps exactly its input for a branch. With the attention
  # branch gone too, a sample whose both branches are dropped equals x.
  y = block(x, training=True)
  unchanged = np.all(np.isclose(y.numpy(), x.numpy(), rtol=0, atol=0),
                     axis=(1, 2, 3))
  assert 0 < unchanged.sum() < 64
  # In inference nothing is dropped: the block is the reference computed
  # from its weights (not the block compared with itself).
  want = torch_mscan_block(block, _t(x.numpy()).permute(0, 3, 1, 2))
  np.testing.assert_allclose(block(x, training=False).numpy(),
                             want.permute(0, 2, 3, 1).numpy(),
                             rtol=1e-5, atol=1e-5)


def test_config_round_trip_and_errors():
  block = msca.MSCANBlock(mlp_ratio=3, drop_path_rate=0.1,
                          kernel_sizes=(3, 5), base_kernel_size=3)
  x = tf.random.normal([1, 6, 6, 4])
  block(x)
  clone = tf_keras.layers.deserialize(tf_keras.layers.serialize(block))
  assert isinstance(clone, msca.MSCANBlock)
  clone(x)
  clone.set_weights(block.get_weights())
  np.testing.assert_allclose(clone(x).numpy(), block(x).numpy(), atol=1e-6)
  with pytest.raises(ValueError, match="kernel_sizes"):
    msca.MultiScaleConvAttention(kernel_sizes=(7, 4))
  with pytest.raises(ValueError, match="base_kernel_size"):
    msca.MultiScaleConvAttention(base_kernel_size=0)
  with pytest.raises(ValueError, match="drop_path_rate"):
    msca.MSCANBlock(drop_path_rate=1.5)
  with pytest.raises(ValueError, match="channels"):
    msca.MSCANBlock()(tf.zeros([2, 3, 4]))


def test_mixed_precision_block_runs_in_float16():
  previous = tf_keras.mixed_precision.global_policy()
  tf_keras.mixed_precision.set_global_policy("mixed_float16")
  try:
    block = msca.MSCANBlock(mlp_ratio=2)
    x = tf.random.normal([1, 8, 8, 8])
    y = block(x)
  finally:
    tf_keras.mixed_precision.set_global_policy(previous)
  assert y.dtype == tf.float16
  assert block.attn_layer_scale.dtype == tf.float32
  # float16 compute against the float64 reference from the same weights.
  want = torch_mscan_block(block, _t(x.numpy()).permute(0, 3, 1, 2))
  np.testing.assert_allclose(y.numpy().astype(np.float64),
                             want.permute(0, 2, 3, 1).numpy(), atol=2e-2)


def test_saved_model_file_round_trip(tmp_path):
  inputs = tf_keras.Input((None, None, 6))
  model = tf_keras.Model(inputs, msca.MSCANBlock(mlp_ratio=2)(inputs))
  _randomize(model, np.random.default_rng(8))
  x = np.random.default_rng(9).normal(size=(1, 7, 9, 6)).astype(np.float32)
  path = str(tmp_path / "block.keras")
  model.save(path)
  loaded = tf_keras.models.load_model(path)
  np.testing.assert_array_equal(loaded(x).numpy(), model(x).numpy())
