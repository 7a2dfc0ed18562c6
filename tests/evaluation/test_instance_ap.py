"""InstanceAP: perfect predictions, hand-derived COCO AP, crowd, errors."""

import numpy as np
from pycocotools import mask as mask_api
import pytest

from axial_deeplab_tf.evaluation import instance_ap
from axial_deeplab_tf.evaluation.instance_ap import InstanceAP

DIV = 256
VOID = 255 * DIV

# COCO's 101-point recall grid.
RECALL_GRID = np.linspace(0.0, 1.0, 101)


def _scene():
  """Stuff 1 background, things 0 and 2 (instances and a class-2 crowd)."""
  gt = np.full((40, 50), 1 * DIV, np.int64)
  gt[2:12, 3:13] = 0 * DIV + 1
  gt[20:35, 5:20] = 0 * DIV + 2
  gt[5:25, 25:45] = 2 * DIV + 1
  gt[30:38, 30:48] = 2 * DIV  # crowd
  gt[0:2, :] = VOID
  return gt


def test_perfect_predictions_give_ap_one():
  metric = InstanceAP(thing_classes=[0, 2], num_classes=3)
  for flip in (False, True):
    gt = _scene()
    if flip:
      gt = gt[:, ::-1].copy()
    pred = gt.copy()
    pred[pred == 2 * DIV] = 1 * DIV  # crowd predicted as background stuff
    pred[pred == VOID] = 1 * DIV
    ids = [i for i in np.unique(pred) if i // DIV in (0, 2)]
    metric.update(gt, pred, {i: 0.5 + 0.1 * k for k, i in enumerate(ids)})
  r = metric.result()
  assert r["ap"] == pytest.approx(1.0)
  assert r["ap50"] == pytest.approx(1.0)
  assert r["ap75"] == pytest.approx(1.0)
  assert r["ar_max"] == pytest.approx(1.0)
  np.testing.assert_allclose(r["ap_per_class"], [1.0, 1.0])


def test_single_match_at_iou_072():
  # GT: 10 x 10 square. Prediction: 72 of its pixels (IoU 0.72). It matches
  # at IoU thresholds 0.50, 0.55, 0.60, 0.65, 0.70 (precision 1 at every
  # recall) and not at 0.75..0.95 (precision 0): AP = 5/10, AP50 = 1,
  # AP75 = 0.
  gt = np.full((20, 20), 1 * DIV, np.int64)
  gt[5:15, 5:15] = 0 * DIV + 1
  pred = np.full((20, 20), 1 * DIV, np.int64)
  pred[5:13, 5:14] = 0 * DIV + 7  # 8 x 9 = 72 pixels inside the square
  metric = InstanceAP([0], num_classes=2)
  metric.update(gt, pred, {7: 0.9})
  r = metric.result()
  assert r["ap"] == pytest.approx(0.5)
  assert r["ap50"] == pytest.approx(1.0)
  assert r["ap75"] == pytest.approx(0.0)


@pytest.mark.parametrize("tp_score, fp_score, expected_precision", [
    # TP ranked first: precision 1 up to recall 1/2.
    (0.9, 0.8, 1.0),
    # FP ranked first: precision 1/2 at recall 1/2 (interpolated back to 0).
    (0.8, 0.9, 0.5),
])
def test_ranking_by_score(tp_score, fp_score, expected_precision):
  # Two GT instances; one perfect detection and one detection on background.
  # Recall reaches 1/2 only; the recall grid points r <= 1/2 get the
  # interpolated precision, the rest 0, at every IoU threshold.
  gt = np.full((20, 30), 1 * DIV, np.int64)
  gt[2:8, 2:8] = 0 * DIV + 1
  gt[10:16, 10:16] = 0 * DIV + 2
  pred = np.full((20, 30), 1 * DIV, np.int64)
  pred[2:8, 2:8] = 0 * DIV + 3
  pred[12:18, 20:28] = 0 * DIV + 4
  metric = InstanceAP([0], num_classes=2)
  metric.update(gt, pred, {3: tp_score, 4: fp_score})
  expected = expected_precision * np.sum(RECALL_GRID <= 0.5) / 101
  assert metric.result()["ap"] == pytest.approx(expected)


def test_detection_on_crowd_is_ignored():
  gt = np.full((20, 30), 1 * DIV, np.int64)
  gt[2:8, 2:8] = 0 * DIV + 1
  gt[10:18, 10:25] = 0 * DIV  # crowd of class 0
  pred = np.full((20, 30), 1 * DIV, np.int64)
  pred[2:8, 2:8] = 0 * DIV + 1
  pred[11:17, 12:20] = 0 * DIV + 2  # inside the crowd, ranked first
  metric = InstanceAP([0], num_classes=2)
  metric.update(gt, pred, {1: 0.5, 2: 0.9})
  assert metric.result()["ap"] == pytest.approx(1.0)

  # The same detection of another thing class is a plain false positive.
  other = InstanceAP([0, 2], num_classes=3)
  pred[11:17, 12:20] = 2 * DIV + 1
  other.update(gt, pred, {1: 0.5, 2 * DIV + 1: 0.9})
  r = other.result()
  assert r["ap_per_class"][0] == pytest.approx(1.0)
  assert np.isnan(r["ap_per_class"][1])  # no GT of class 2


def test_batch_merge_and_max_detections():
  gt = _scene()
  pred = gt.copy()
  pred[pred == 2 * DIV] = 1 * DIV
  pred[pred == VOID] = 1 * DIV
  ids = [int(i) for i in np.unique(pred) if i // DIV in (0, 2)]
  scores = {i: 0.9 for i in ids}
  # Drop one GT instance from the prediction in the second image.
  pred2 = pred.copy()
  pred2[pred2 == ids[0]] = 1 * DIV
  scores2 = {i: 0.9 for i in ids[1:]}

  batched = InstanceAP([0, 2], num_classes=3, max_detections=20)
  batched.update(np.stack([gt, gt]), np.stack([pred, pred2]),
                 [scores, scores2])
  a = InstanceAP([0, 2], num_classes=3, max_detections=20)
  a.update(gt, pred, scores)
  b = InstanceAP([0, 2], num_classes=3, max_detections=20)
  b.update(gt, pred2, scores2)
  a.merge_state(b)
  r_batched, r_merged = batched.result(), a.result()
  # Class 0 has 4 GT instances, 3 found with no false positive; class 2
  # 2 of 2. Class 0: precision 1 up to recall 3/4.
  expected_class0 = np.sum(RECALL_GRID <= 0.75) / 101
  np.testing.assert_allclose(r_batched["ap_per_class"],
                             [expected_class0, 1.0])
  assert r_batched["ap"] == pytest.approx((expected_class0 + 1.0) / 2)
  assert r_merged["ap"] == pytest.approx(r_batched["ap"])


def test_no_images_gives_nan():
  r = InstanceAP([0], num_classes=2).result()
  assert np.isnan(r["ap"]) and np.isnan(r["ap50"])


@pytest.mark.parametrize("scores, message", [
    ({}, "lacks scores"),
    ({1: 0.5, 5: 0.4}, "not thing segments"),
    ({1: float("nan")}, "not finite"),
    ({1.5: 0.3}, "non-integer"),
])
def test_bad_scores_raise(scores, message):
  gt = np.zeros((4, 4), np.int64)
  gt[:2] = 1 * DIV
  pred = np.zeros((4, 4), np.int64) + 1  # thing 0, instance 1
  pred[:2] = 1 * DIV
  with pytest.raises(ValueError, match=message):
    InstanceAP([0], num_classes=2).update(gt, pred, scores)


def test_bad_maps_raise():
  metric = InstanceAP([0], num_classes=2)
  with pytest.raises(ValueError, match="dtype"):
    metric.update(np.zeros((3, 3), np.float32), np.zeros((3, 3), np.int64),
                  {})
  with pytest.raises(ValueError, match="same shape"):
    metric.update(np.zeros((3, 3), np.int64), np.zeros((3, 4), np.int64), {})
  with pytest.raises(ValueError, match="class ids"):
    metric.update(np.full((3, 3), 5 * DIV), np.zeros((3, 3), np.int64), {})
  with pytest.raises(ValueError, match="3 images"):
    metric.update(np.zeros((3, 3, 3), np.int64), np.zeros((3, 3, 3),
                                                          np.int64), [{}])
  with pytest.raises(ValueError, match="empty"):
    InstanceAP([], num_classes=2)
  with pytest.raises(ValueError, match="thing_classes"):
    metric.merge_state(InstanceAP([1], num_classes=2))


def test_run_length_encoding_matches_pycocotools_encode():
  # The run-length encoder works from sorted pixel positions; pycocotools
  # encodes dense masks. Random blobs touching the first and last pixels.
  rng = np.random.default_rng(3)
  ids = rng.integers(0, 4, (9, 13))
  ids[0, 0], ids[-1, -1] = 5, 6
  segment_ids = np.unique(ids)
  encode = instance_ap._encode_segments  # pylint: disable=protected-access
  rles = encode(ids, segment_ids)
  for segment_id, rle in zip(segment_ids, rles):
    mask = np.asfortranarray((ids == segment_id).astype(np.uint8))
    assert rle == mask_api.encode(mask)
