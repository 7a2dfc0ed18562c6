"""PanopticQuality against hand-computed cases, a per-segment brute force and
the Cityscapes panoptic evaluation scripts."""

import numpy as np
import pytest
import tensorflow as tf

from axial_deeplab_tf.evaluation import coco_panoptic_format
from axial_deeplab_tf.evaluation.panoptic_quality import PanopticQuality
from tests import reference_packages

# Small readable encoding for hand-made cases: id = class * 10 + instance,
# void class 9 (id 90).
DIV = 10
VOID = 90


def _pq(num_classes=2, things=(1,), **kwargs):
  return PanopticQuality(num_classes, list(things), ignored_label=9,
                         label_divisor=DIV, **kwargs)


# ----------------------------------------------------------------------------
# Hand-made cases; expected numbers worked out in the comments.
# ----------------------------------------------------------------------------


def test_void_pixels_leave_the_union():
  # Thing 11: GT 4 px; prediction 6 px, 2 of them on GT void.
  # IoU = 4 / (4 + 6 - 4 - 2) = 1. Stuff 0: IoU 1. PQ = 1.
  # (Counting void in the union would give IoU 4/6 and PQ 5/6.)
  gt = np.array([[11, 11, 11, 11, VOID, VOID, 0, 0, 0, 0]])
  pred = np.array([[11, 11, 11, 11, 11, 11, 0, 0, 0, 0]])
  metric = _pq()
  metric.update(gt, pred)
  r = metric.result()
  assert r["pq"] == pytest.approx(1.0)
  assert r["sq_th"] == pytest.approx(1.0)
  np.testing.assert_array_equal(r["tp_per_class"], [1, 1])
  np.testing.assert_array_equal(r["fp_per_class"], [0, 0])


def test_iou_exactly_half_does_not_match():
  # Thing: GT 11 on 4 px, prediction 11 on 2 of them: IoU 2/4 = 0.5, no
  # match -> class 1: TP 0, FP 1, FN 1 -> PQ 0, SQ 0, RQ 0.
  # Stuff 0: GT 4 px, prediction 6 px containing them: IoU 4/6 -> TP.
  # Averages: PQ = SQ = (0 + 2/3) / 2 = 1/3, RQ = (0 + 1) / 2.
  gt = np.array([[11, 11, 11, 11, 0, 0, 0, 0]])
  pred = np.array([[11, 11, 0, 0, 0, 0, 0, 0]])
  metric = _pq()
  metric.update(gt, pred)
  r = metric.result()
  np.testing.assert_array_equal(r["tp_per_class"], [1, 0])
  np.testing.assert_array_equal(r["fp_per_class"], [0, 1])
  np.testing.assert_array_equal(r["fn_per_class"], [0, 1])
  assert r["pq"] == pytest.approx(1 / 3)
  assert r["sq"] == pytest.approx(1 / 3)
  assert r["rq"] == pytest.approx(0.5)
  assert r["pq_th"] == pytest.approx(0.0)
  assert r["pq_st"] == pytest.approx(2 / 3)

  # One more predicted pixel: thing IoU 3/4 matches; stuff IoU 4/5.
  metric.reset()
  metric.update(gt, np.array([[11, 11, 11, 0, 0, 0, 0, 0]]))
  r = metric.result()
  assert r["pq_th"] == pytest.approx(0.75)
  assert r["pq_st"] == pytest.approx(4 / 5)


