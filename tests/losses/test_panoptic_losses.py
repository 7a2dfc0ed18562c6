"""Tests of the Panoptic-DeepLab losses against numpy computations."""

import numpy as np
import pytest
import tensorflow as tf

from axial_deeplab_tf.losses import PanopticDeepLabLoss
from axial_deeplab_tf.losses import WeightedBootstrappedCrossEntropy
from axial_deeplab_tf.losses import WeightedL1
from axial_deeplab_tf.losses import WeightedMSE

IGNORE = 255


def numpy_pixel_ce(labels, logits):
  """Per-pixel softmax cross-entropy with a stable log-sum-exp, float64."""
  logits = logits.astype(np.float64)
  top = logits.max(axis=-1, keepdims=True)
  log_z = np.log(np.exp(logits - top).sum(axis=-1)) + top[..., 0]
  safe = np.where(labels == IGNORE, 0, labels)
  picked = np.take_along_axis(logits, safe[..., None], axis=-1)[..., 0]
  return log_z - picked


def numpy_bootstrapped_ce(labels, logits, weights, top_k):
  ce = numpy_pixel_ce(labels, logits)
  per_image = []
  for b in range(labels.shape[0]):
    w = np.where(labels[b] == IGNORE, 0.0, weights[b]).ravel()
    values = (ce[b].ravel() * w)[w != 0]
    k = int(np.round(top_k * labels[b].size))
    kept = np.sort(values)[::-1][:k]
    per_image.append(kept.mean() if kept.size else 0.0)
  return float(np.mean(per_image))


def numpy_regression(target, pred, weights, fn):
  per_image = []
  for b in range(target.shape[0]):
    err = fn(target[b].astype(np.float64) - pred[b]).mean(axis=-1)
    w = weights[b]
    nonzero = np.count_nonzero(w)
    per_image.append((err * w).sum() / nonzero if nonzero else 0.0)
  return float(np.mean(per_image))


def random_semantic(rng, shape=(3, 7, 9), num_classes=5):
  labels = rng.integers(0, num_classes, shape).astype(np.int32)
  labels[rng.random(shape) < 0.2] = IGNORE
  logits = rng.normal(0, 2, shape + (num_classes,)).astype(np.float32)
  weights = rng.choice([0.0, 1.0, 1.0, 3.0], shape).astype(np.float32)
  return labels, logits, weights


@pytest.mark.parametrize("top_k", [1.0, 0.5, 0.2, 0.05])
def test_bootstrapped_ce_matches_numpy(top_k):
  rng = np.random.default_rng(0)
  labels, logits, weights = random_semantic(rng)
  loss = WeightedBootstrappedCrossEntropy(top_k, IGNORE)(labels, logits,
                                                          weights)
  assert loss.dtype == tf.float32 and loss.shape == ()
  np.testing.assert_allclose(
      loss.numpy(), numpy_bootstrapped_ce(labels, logits, weights, top_k),
      rtol=1e-5)


def test_plain_ce_is_weighted_mean_over_nonzero_weights():
  rng = np.random.default_rng(1)
  labels, logits, weights = random_semantic(rng, shape=(2, 5, 6))
  ce = numpy_pixel_ce(labels, logits)
  w = np.where(labels == IGNORE, 0.0, weights)
  expected = np.mean([(ce[b] * w[b]).sum() / np.count_nonzero(w[b])
                      for b in range(2)])
  loss = WeightedBootstrappedCrossEntropy(1.0)(labels, logits, weights)
  np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-5)
  # Without weights every non-ignored pixel counts once.
  unweighted = np.mean([ce[b][labels[b] != IGNORE].mean() for b in range(2)])
  np.testing.assert_allclose(
      WeightedBootstrappedCrossEntropy(1.0)(labels, logits).numpy(),
      unweighted, rtol=1e-5)


