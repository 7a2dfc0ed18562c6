"""NMF2D, Hamburger and LightHamHead against numpy and torch references."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras
import torch
import torch.nn.functional as F

from axial_deeplab_tf.layers import hamburger
from axial_deeplab_tf.modeling.heads import light_ham_head


def _np_nmf(x, bases, steps, eps=1e-6, inv_t=1.0):
  """NMF of one sample in the paper's layout: x [D, N] ~ bases [D, R] coef^T.

  Returns the reconstruction [D, N].
  """
  def softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)

  def coef_step(coef, bases):
    return coef * (x.T @ bases) / (coef @ (bases.T @ bases) + eps)

  coef = softmax(inv_t * (x.T @ bases))  # [N, R]
  for _ in range(steps):
    coef = coef_step(coef, bases)
    bases = bases * (x @ coef) / (bases @ (coef.T @ coef) + eps)
  coef = coef_step(coef, bases)
  return bases @ coef.T


def _positive_map(rng, shape):
  return (np.abs(rng.normal(size=shape)) + 0.05).astype(np.float32)


@pytest.mark.parametrize("training,steps", [(True, 6), (False, 7),
                                            (None, 7)])
def test_nmf_matches_numpy_loop(training, steps):
  rng = np.random.default_rng(0)
  x = _positive_map(rng, (2, 5, 7, 12))
  layer = hamburger.NMF2D(rank=4, seed=11)
  got = layer(x, training=training).numpy()
  bases = layer.sample_bases(2).numpy()
  assert bases.shape == (2, 12, 4)
  assert np.all(bases >= 0)
  np.testing.assert_allclose(np.linalg.norm(bases, axis=1), 1.0, rtol=1e-6)
  for b in range(2):
    flat = x[b].reshape(35, 12).astype(np.float64)
    want = _np_nmf(flat.T, bases[b].astype(np.float64), steps).T
    np.testing.assert_allclose(got[b].reshape(35, 12), want, rtol=1e-4,
                               atol=1e-5)
  # The step count matters, so the check above can tell 6 from 7.
  other = _np_nmf(x[0].reshape(35, 12).T.astype(np.float64),
                  bases[0].astype(np.float64), 13 - steps).T
  assert np.abs(other - got[0].reshape(35, 12)).max() > 1e-4


def test_nmf_channel_groups_factorise_separately():
  rng = np.random.default_rng(1)
  x = _positive_map(rng, (1, 4, 6, 8))
  layer = hamburger.NMF2D(rank=3, num_channel_groups=2, seed=5)
  got = layer(x).numpy().reshape(24, 8)
  bases = layer.sample_bases(1).numpy()  # [S, D, R]
  flat = x.reshape(24, 8).astype(np.float64)
  for s in range(2):
    want = _np_nmf(flat[:, 4 * s:4 * s + 4].T, bases[s], 7).T
    np.testing.assert_allclose(got[:, 4 * s:4 * s + 4], want, rtol=1e-4,
                               atol=1e-5)


def test_nmf_seed_reproducible_and_unseeded_random():
  rng = np.random.default_rng(2)
  x = _positive_map(rng, (3, 4, 4, 8))
  a = hamburger.NMF2D(rank=4, seed=7)(x).numpy()
  b = hamburger.NMF2D(rank=4, seed=7)(x).numpy()
  c = hamburger.NMF2D(rank=4, seed=8)(x).numpy()
  np.testing.assert_array_equal(a, b)
  assert np.abs(a - c).max() > 1e-4
  # With a seed, an image's output does not depend on the rest of the batch.
  single = hamburger.NMF2D(rank=4, seed=7)(x[1:2]).numpy()
  np.testing.assert_allclose(single[0], a[1], rtol=1e-6, atol=1e-6)
  unseeded = hamburger.NMF2D(rank=4)
  assert np.abs(unseeded(x).numpy() - unseeded(x).numpy()).max() > 1e-4


def _torch_nmf(x, bases, steps, one_step, eps=1e-6):
  """x [G, N, D], bases [G, D, R] (torch float64); reconstruction [G, N, D]."""
  loop_x = x.detach() if one_step else x
  coef = torch.softmax(loop_x @ bases, dim=-1)
  for _ in range(steps):
    coef = coef * (loop_x @ bases) / (
        coef @ (bases.transpose(1, 2) @ bases) + eps)
    bases = bases * (loop_x.transpose(1, 2) @ coef) / (
        bases @ (coef.transpose(1, 2) @ coef) + eps)
  if one_step:
    coef, bases = coef.detach(), bases.detach()
  coef = coef * (x @ bases) / (coef @ (bases.transpose(1, 2) @ bases) + eps)
  return coef @ bases.transpose(1, 2)


@pytest.mark.parametrize("one_step", [True, False])
def test_nmf_gradient_matches_torch_autograd(one_step):
  rng = np.random.default_rng(3)
  x = _positive_map(rng, (2, 3, 4, 6))
  weights = rng.normal(size=(2, 3, 4, 6))
  layer = hamburger.NMF2D(rank=3, seed=1, one_step_gradient=one_step)
  layer.build(x.shape)
  bases = layer.sample_bases(2)
  xt = tf.constant(x)
  with tf.GradientTape() as tape:
    tape.watch(xt)
    loss = tf.reduce_sum(layer(xt, training=True) * weights)
  got = tape.gradient(loss, xt).numpy()

  xx = torch.tensor(x.reshape(2, 12, 6), dtype=torch.float64,
                    requires_grad=True)
  out = _torch_nmf(xx, torch.tensor(bases.numpy(), dtype=torch.float64), 6,
                   one_step)
  (out * torch.tensor(weights.reshape(2, 12, 6))).sum().backward()
  want = xx.grad.numpy().reshape(x.shape)
  np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-4)
  if one_step:
    # The two modes really differ.
    xx.grad = None
    full = _torch_nmf(xx, torch.tensor(bases.numpy(), dtype=torch.float64), 6,
                      False)
    (full * torch.tensor(weights.reshape(2, 12, 6))).sum().backward()
    assert np.abs(xx.grad.numpy().reshape(x.shape) - got).max() > 1e-3


def test_nmf_training_tensor_uses_tf_cond():
  rng = np.random.default_rng(4)
  x = _positive_map(rng, (1, 4, 5, 8))
  layer = hamburger.NMF2D(rank=3, seed=2)
  fn = tf.function(lambda t, flag: layer(t, training=flag))
  for flag in (True, False):
    np.testing.assert_allclose(fn(x, tf.constant(flag)).numpy(),
                               layer(x, training=flag).numpy(), rtol=1e-6)


def test_nmf_float32_under_mixed_precision():
  rng = np.random.default_rng(5)
  x = _positive_map(rng, (1, 6, 6, 16))
  previous = tf_keras.mixed_precision.global_policy()
  tf_keras.mixed_precision.set_global_policy("mixed_float16")
  try:
    layer = hamburger.NMF2D(rank=4, seed=3)
    y16 = layer(tf.cast(x, tf.float16))
  finally:
    tf_keras.mixed_precision.set_global_policy(previous)
  assert y16.dtype == tf.float16
  bases = layer.sample_bases(1).numpy()[0].astype(np.float64)
  x16 = x.astype(np.float16).astype(np.float64).reshape(36, 16)
  want = _np_nmf(x16.T, bases, 7).T
  # Only the final cast to float16 is lossy.
  np.testing.assert_allclose(y16.numpy().astype(np.float64).reshape(36, 16),
                             want, rtol=2e-3, atol=2e-3)


def _t(a):
  return torch.tensor(np.asarray(a), dtype=torch.float64)


def _torch_conv1x1(x, layer):
  kernel = _t(layer.kernel.numpy().transpose(3, 2, 0, 1))
  bias = _t(layer.bias.numpy()) if layer.use_bias else None
  return F.conv2d(x, kernel, bias)


def _torch_gn(x, gn):
  return F.group_norm(x, gn.groups, _t(gn.gamma.numpy()),
                      _t(gn.beta.numpy()), eps=gn.epsilon)


def _torch_hamburger(layer, x, bases, steps):
  """Hamburger on NCHW float64 torch tensors with given NMF bases."""
  b, c, h, w = x.shape
  y = F.relu(_torch_conv1x1(x, layer.lower_bread))
  flat = y.reshape(b, c, h * w).transpose(1, 2)
  y = _torch_nmf(flat, bases, steps, one_step=True)
  y = y.transpose(1, 2).reshape(b, c, h, w)
  y = _torch_gn(_torch_conv1x1(y, layer.upper_bread), layer.upper_norm)
  return F.relu(x + y)


def _randomize(layer, rng):
  """Random weights; GroupNorm scales near 1 so the NMF path matters."""
  for w in layer.weights:
    mean = 1.0 if "gamma" in w.name else 0.0
    w.assign(rng.normal(mean, 0.3, w.shape.as_list()).astype(np.float32))


def test_hamburger_matches_torch_reference():
  rng = np.random.default_rng(6)
  x = rng.normal(size=(2, 5, 6, 16)).astype(np.float32)
  layer = hamburger.Hamburger(rank=4, norm_groups=4, seed=9)
  layer(x)
  _randomize(layer, rng)
  bases = _t(layer.nmf.sample_bases(2).numpy())
  want = _torch_hamburger(layer, _t(x).permute(0, 3, 1, 2), bases, 7)
  np.testing.assert_allclose(layer(x).numpy(),
                             want.permute(0, 2, 3, 1).numpy(), rtol=1e-4,
                             atol=1e-4)


def test_light_ham_head_matches_torch_reference():
  rng = np.random.default_rng(7)
  feats = [rng.normal(size=s).astype(np.float32)
           for s in [(2, 9, 11, 8), (2, 5, 6, 16), (2, 3, 3, 16)]]
  head = light_ham_head.LightHamHead(num_classes=5, channels=16, ham_channels=32,
                                rank=4, norm_groups=8, seed=4)
  head(feats)
  _randomize(head, rng)
  got = head(feats, training=False).numpy()

  t = [_t(f).permute(0, 3, 1, 2) for f in feats]
  t = [t[0]] + [F.interpolate(f, size=(9, 11), mode="bilinear",
                              align_corners=False) for f in t[1:]]
  y = torch.cat(t, dim=1)
  y = F.relu(_torch_gn(_torch_conv1x1(y, head.squeeze_conv),
                       head.squeeze_norm))
  bases = _t(head.hamburger.nmf.sample_bases(2).numpy())
  y = _torch_hamburger(head.hamburger, y, bases, 7)
  y = F.relu(_torch_gn(_torch_conv1x1(y, head.align_conv), head.align_norm))
  want = _torch_conv1x1(y, head.classifier).permute(0, 2, 3, 1).numpy()
  assert got.shape == (2, 9, 11, 5)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_light_ham_head_param_count_and_unknown_sizes():
  head = light_ham_head.LightHamHead(num_classes=150, channels=256,
                                ham_channels=256, rank=16)
  fn = tf.function(lambda a, b, c: head([a, b, c], training=False),
                   input_signature=[tf.TensorSpec([None, None, None, 64]),
                                    tf.TensorSpec([None, None, None, 160]),
                                    tf.TensorSpec([None, None, None, 256])])
  out = fn(tf.zeros([1, 9, 13, 64]), tf.zeros([1, 5, 7, 160]),
           tf.zeros([1, 3, 4, 256]))
  assert out.shape == (1, 9, 13, 150)
  # squeeze 480*256 + GN, ham in (bias), ham out + GN, align + GN, classifier.
  want = (480 * 256 + 512) + (256 * 256 + 256) + (256 * 256 + 512) + (
      256 * 256 + 512) + (256 * 150 + 150)
  assert sum(int(np.prod(w.shape)) for w in head.trainable_weights) == want


def test_config_round_trip_and_errors():
  head = light_ham_head.LightHamHead(num_classes=3, channels=16, ham_channels=16,
                                rank=2, norm_groups=4, seed=3, inv_t=2.0,
                                one_step_gradient=False)
  clone = tf_keras.layers.deserialize(tf_keras.layers.serialize(head))
  assert isinstance(clone, light_ham_head.LightHamHead)
  assert clone.get_config() == head.get_config()
  ham = hamburger.Hamburger(rank=3, seed=1)
  assert hamburger.Hamburger.from_config(ham.get_config()).get_config() == (
      ham.get_config())
  with pytest.raises(ValueError, match="rank"):
    hamburger.NMF2D(rank=0)
  with pytest.raises(TypeError, match="seed"):
    hamburger.NMF2D(seed=1.5)
  with pytest.raises(ValueError, match="ham_channels"):
    light_ham_head.LightHamHead(num_classes=2, ham_channels=48, norm_groups=32)
  with pytest.raises(ValueError, match="divisible"):
    hamburger.NMF2D(num_channel_groups=3)(tf.zeros([1, 2, 2, 8]))
  with pytest.raises(TypeError, match="list"):
    head(tf.zeros([1, 4, 4, 8]))


def test_saved_model_file_round_trip(tmp_path):
  inputs = [tf_keras.Input((None, None, 8)), tf_keras.Input((None, None, 8))]
  head = light_ham_head.LightHamHead(num_classes=3, channels=8, ham_channels=8,
                                rank=2, norm_groups=4, seed=5)
  model = tf_keras.Model(inputs, head(inputs))
  _randomize(model, np.random.default_rng(8))
  rng = np.random.default_rng(9)
  x = [rng.normal(size=(1, 6, 7, 8)).astype(np.float32),
       rng.normal(size=(1, 3, 4, 8)).astype(np.float32)]
  path = str(tmp_path / "head.keras")
  model.save(path)
  loaded = tf_keras.models.load_model(path)
  np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), atol=1e-6)


def test_nmf_seeded_output_same_under_xla():
  rng = np.random.default_rng(10)
  x = _positive_map(rng, (2, 5, 6, 8))
  layer = hamburger.NMF2D(rank=3, seed=21)
  eager = layer(x).numpy()
  compiled = tf.function(lambda t: layer(t), jit_compile=True)(x).numpy()
  np.testing.assert_allclose(compiled, eager, rtol=1e-5, atol=1e-6)