def test_iou_exactly_half_after_void_removal():
  # GT 11: 2 px. Prediction 11: those 2 + 2 px on stuff + 2 on void.
  # Union = 2 + 6 - 2 - 2 = 4 -> IoU 0.5 -> no match; the prediction covers
  # void on 2/6 < 1/2 of its area -> FP. Class 1: FP 1, FN 1.
  gt = np.array([[11, 11, 0, 0, VOID, VOID, 0, 0]])
  pred = np.array([[11, 11, 11, 11, 11, 11, 0, 0]])
  metric = _pq()
  metric.update(gt, pred)
  r = metric.result()
  np.testing.assert_array_equal(r["tp_per_class"], [0, 0])
  np.testing.assert_array_equal(r["fp_per_class"], [1, 1])
  np.testing.assert_array_equal(r["fn_per_class"], [1, 1])
  # Stuff 0: GT 4 px, prediction 2 px inside: IoU 2/4 = 0.5 -> no match
  # either (FP 1, FN 1). Everything is 0.
  assert r["pq"] == 0.0


def test_unmatched_prediction_mostly_on_void_is_not_a_false_positive():
  # Prediction 12 (no GT partner): 3 of 5 px on void -> ignored.
  # Prediction 13: exactly 2 of 4 px on void (not more than half) -> FP.
  gt = np.array([[VOID, VOID, VOID, 0, 0, VOID, VOID, 0, 0, 0, 0, 0]])
  pred = np.array([[12, 12, 12, 12, 12, 13, 13, 13, 13, 0, 0, 0]])
  metric = _pq()
  metric.update(gt, pred)
  r = metric.result()
  # Stuff 0: GT 7 px, prediction 3 px inside -> IoU 3/7 -> no match: FN 1,
  # and the stuff prediction is an FP (no void under it).
  np.testing.assert_array_equal(r["fp_per_class"], [1, 1])
  np.testing.assert_array_equal(r["fn_per_class"], [1, 0])
  np.testing.assert_array_equal(r["tp_per_class"], [0, 0])


def test_crowd_regions():
  # Class 1 is a thing; GT row 0: crowd region 10 on 6 px, instance 11 on 4.
  # Row 1: stuff 0 everywhere except a class-2 crowd (id 20) on 4 px.
  gt = np.array([
      [10, 10, 10, 10, 10, 10, 11, 11, 11, 11],
      [0, 0, 0, 0, 0, 0, 20, 20, 20, 20],
  ])
  pred = np.array([
      # 13 inside the class-1 crowd -> ignored; 11 matches GT 11.
      [13, 13, 13, 13, 14, 14, 11, 11, 11, 11],
      # 14 also covers 3 stuff px: crowd share 2/5 -> FP of class 1.
      # 15 (class 1) covers the class-2 crowd: another class -> FP.
      [14, 14, 14, 0, 0, 0, 15, 15, 15, 15],
  ])
  metric = _pq(num_classes=3, things=(1, 2))
  metric.update(gt, pred)
  r = metric.result()
  # Class 1: TP 1 (IoU 1), FP 2 (14 and 15), FN 0 (crowd is never an FN).
  # Class 2: only a crowd region -> nothing counted -> NaN, not averaged.
  # Stuff 0: GT 6 px, prediction 3 px inside -> IoU 1/2 -> FP 1, FN 1.
  np.testing.assert_array_equal(r["tp_per_class"], [0, 1, 0])
  np.testing.assert_array_equal(r["fp_per_class"], [1, 2, 0])
  np.testing.assert_array_equal(r["fn_per_class"], [1, 0, 0])
  assert np.isnan(r["pq_per_class"][2])
  assert r["pq_per_class"][1] == pytest.approx(1 / (1 + 0.5 * 2))
  assert r["pq_th"] == pytest.approx(0.5)
  assert r["num_classes_valid_th"] == 1
  assert r["pq"] == pytest.approx(0.25)


def test_crowd_plus_void_share_makes_prediction_ignored():
  # Prediction 12: 2 px on class-1 crowd + 2 px on void + 3 px on stuff ->
  # (2 + 2) / 7 > 1/2 -> not an FP. Prediction 13: 1 crowd + 1 void + 2 stuff
  # -> exactly 1/2 -> FP.
  gt = np.array([[10, 10, VOID, VOID, 0, 0, 0, 10, VOID, 0, 0]])
  pred = np.array([[12, 12, 12, 12, 12, 12, 12, 13, 13, 13, 13]])
  metric = _pq()
  metric.update(gt, pred)
  r = metric.result()
  np.testing.assert_array_equal(r["fp_per_class"], [0, 1])


