"""Two-pass synchronized batch-norm statistics against float64 numpy.

A channel whose mean is large against its spread: Var = E[x^2] - E[x]^2 in
float32 (tf_keras' synchronized statistics) loses the variance; the
two-pass statistics (mean first, then the mean of (x - mean)^2) keep it.
Outside a strategy the default replica context runs the synchronized path
with a one-replica all-reduce.
"""

import numpy as np
import tensorflow as tf
import tf_keras

from axial_deeplab_tf import models
from axial_deeplab_tf.layers import common


def _inputs():
  rng = np.random.default_rng(0)
  # Channel means 100 and 0, spreads 1e-2 and 1.
  x = rng.normal(size=(4, 6, 6, 2))
  x[..., 0] = 100.0 + 0.01 * x[..., 0]
  return x


def _numpy_normalised(x, epsilon):
  mean = x.mean(axis=(0, 1, 2))
  var = x.var(axis=(0, 1, 2))
  return (x - mean) / np.sqrt(var + epsilon), var


def test_two_pass_statistics_match_float64():
  x = _inputs()
  epsilon = 1e-7
  expected, variance = _numpy_normalised(x, epsilon)
  layer = common.batch_norm(0.5, epsilon, True, name="bn")
  assert isinstance(layer, common.TwoPassSyncBatchNormalization)
  out = layer(tf.constant(x, tf.float32), training=True).numpy()
  np.testing.assert_allclose(out, expected, atol=2e-2)
  # Moving variance: 0.5 * 1 + 0.5 * batch variance (the non-fused path's
  # biased variance); the first channel's batch variance to 1e-3.
  np.testing.assert_allclose(layer.moving_variance.numpy(),
                             0.5 + 0.5 * variance, rtol=1e-6)
  batch_variance = (layer.moving_variance.numpy()[0] - 0.5) / 0.5
  np.testing.assert_allclose(batch_variance, variance[0], rtol=1e-3)
  # The one-pass statistics of tf_keras' own synchronized layer lose the
  # first channel's variance (1e-4 against E[x^2] = 1e4).
  plain = tf_keras.layers.BatchNormalization(
      momentum=0.5, epsilon=epsilon, synchronized=True)
  plain(tf.constant(x, tf.float32), training=True)
  plain_batch_variance = (plain.moving_variance.numpy()[0] - 0.5) / 0.5
  assert abs(plain_batch_variance / variance[0] - 1) > 0.1
  # Inference is the base class's.
  np.testing.assert_allclose(
      layer(tf.constant(x, tf.float32), training=False).numpy(),
      tf_keras.layers.BatchNormalization.call(
          layer, tf.constant(x, tf.float32), training=False).numpy())


def test_gradients_match_the_unsynchronised_layer():
  # Moderate statistics, where tf.nn.moments is exact: the same gradients.
  x = tf.constant(np.random.default_rng(1).normal(size=(3, 5, 5, 4)),
                  tf.float32)
  two_pass = common.batch_norm(0.9, 1e-3, True, name="a")
  local = common.batch_norm(0.9, 1e-3, False, name="b")
  grads = []
  for layer in (two_pass, local):
    with tf.GradientTape() as tape:
      tape.watch(x)
      loss = tf.reduce_sum(tf.sin(layer(x, training=True)))
    grads.append(tape.gradient(loss, [x] + layer.trainable_weights))
  for a, b in zip(*grads):
    np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5)


def test_zoo_models_get_two_pass_statistics_in_every_synchronized_norm():
  overrides = dict(num_classes=3, semantic_channels=8, instance_channels=8,
                   aspp_channels=8)
  synced = models.build("panoptic_deeplab_r50", use_sync_bn=True,
                        **overrides)
  norms = [l for l in synced.submodules
           if isinstance(l, tf_keras.layers.BatchNormalization)]
  assert len(norms) > 50
  # Model Garden's backbone and ASPP included.
  assert all(type(l) is common.TwoPassSyncBatchNormalization  # pylint: disable=unidiomatic-typecheck
             for l in norms), [type(l) for l in norms
                               if not isinstance(
                                   l, common.TwoPassSyncBatchNormalization)]
  local = models.build("panoptic_deeplab_r50", **overrides)
  assert not any(isinstance(l, common.TwoPassSyncBatchNormalization)
                 for l in local.submodules)
  assert [v.shape for v in synced.weights] == [v.shape for v in local.weights]
  assert common.use_two_pass_sync_statistics(synced) == 0
