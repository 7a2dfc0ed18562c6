"""MeanIoU against per-class boolean-mask loops and hand-computed values."""

import numpy as np
import pytest
import tensorflow as tf

from axial_deeplab_tf.evaluation.segmentation_metrics import MeanIoU


def _loop_reference(pairs, num_classes, ignored_label):
  """Per-class IoU and pixel accuracy by counting pixels class by class."""
  inter = np.zeros(num_classes)
  union = np.zeros(num_classes)
  correct = 0
  valid_total = 0
  for gt, pred in pairs:
    valid = gt != ignored_label
    for c in range(num_classes):
      inter[c] += np.sum((gt == c) & (pred == c) & valid)
      union[c] += np.sum(((gt == c) | (pred == c)) & valid)
    correct += np.sum((gt == pred) & valid)
    valid_total += np.sum(valid)
  iou = [inter[c] / union[c] if union[c] else np.nan
         for c in range(num_classes)]
  return np.array(iou), correct / valid_total


def test_hand_computed():
  gt = np.array([[0, 0, 1, 1], [2, 2, 255, 255]])
  pred = np.array([[0, 1, 1, 1], [2, 255, 0, 3]])
  metric = MeanIoU(num_classes=4, ignored_label=255)
  metric.update(gt, pred)
  r = metric.result()
  # Class 0: inter 1, union 2 (one GT pixel predicted 1). Class 1: 2 / 3.
  # Class 2: inter 1, union 2 (one pixel predicted void). Class 3: only
  # predicted on an ignored pixel -> union 0 -> NaN, not averaged.
  np.testing.assert_allclose(r["per_class_iou"][:3], [0.5, 2 / 3, 0.5])
  assert np.isnan(r["per_class_iou"][3])
  assert r["miou"] == pytest.approx((0.5 + 2 / 3 + 0.5) / 3)
  assert r["pixel_accuracy"] == pytest.approx(4 / 6)


@pytest.mark.parametrize("seed", range(3))
def test_matches_loop_reference(seed):
  rng = np.random.default_rng(seed)
  num_classes, ignored = 5, 255
  pairs = []
  for _ in range(3):
    gt = rng.integers(0, num_classes + 1, (12, 15))
    gt[gt == num_classes] = ignored
    # Mostly right, with noise; class 4 never predicted.
    pred = np.where(rng.random(gt.shape) < 0.6, gt, rng.integers(0, 4,
                                                               gt.shape))
    pred[pred == ignored] = 0
    pairs.append((gt, pred))
  metric = MeanIoU(num_classes, ignored)
  for gt, pred in pairs:
    metric.update(tf.constant(gt), pred)
  r = metric.result()
  iou, accuracy = _loop_reference(pairs, num_classes, ignored)
  np.testing.assert_allclose(r["per_class_iou"], iou)
  assert r["miou"] == pytest.approx(np.nanmean(iou))
  assert r["pixel_accuracy"] == pytest.approx(accuracy)

  batched = MeanIoU(num_classes, ignored)
  batched.update(np.stack([p[0] for p in pairs]),
                 np.stack([p[1] for p in pairs]))
  merged = MeanIoU(num_classes, ignored)
  first, rest = MeanIoU(num_classes, ignored), MeanIoU(num_classes, ignored)
  first.update(*pairs[0])
  for gt, pred in pairs[1:]:
    rest.update(gt, pred)
  merged.merge_state([first, rest.get_state()])
  for other in (batched, merged):
    np.testing.assert_allclose(other.result()["per_class_iou"], iou)


def test_panoptic_inputs_with_label_divisor():
  gt = np.array([[1 * 256 + 3, 1 * 256 + 4, 0, 255 * 256]])
  pred = np.array([[1 * 256 + 1, 0, 0, 0]])
  metric = MeanIoU(2, 255, label_divisor=256)
  metric.update(gt, pred)
  # Semantic: gt [1, 1, 0, void], pred [1, 0, 0, -]: class 0 IoU 1/2,
  # class 1 IoU 1/2.
  np.testing.assert_allclose(metric.result()["per_class_iou"], [0.5, 0.5])


def test_reset_and_empty_result():
  metric = MeanIoU(3)
  assert np.isnan(metric.result()["miou"])
  metric.update(np.zeros((2, 2), np.int64), np.zeros((2, 2), np.int64))
  assert metric.result()["miou"] == 1.0
  metric.reset()
  assert metric.result()["confusion_matrix"].sum() == 0


@pytest.mark.parametrize("gt, pred, message", [
    (np.zeros((2, 2), np.float64), np.zeros((2, 2), np.int32), "dtype"),
    (np.zeros((2, 2), np.int32), np.zeros((3, 2), np.int32), "same shape"),
    (np.zeros((2, 0), np.int32), np.zeros((2, 0), np.int32), "empty"),
    (np.full((2, 2), 3), np.zeros((2, 2), np.int32), "outside"),
    (np.zeros((2, 2), np.int32), np.full((2, 2), 7), "outside"),
])
def test_bad_inputs_raise(gt, pred, message):
  with pytest.raises(ValueError, match=message):
    MeanIoU(3).update(gt, pred)


def test_bad_arguments_raise():
  with pytest.raises(ValueError, match="ignored_label"):
    MeanIoU(3, ignored_label=1)
  with pytest.raises(ValueError, match="num_classes"):
    MeanIoU(0)
  with pytest.raises(ValueError, match="shape"):
    MeanIoU(3).merge_state({"confusion_matrix": np.zeros((3, 3), np.int64)})