def test_crowd_region_is_one_region_per_class():
  # Two separated crowd blobs of class 1 form one region: prediction 12
  # covering 1 px of each plus 1 stuff px is 2/3 on crowd -> ignored.
  gt = np.array([[10, 0, 0, 0, 10]])
  pred = np.array([[12, 0, 0, 12, 12]])
  metric = _pq()
  metric.update(gt, pred)
  r = metric.result()
  np.testing.assert_array_equal(r["fp_per_class"], [0, 0])
  # Stuff 0: IoU 2/3 -> TP.
  np.testing.assert_array_equal(r["tp_per_class"], [1, 0])


def test_classes_absent_from_groundtruth():
  # Three classes, thing 1 and 2. GT has stuff 0 and thing 11; the
  # prediction adds a class-2 segment (absent from GT): FP of class 2.
  # Class 1 predicted perfectly; class 0 perfectly.
  gt = np.array([[0, 0, 0, 0, 11, 11, 11, 11]])
  pred = np.array([[0, 0, 21, 0, 11, 11, 11, 11]])
  metric = _pq(num_classes=4, things=(1, 2))
  metric.update(gt, pred)
  r = metric.result()
  # Class 0: IoU 3/4. Class 1: IoU 1. Class 2: FP only -> PQ 0.
  # Class 3: never seen -> NaN and not averaged.
  expected = [0.75, 1.0, 0.0]
  np.testing.assert_allclose(r["pq_per_class"][:3], expected)
  assert np.isnan(r["pq_per_class"][3])
  assert r["pq"] == pytest.approx(np.mean(expected))
  assert r["pq_th"] == pytest.approx(0.5)
  assert r["rq_th"] == pytest.approx(0.5)
  assert r["sq_th"] == pytest.approx(0.5)
  assert r["pq_st"] == pytest.approx(0.75)
  assert r["num_classes_valid"] == 3


def test_empty_subsets_are_nan():
  metric = _pq()
  r = metric.result()
  assert np.isnan(r["pq"]) and np.isnan(r["pq_th"]) and np.isnan(r["pq_st"])
  # Stuff only: things stay NaN.
  metric.update(np.zeros((2, 2), np.int32), np.zeros((2, 2), np.int32))
  r = metric.result()
  assert r["pq_st"] == 1.0 and np.isnan(r["pq_th"])