def test_bootstrapping_keeps_only_the_hardest_pixels():
  # 1 image, 10 pixels, 2 classes: 2 pixels are badly wrong, 8 are right.
  labels = np.zeros((1, 2, 5), np.int32)
  logits = np.zeros((1, 2, 5, 2), np.float32)
  logits[..., 0] = 4.0
  logits[0, 0, 1, 0], logits[0, 0, 1, 1] = -3.0, 3.0   # CE ~ 6.0
  logits[0, 1, 3, 0], logits[0, 1, 3, 1] = -1.0, 1.0   # CE ~ 2.1
  ce_hard = np.log(1 + np.exp(6.0))
  ce_mid = np.log(1 + np.exp(2.0))
  ce_easy = np.log(1 + np.exp(-4.0))
  loss = WeightedBootstrappedCrossEntropy(0.1)
  np.testing.assert_allclose(loss(labels, logits).numpy(), ce_hard, rtol=1e-5)
  loss = WeightedBootstrappedCrossEntropy(0.2)
  np.testing.assert_allclose(loss(labels, logits).numpy(),
                             (ce_hard + ce_mid) / 2, rtol=1e-5)
  # Weights scale a pixel's loss before ranking: 3 x the middle one wins.
  weights = np.ones((1, 2, 5), np.float32)
  weights[0, 1, 3] = 3.0
  np.testing.assert_allclose(
      WeightedBootstrappedCrossEntropy(0.1)(labels, logits, weights).numpy(),
      3 * ce_mid, rtol=1e-5)
  # Fewer active pixels than k: the mean of the active ones.
  labels_ignored = np.full((1, 2, 5), IGNORE, np.int32)
  labels_ignored[0, 0, 1] = 0
  labels_ignored[0, 0, 2] = 0
  np.testing.assert_allclose(
      WeightedBootstrappedCrossEntropy(0.5)(labels_ignored, logits).numpy(),
      (ce_hard + ce_easy) / 2, rtol=1e-5)


def test_fully_ignored_image_contributes_zero():
  rng = np.random.default_rng(2)
  labels, logits, _ = random_semantic(rng, shape=(2, 4, 4))
  labels[1] = IGNORE
  for top_k in (1.0, 0.3):
    loss = WeightedBootstrappedCrossEntropy(top_k)(labels, logits)
    ce = numpy_pixel_ce(labels[:1], logits[:1])[labels[:1] != IGNORE]
    k = int(np.round(top_k * 16))
    expected = np.sort(ce)[::-1][:k].mean() / 2
    np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-5)


@pytest.mark.parametrize("cls,fn,channels", [(WeightedMSE, np.square, 1),
                                             (WeightedL1, np.abs, 2)])
def test_regression_losses_match_numpy(cls, fn, channels):
  rng = np.random.default_rng(3)
  target = rng.normal(size=(3, 6, 5, channels)).astype(np.float32)
  pred = rng.normal(size=(3, 6, 5, channels)).astype(np.float32)
  weights = rng.choice([0.0, 1.0, 2.0], (3, 6, 5)).astype(np.float32)
  weights[2] = 0.0
  expected = numpy_regression(target, pred, weights, fn)
  np.testing.assert_allclose(cls()(target, pred, weights).numpy(), expected,
                             rtol=1e-5)
  np.testing.assert_allclose(cls()(target, pred, weights[..., None]).numpy(),
                             expected, rtol=1e-5)


def _batch(rng, num_classes=4, shape=(2, 8, 6)):
  labels, logits, weights = random_semantic(rng, shape, num_classes)
  outputs = {
      "semantic_logits": logits,
      "center_heatmap": rng.random(shape + (1,)).astype(np.float32),
      "offset_map": rng.normal(0, 3, shape + (2,)).astype(np.float32),
  }
  targets = {
      "semantic": labels,
      "semantic_weights": weights,
      "center_heatmap": rng.random(shape + (1,)).astype(np.float32),
      "center_weights": (rng.random(shape) < 0.8).astype(np.float32),
      "offset": rng.normal(0, 3, shape + (2,)).astype(np.float32),
      "offset_weights": (rng.random(shape) < 0.4).astype(np.float32),
  }
  return outputs, targets


def _expected_losses(outputs, targets, top_k):
  semantic = numpy_bootstrapped_ce(targets["semantic"],
                                   outputs["semantic_logits"],
                                   targets["semantic_weights"], top_k)
  center = numpy_regression(targets["center_heatmap"],
                            outputs["center_heatmap"],
                            targets["center_weights"], np.square)
  offset = numpy_regression(targets["offset"], outputs["offset_map"],
                            targets["offset_weights"], np.abs)
  return semantic, center, offset