def test_streaming_batch_tensor_state_merge_and_model_garden_entry():
  rng = np.random.default_rng(0)
  div = 100
  scenes = [_random_scene(rng, 3, (0, 2), 9, div, 20, 24) for _ in range(4)]
  gts = np.stack([s[0] for s in scenes])
  preds = np.stack([s[1] for s in scenes])

  def new_metric():
    return PanopticQuality(3, [0, 2], ignored_label=9, label_divisor=div)

  one_by_one = new_metric()
  for gt, pred in zip(gts, preds):
    one_by_one.update(gt, pred)
  batched = new_metric()
  batched.update(tf.constant(gts), tf.constant(preds))
  a = new_metric()
  a.update(gts[:1], preds[:1])
  b = new_metric()
  b.update(gts[1:], preds[1:])
  merged = new_metric()
  merged.merge_state([a, b.get_state()])
  model_garden = new_metric()
  model_garden.compare_and_accumulate(
      {"category_mask": gts // div, "instance_mask": gts % div},
      {"category_mask": preds // div, "instance_mask": preds % div})

  reference = brute_force_pq(list(zip(gts, preds)), 3, (0, 2), 9, div)
  for metric in (one_by_one, batched, merged, model_garden):
    r = metric.result()
    for key in ("pq", "sq", "rq", "pq_th", "pq_st"):
      assert r[key] == pytest.approx(reference[key], abs=1e-12), key

  batched.reset()
  assert np.isnan(batched.result()["pq"])
  assert batched.get_state()["tp"].sum() == 0


@pytest.mark.parametrize("gt, pred, message", [
    (np.zeros((2, 2), np.float32), np.zeros((2, 2), np.int32), "dtype"),
    (np.zeros((2, 2), np.int32), np.zeros((2, 3), np.int32), "same shape"),
    (np.zeros((0, 3), np.int32), np.zeros((0, 3), np.int32), "empty"),
    (np.full((2, 2), 31), np.zeros((2, 2), np.int32), "class ids"),
    (np.zeros((2, 2), np.int32), np.full((2, 2), 55), "class ids"),
    (np.full((2, 2), -1), np.zeros((2, 2), np.int32), "negative"),
    (np.zeros((2,), np.int32), np.zeros((2,), np.int32), "shape"),
    (np.zeros((2, 2), bool), np.zeros((2, 2), bool), "dtype"),
])
def test_bad_inputs_raise(gt, pred, message):
  with pytest.raises(ValueError, match=message):
    _pq(num_classes=3).update(gt, pred)


def test_symbolic_tensor_raises_type_error():
  metric = _pq()

  @tf.function
  def update(x):
    metric.update(x, x)
    return x

  with pytest.raises(TypeError, match="eager tensor"):
    update(tf.zeros((2, 2), tf.int32))


@pytest.mark.parametrize("kwargs, message", [
    ({"num_classes": 3, "thing_classes": [3]}, "outside"),
    ({"num_classes": 3, "thing_classes": [1, 1]}, "duplicates"),
    ({"num_classes": 3, "thing_classes": [1.0]}, "ints"),
    ({"num_classes": 3, "thing_classes": [1], "ignored_label": 2}, "outside"),
    ({"num_classes": 3, "thing_classes": [1], "label_divisor": 0},
     "label_divisor"),
    ({"num_classes": 3, "thing_classes": [1], "offset": 100}, "offset"),
])
def test_bad_constructor_arguments_raise(kwargs, message):
  with pytest.raises(ValueError, match=message):
    PanopticQuality(**kwargs)


def test_merge_state_rejects_mismatched_state():
  metric = _pq()
  with pytest.raises(ValueError, match="shape"):
    metric.merge_state({"tp": [1], "fp": [0], "fn": [0], "iou_sum": [1.0]})
  with pytest.raises(ValueError, match="num_classes"):
    metric.merge_state(_pq(num_classes=3))


# ----------------------------------------------------------------------------
# Random scenes: brute force and Cityscapes scripts.
# ----------------------------------------------------------------------------


def _random_scene(rng, num_classes, things, ignored_label, div, height,
                  width):
  """A GT panoptic map with stuff, things, crowd and void, and a prediction.

  The prediction starts from the GT with fresh instance ids, so that many
  segments match, then gets random rectangles painted over it (other
  classes, extra instances, void) and scattered pixel noise.
  """
  stuff = [c for c in range(num_classes) if c not in things]
  gt = np.full((height, width), stuff[0] * div, np.int64)

  def rect():
    h, w = rng.integers(2, height // 2 + 1), rng.integers(2, width // 2 + 1)
    y, x = rng.integers(0, height - h + 1), rng.integers(0, width - w + 1)
    return slice(y, y + h), slice(x, x + w)

  for c in stuff[1:]:
    for _ in range(rng.integers(1, 3)):
      gt[rect()] = c * div
  counters = {c: 0 for c in things}
  for _ in range(rng.integers(2, 7)):
    c = int(rng.choice(things))
    if rng.random() < 0.2:
      gt[rect()] = c * div  # crowd
    else:
      counters[c] += 1
      gt[rect()] = c * div + counters[c]
  for _ in range(rng.integers(0, 3)):
    gt[rect()] = ignored_label * div

  # Prediction: same segments with shuffled instance ids (crowd becomes an
  # ordinary instance), void in GT predicted as something.
  pred = gt.copy()
  ids = np.unique(gt)
  fresh = {c: list(rng.permutation(np.arange(1, div // 2))) for c in things}
  for segment_id in ids:
    c = segment_id // div
    mask = gt == segment_id
    if c == ignored_label:
      pred[mask] = int(rng.choice(stuff)) * div
    elif c in things:
      pred[mask] = c * div + fresh[c].pop()
  for _ in range(rng.integers(1, 6)):
    roll = rng.random()
    c = int(rng.integers(0, num_classes))
    if roll < 0.2:
      pred[rect()] = ignored_label * div
    elif c in things:
      pred[rect()] = c * div + fresh[c].pop()
    else:
      pred[rect()] = c * div
  noise = rng.random((height, width)) < 0.05
  pred[noise] = rng.choice(np.unique(pred), size=noise.sum())
  return gt, pred


def brute_force_pq(images, num_classes, things, ignored_label, div):
  """PQ by explicit per-segment loops over boolean masks."""
  tp = np.zeros(num_classes)
  fp = np.zeros(num_classes)
  fn = np.zeros(num_classes)
  iou_sum = np.zeros(num_classes)
  for gt, pred in images:
    void = gt // div == ignored_label
    gt_segments = {int(i): gt == i for i in np.unique(gt)
                   if i // div != ignored_label}
    pred_segments = {int(i): pred == i for i in np.unique(pred)
                     if i // div != ignored_label}
    crowd = {c: (gt // div == c) & (gt % div == 0) for c in things}
    gt_done, pred_done = set(), set()
    for g, g_mask in gt_segments.items():
      c = g // div
      if c in things and g % div == 0:
        continue
      for p, p_mask in pred_segments.items():
        if p // div != c:
          continue
        inter = np.sum(g_mask & p_mask)
        union = np.sum(g_mask | p_mask) - np.sum(p_mask & void)
        if inter / union > 0.5:
          tp[c] += 1
          iou_sum[c] += inter / union
          gt_done.add(g)
          pred_done.add(p)
    for g in gt_segments:
      c = g // div
      if g not in gt_done and not (c in things and g % div == 0):
        fn[c] += 1
    for p, p_mask in pred_segments.items():
      if p in pred_done:
        continue
      c = p // div
      ignored = np.sum(p_mask & void)
      if c in things:
        ignored += np.sum(p_mask & crowd[c])
      if ignored / np.sum(p_mask) <= 0.5:
        fp[c] += 1
  out = {}
  valid = tp + fp + fn > 0
  is_thing = np.isin(np.arange(num_classes), things)
  for suffix, subset in (("", valid), ("_th", valid & is_thing),
                         ("_st", valid & ~is_thing)):
    pq = [iou_sum[c] / (tp[c] + fp[c] / 2 + fn[c] / 2)
          for c in np.flatnonzero(subset)]
    sq = [iou_sum[c] / tp[c] if tp[c] else 0.0 for c in np.flatnonzero(subset)]
    rq = [tp[c] / (tp[c] + fp[c] / 2 + fn[c] / 2)
          for c in np.flatnonzero(subset)]
    out["pq" + suffix] = np.mean(pq) if pq else np.nan
    out["sq" + suffix] = np.mean(sq) if sq else np.nan
    out["rq" + suffix] = np.mean(rq) if rq else np.nan
  out.update(tp=tp, fp=fp, fn=fn)
  return out


@pytest.mark.parametrize("seed", range(6))
def test_matches_brute_force_on_random_scenes(seed):
  rng = np.random.default_rng(seed)
  num_classes, things, ignored, div = 6, (1, 3, 4), 255, 256
  images = [_random_scene(rng, num_classes, things, ignored, div, 24, 32)
            for _ in range(3)]
  metric = PanopticQuality(num_classes, things, ignored, div)
  for gt, pred in images:
    metric.update(gt, pred)
  r = metric.result()
  reference = brute_force_pq(images, num_classes, things, ignored, div)
  np.testing.assert_array_equal(r["tp_per_class"], reference["tp"])
  np.testing.assert_array_equal(r["fp_per_class"], reference["fp"])
  np.testing.assert_array_equal(r["fn_per_class"], reference["fn"])
  for key in ("pq", "sq", "rq", "pq_th", "sq_th", "rq_th", "pq_st", "sq_st",
              "rq_st"):
    np.testing.assert_allclose(r[key], reference[key], atol=1e-12,
                               err_msg=key)


CITYSCAPES_CATEGORIES = [
    {"id": 7, "name": "road", "isthing": 0},
    {"id": 8, "name": "sidewalk", "isthing": 0},
    {"id": 24, "name": "person", "isthing": 1},
    {"id": 11, "name": "building", "isthing": 0},
    {"id": 26, "name": "car", "isthing": 1},
    {"id": 33, "name": "bicycle", "isthing": 1},
]


@pytest.mark.parametrize("seed", range(4))
def test_matches_cityscapes_scripts(tmp_path, seed):
  cs_eval = reference_packages.require(
      "cityscapesscripts.evaluation.evalPanopticSemanticLabeling")
  rng = np.random.default_rng(100 + seed)
  categories = CITYSCAPES_CATEGORIES
  things = coco_panoptic_format.thing_classes_of(categories)
  num_classes, ignored, div = len(categories), 255, 1000
  gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
  metric = PanopticQuality(num_classes, things, ignored, div)
  pairs = []
  for i in range(4):
    gt, pred = _random_scene(rng, num_classes, things, ignored, div, 30, 40)
    metric.update(gt, pred)
    name = f"image_{i}.png"
    pairs.append((
        coco_panoptic_format.write_annotation(
            str(gt_dir), name, f"image_{i}", gt, categories, div, ignored,
            is_groundtruth=True),
        coco_panoptic_format.write_annotation(
            str(pred_dir), name, f"image_{i}", pred, categories, div, ignored,
            is_groundtruth=False)))
  # The scripts compare against the areas and crowd flags of the JSON, so
  # go through the JSON files as the command-line tool would.
  coco_panoptic_format.write_json(str(tmp_path / "gt.json"),
                                  [p[0] for p in pairs], categories)
  coco_panoptic_format.write_json(str(tmp_path / "pred.json"),
                                  [p[1] for p in pairs], categories)
  gt_json = coco_panoptic_format.read_json(str(tmp_path / "gt.json"))
  pred_json = coco_panoptic_format.read_json(str(tmp_path / "pred.json"))
  category_dict = {c["id"]: c for c in gt_json["categories"]}
  stat = cs_eval.pq_compute_single_core(
      0, list(zip(gt_json["annotations"], pred_json["annotations"])),
      str(gt_dir), str(pred_dir), category_dict)
  reference = cs_eval.average_pq(stat, category_dict)

  r = metric.result()
  for name, suffix in (("All", ""), ("Things", "_th"), ("Stuff", "_st")):
    for key in ("pq", "sq", "rq"):
      assert abs(r[key + suffix] - reference[name][key]) < 1e-6, (name, key)
    assert r["num_classes_valid" + suffix] == reference[name]["n"]
  for k, category in enumerate(categories):
    cat_stat = stat[category["id"]]
    assert r["tp_per_class"][k] == cat_stat.tp
    assert r["fp_per_class"][k] == cat_stat.fp
    assert r["fn_per_class"][k] == cat_stat.fn
    if cat_stat.tp + cat_stat.fp + cat_stat.fn:
      assert abs(r["pq_per_class"][k] -
                 reference["per_class"][category["id"]]["pq"]) < 1e-6
  # The scenes must exercise crowd and void for the check to mean something.
  assert any(s["iscrowd"] for p in pairs for s in p[0]["segments_info"])