def test_panoptic_loss_components_and_total():
  rng = np.random.default_rng(4)
  outputs, targets = _batch(rng)
  loss = PanopticDeepLabLoss(semantic_loss_weight=2.0, center_loss_weight=200.0,
                             offset_loss_weight=0.01, top_k_percent=0.25)
  result = loss(outputs, targets)
  semantic, center, offset = _expected_losses(outputs, targets, 0.25)
  np.testing.assert_allclose(result["semantic_loss"], 2.0 * semantic,
                             rtol=1e-5)
  np.testing.assert_allclose(result["center_loss"], 200.0 * center, rtol=1e-5)
  np.testing.assert_allclose(result["offset_loss"], 0.01 * offset, rtol=1e-5)
  np.testing.assert_allclose(
      result["total_loss"], 2.0 * semantic + 200.0 * center + 0.01 * offset,
      rtol=1e-5)


def test_panoptic_loss_mixed_precision_inputs_give_float32():
  rng = np.random.default_rng(5)
  outputs, targets = _batch(rng)
  half = {k: tf.cast(v, tf.float16) for k, v in outputs.items()}
  result = PanopticDeepLabLoss()(half, targets)
  reference = PanopticDeepLabLoss()(
      {k: tf.cast(v, tf.float32) for k, v in half.items()}, targets)
  for key, value in result.items():
    assert value.dtype == tf.float32, key
    np.testing.assert_allclose(value, reference[key], rtol=1e-6)


def test_panoptic_loss_under_xla_with_unknown_shapes_and_gradients():
  rng = np.random.default_rng(6)
  outputs, targets = _batch(rng, num_classes=4, shape=(2, 9, 7))
  loss = PanopticDeepLabLoss(top_k_percent=0.3)
  out_sig = {"semantic_logits": tf.TensorSpec([None, None, None, 4]),
             "center_heatmap": tf.TensorSpec([None, None, None, 1]),
             "offset_map": tf.TensorSpec([None, None, None, 2])}
  tgt_sig = {k: tf.TensorSpec([None] * v.ndim,
                              tf.int32 if k == "semantic" else tf.float32)
             for k, v in targets.items()}
  compiled = tf.function(loss, input_signature=[out_sig, tgt_sig],
                         jit_compile=True)
  eager = loss(outputs, targets)
  jitted = compiled(outputs, targets)
  for key in eager:
    np.testing.assert_allclose(jitted[key], eager[key], rtol=1e-5)

  variables = {k: tf.Variable(v) for k, v in outputs.items()}
  with tf.GradientTape() as tape:
    total = loss(variables, targets)["total_loss"]
  grads = tape.gradient(total, list(variables.values()))
  for grad in grads:
    assert grad is not None and np.isfinite(grad.numpy()).all()
  # Pixels with zero offset weight get no offset gradient.
  offset_grad = grads[list(variables).index("offset_map")].numpy()
  assert not offset_grad[targets["offset_weights"] == 0].any()


@pytest.mark.parametrize("top_k", [0.0, -0.1, 1.5])
def test_bad_top_k(top_k):
  with pytest.raises(ValueError, match="top_k_percent"):
    WeightedBootstrappedCrossEntropy(top_k)


def test_bad_inputs():
  ce = WeightedBootstrappedCrossEntropy(0.5)
  with pytest.raises(ValueError, match="y_true"):
    ce(np.zeros((2, 3, 3), np.float32), np.zeros((2, 3, 3, 4), np.float32))
  with pytest.raises(ValueError, match="y_pred"):
    ce(np.zeros((2, 3, 3), np.int32), np.zeros((2, 3, 4), np.float32))
  with pytest.raises(ValueError, match="y_true"):
    WeightedMSE()(np.zeros((2, 3, 3)), np.zeros((2, 3, 3, 1)))
  with pytest.raises(ValueError, match="does not match"):
    WeightedL1()(np.zeros((2, 3, 3, 1)), np.zeros((2, 3, 3, 2)))
  with pytest.raises(ValueError, match="weights"):
    WeightedL1()(np.zeros((2, 3, 3, 2)), np.zeros((2, 3, 3, 2)),
                 np.zeros((2, 3, 3, 2)))
  outputs, targets = _batch(np.random.default_rng(7))
  del targets["offset_weights"]
  with pytest.raises(ValueError, match="offset_weights"):
    PanopticDeepLabLoss()(outputs, targets)
  with pytest.raises(ValueError, match="center_loss_weight"):
    PanopticDeepLabLoss(center_loss_weight=-1.0)
