"""Tests of PanopticDeepLabPostProcessor: hand-made cases, a brute-force
numpy reference, tf.function with unknown shapes and XLA."""

import numpy as np
import pytest
import tensorflow as tf

from axial_deeplab_tf.ops import PanopticDeepLabPostProcessor

DIV = 256
IGNORE = 255
VOID = IGNORE * DIV


def reference_post_process(logits, heatmap, offsets, thing_ids, threshold,
                           nms_kernel, top_k, stuff_limit):
  """Brute force: explicit windows, sorted center list, per-pixel search."""
  batch, height, width, num_classes = logits.shape
  radius = nms_kernel // 2
  panoptic = np.zeros((batch, height, width), np.int64)
  instance = np.zeros((batch, height, width), np.int64)
  scores = np.zeros((batch, top_k), np.float32)
  centers = np.full((batch, top_k, 2), -1, np.int64)
  slot_ids = np.full((batch, top_k), -1, np.int64)
  class_scores = np.zeros((batch, top_k), np.float64)
  probs = np.exp(logits - logits.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  for b in range(batch):
    semantic = logits[b].argmax(-1)
    heat = heatmap[b, ..., 0]
    peaks = []
    for y in range(height):
      for x in range(width):
        window = heat[max(0, y - radius):y + radius + 1,
                      max(0, x - radius):x + radius + 1]
        if heat[y, x] > threshold and heat[y, x] == window.max():
          peaks.append((-heat[y, x], y * width + x, y, x))
    peaks = sorted(peaks)[:top_k]
    for slot, (neg_score, _, y, x) in enumerate(peaks):
      scores[b, slot] = -neg_score
      centers[b, slot] = (y, x)
    members = {}
    for y in range(height):
      for x in range(width):
        if semantic[y, x] not in thing_ids or not peaks:
          continue
        # Same float32 arithmetic as pixel + offset in the op.
        ty = np.float32(y) + offsets[b, y, x, 0]
        tx = np.float32(x) + offsets[b, y, x, 1]
        dists = [(ty - np.float32(py))**2 + (tx - np.float32(px))**2
                 for _, _, py, px in peaks]
        slot = int(np.argmin(dists))
        members.setdefault(slot, []).append((y, x))
        instance[b, y, x] = slot + 1
    counter = {}
    for y in range(height):
      for x in range(width):
        c = semantic[y, x]
        if c in thing_ids:
          panoptic[b, y, x] = VOID
        else:
          area = np.sum((semantic == c))
          panoptic[b, y, x] = c * DIV if area >= stuff_limit else VOID
    for slot in sorted(members):
      pixels = members[slot]
      votes = np.bincount([semantic[p] for p in pixels], minlength=num_classes)
      cls = int(np.argmax(votes))
      counter[cls] = counter.get(cls, 0) + 1
      for p in pixels:
        panoptic[b][p] = cls * DIV + counter[cls]
      slot_ids[b, slot] = cls * DIV + counter[cls]
      class_scores[b, slot] = np.mean([probs[b][p][cls] for p in pixels])
  return {"panoptic_pred": panoptic, "instance_pred": instance,
          "instance_scores": scores, "instance_centers": centers,
          "instance_panoptic_ids": slot_ids,
          "instance_class_scores": class_scores}


def _outputs(logits, heatmap, offsets):
  return {"semantic_logits": tf.constant(logits, tf.float32),
          "center_heatmap": tf.constant(heatmap, tf.float32),
          "offset_map": tf.constant(offsets, tf.float32)}


def _one_hot_logits(semantic, num_classes):
  return np.eye(num_classes, dtype=np.float32)[semantic] * 5.0


def test_two_instances_of_different_classes_and_majority_vote():
  # Classes: 0 stuff, 1 and 2 things. Left block class 1 around center
  # (2, 1); right block mostly class 2 around center (2, 6), one pixel of
  # class 1 inside it takes the majority class 2.
  semantic = np.zeros((1, 5, 8), np.int64)
  semantic[0, 1:4, 0:3] = 1
  semantic[0, 1:4, 5:8] = 2
  semantic[0, 2, 7] = 1
  heatmap = np.zeros((1, 5, 8, 1), np.float32)
  heatmap[0, 2, 1, 0] = 0.9
  heatmap[0, 2, 6, 0] = 0.8
  yy, xx = np.mgrid[0:5, 0:8]
  offsets = np.zeros((1, 5, 8, 2), np.float32)
  left = xx < 4
  offsets[0, ..., 0] = 2 - yy
  offsets[0, ..., 1] = np.where(left, 1 - xx, 6 - xx)
  processor = PanopticDeepLabPostProcessor(
      [1, 2], 3, label_divisor=DIV, center_threshold=0.1, nms_kernel=3,
      keep_k_centers=4, stuff_area_limit=0)
  result = processor(_outputs(_one_hot_logits(semantic, 3), heatmap, offsets))
  expected = np.zeros((5, 8), np.int64)
  expected[1:4, 0:3] = 1 * DIV + 1
  expected[1:4, 5:8] = 2 * DIV + 1
  np.testing.assert_array_equal(result["panoptic_pred"][0], expected)
  np.testing.assert_array_equal(result["semantic_pred"][0], semantic[0])
  expected_instance = np.zeros((5, 8), np.int64)
  expected_instance[1:4, 0:3] = 1
  expected_instance[1:4, 5:8] = 2
  np.testing.assert_array_equal(result["instance_pred"][0], expected_instance)
  np.testing.assert_allclose(result["instance_scores"][0], [0.9, 0.8, 0, 0])
  np.testing.assert_array_equal(result["instance_centers"][0],
                                [[2, 1], [2, 6], [-1, -1], [-1, -1]])
  np.testing.assert_array_equal(result["instance_panoptic_ids"][0],
                                [DIV + 1, 2 * DIV + 1, -1, -1])
  # One-hot logits of 5: p = e^5 / (e^5 + 2); the right block's class-1
  # pixel has p(class 2) = 1 / (e^5 + 2).
  p_hi, p_lo = np.exp(5) / (np.exp(5) + 2), 1 / (np.exp(5) + 2)
  np.testing.assert_allclose(result["instance_class_scores"][0],
                             [p_hi, (8 * p_hi + p_lo) / 9, 0, 0], rtol=1e-5)
  for key, dtype in [("panoptic_pred", tf.int32), ("semantic_pred", tf.int32),
                     ("instance_pred", tf.int32),
                     ("instance_scores", tf.float32)]:
    assert result[key].dtype == dtype


def test_same_class_instances_are_numbered_by_score():
  semantic = np.ones((1, 3, 9), np.int64)
  heatmap = np.zeros((1, 3, 9, 1), np.float32)
  heatmap[0, 1, 1, 0] = 0.3
  heatmap[0, 1, 7, 0] = 0.7
  offsets = np.zeros((1, 3, 9, 2), np.float32)
  processor = PanopticDeepLabPostProcessor([1], 2, nms_kernel=3,
                                           stuff_area_limit=0)
  pan = processor(_outputs(_one_hot_logits(semantic, 2), heatmap,
                           offsets))["panoptic_pred"].numpy()[0]
  # Offsets 0: nearest center by position; the stronger one is number 1.
  assert (pan[:, :4] == DIV + 2).all() and (pan[:, 5:] == DIV + 1).all()
  # Column 4 is equidistant from both centers: the stronger center (slot 0,
  # number 1) wins the tie.
  assert (pan[:, 4] == DIV + 1).all()


def test_stuff_area_limit_and_thing_pixels_without_centers():
  semantic = np.zeros((1, 4, 5), np.int64)
  semantic[0, 0, :] = 1        # 5 pixels of stuff class 1
  semantic[0, 1, :4] = 2       # 4 pixels of stuff class 2
  semantic[0, 3, 0] = 3        # a thing pixel, no center anywhere
  heatmap = np.zeros((1, 4, 5, 1), np.float32)
  offsets = np.zeros((1, 4, 5, 2), np.float32)
  processor = PanopticDeepLabPostProcessor([3], 4, stuff_area_limit=5,
                                           keep_k_centers=3)
  result = processor(_outputs(_one_hot_logits(semantic, 4), heatmap, offsets))
  pan = result["panoptic_pred"].numpy()[0]
  assert (pan[0] == 1 * DIV).all()
  assert (pan[1, :4] == VOID).all()        # class 2 area 4 < 5
  assert (pan[2] == 0).all() and pan[1, 4] == 0   # class 0 area 10 >= 5
  assert pan[3, 0] == VOID
  assert not result["instance_pred"].numpy().any()
  assert not result["instance_scores"].numpy().any()
  assert (result["instance_centers"].numpy() == -1).all()


@pytest.mark.parametrize("kernel,threshold,expected", [
    (7, 0.1, [(3, 3)]),            # (3, 5) is within the 7x7 window
    (3, 0.1, [(3, 3), (3, 5)]),
    (3, 0.6, [(3, 3)]),            # 0.5 is below the threshold
    (1, 0.1, [(3, 3), (3, 5), (3, 4)]),   # in score order
])
def test_nms_and_threshold(kernel, threshold, expected):
  heatmap = np.zeros((1, 7, 9, 1), np.float32)
  heatmap[0, 3, 3, 0] = 0.9
  heatmap[0, 3, 4, 0] = 0.2
  heatmap[0, 3, 5, 0] = 0.5
  processor = PanopticDeepLabPostProcessor(
      [1], 2, center_threshold=threshold, nms_kernel=kernel, keep_k_centers=5)
  result = processor(_outputs(np.zeros((1, 7, 9, 2)), heatmap,
                              np.zeros((1, 7, 9, 2))))
  n = len(expected)
  np.testing.assert_array_equal(result["instance_centers"][0, :n], expected)
  assert (result["instance_centers"].numpy()[0, n:] == -1).all()
  assert (result["instance_scores"].numpy()[0, n:] == 0).all()


def _random_case(rng, batch, height, width, num_classes):
  logits = rng.normal(size=(batch, height, width, num_classes))
  # A smooth-ish heatmap with a few distinct local maxima.
  heatmap = rng.random((batch, height, width, 1)) * 0.3
  for b in range(batch):
    for _ in range(5):
      y, x = rng.integers(0, height), rng.integers(0, width)
      heatmap[b, y, x, 0] = 0.5 + 0.5 * rng.random()
  offsets = rng.normal(0, 3, (batch, height, width, 2))
  return (logits.astype(np.float32), heatmap.astype(np.float32),
          offsets.astype(np.float32))


@pytest.mark.parametrize("seed,k", [(0, 200), (1, 3)])
def test_matches_brute_force_reference(seed, k):
  rng = np.random.default_rng(seed)
  things = (2, 3, 4)
  logits, heatmap, offsets = _random_case(rng, 2, 11, 13, 6)
  processor = PanopticDeepLabPostProcessor(
      things, 6, label_divisor=DIV, center_threshold=0.2, nms_kernel=5,
      keep_k_centers=k, stuff_area_limit=20)
  result = processor(_outputs(logits, heatmap, offsets))
  expected = reference_post_process(
      logits, heatmap, offsets, things, 0.2, 5, k, 20)
  assert (expected["instance_panoptic_ids"] >= 0).sum() >= 3
  for key, value in expected.items():
    if key == "instance_class_scores":
      np.testing.assert_allclose(result[key], value, rtol=1e-5, atol=1e-7)
    else:
      np.testing.assert_array_equal(result[key], value, err_msg=key)
  np.testing.assert_array_equal(result["semantic_pred"], logits.argmax(-1))
  # Probabilities in, same class scores out.
  from_probs = processor({"semantic_probs": tf.nn.softmax(logits),
                          "center_heatmap": heatmap, "offset_map": offsets})
  np.testing.assert_allclose(from_probs["instance_class_scores"],
                             expected["instance_class_scores"], rtol=1e-5,
                             atol=1e-7)


def test_tf_function_unknown_shapes_and_xla_match_eager():
  rng = np.random.default_rng(3)
  processor = PanopticDeepLabPostProcessor(
      (2, 3), 5, center_threshold=0.2, nms_kernel=3, keep_k_centers=20,
      stuff_area_limit=6)
  signature = [{
      "semantic_logits": tf.TensorSpec([None, None, None, 5], tf.float32),
      "center_heatmap": tf.TensorSpec([None, None, None, 1], tf.float32),
      "offset_map": tf.TensorSpec([None, None, None, 2], tf.float32)}]
  graph_fn = tf.function(processor, input_signature=signature)
  xla_fn = tf.function(processor, input_signature=signature,
                       jit_compile=True)
  # Includes an image with fewer pixels than keep_k_centers.
  for batch, height, width in [(2, 9, 12), (1, 3, 4)]:
    outputs = _outputs(*_random_case(rng, batch, height, width, 5))
    eager = processor(outputs)
    for fn in (graph_fn, xla_fn):
      got = fn(outputs)
      for key in eager:
        if key == "instance_class_scores":
          # XLA may fuse the softmax differently: equal up to rounding.
          np.testing.assert_allclose(got[key], eager[key], rtol=1e-5)
        else:
          np.testing.assert_array_equal(got[key], eager[key], err_msg=key)


def test_accepts_probabilities_and_low_precision():
  rng = np.random.default_rng(4)
  logits, heatmap, offsets = _random_case(rng, 1, 8, 8, 4)
  processor = PanopticDeepLabPostProcessor([1, 2], 4, nms_kernel=3,
                                           stuff_area_limit=3)
  from_logits = processor(_outputs(logits, heatmap, offsets))
  probs = tf.nn.softmax(logits)
  from_probs = processor({"semantic_probs": probs,
                          "center_heatmap": heatmap, "offset_map": offsets})
  np.testing.assert_array_equal(from_probs["panoptic_pred"],
                                from_logits["panoptic_pred"])
  half = processor({"semantic_logits": tf.cast(logits, tf.bfloat16),
                    "center_heatmap": tf.cast(heatmap, tf.bfloat16),
                    "offset_map": tf.cast(offsets, tf.bfloat16)})
  assert half["panoptic_pred"].dtype == tf.int32


def test_bad_inputs():
  processor = PanopticDeepLabPostProcessor([1], 3)
  good = _outputs(np.zeros((1, 4, 4, 3)), np.zeros((1, 4, 4, 1)),
                  np.zeros((1, 4, 4, 2)))
  with pytest.raises(ValueError, match="offset_map"):
    processor({k: v for k, v in good.items() if k != "offset_map"})
  with pytest.raises(ValueError, match="semantic"):
    processor({k: v for k, v in good.items() if k != "semantic_logits"})
  with pytest.raises(ValueError, match="3 channels"):
    processor(dict(good, semantic_logits=tf.zeros([1, 4, 4, 4])))
  with pytest.raises(ValueError, match="center_heatmap"):
    processor(dict(good, center_heatmap=tf.zeros([4, 4, 1])))
  with pytest.raises(ValueError, match="float"):
    processor(dict(good, offset_map=tf.zeros([1, 4, 4, 2], tf.int32)))
  with pytest.raises(ValueError, match="share"):
    processor(dict(good, offset_map=tf.zeros([1, 5, 4, 2])))


@pytest.mark.parametrize("kwargs,match", [
    ({"nms_kernel": 4}, "nms_kernel"),
    ({"keep_k_centers": 256}, "keep_k_centers"),
    ({"keep_k_centers": 0}, "keep_k_centers"),
    ({"thing_class_ids": [5]}, "num_classes"),
    ({"stuff_area_limit": -1}, "stuff_area_limit"),
])
def test_bad_constructor_arguments(kwargs, match):
  args = dict(thing_class_ids=[1], num_classes=3)
  args.update(kwargs)
  with pytest.raises(ValueError, match=match):
    PanopticDeepLabPostProcessor(**args)
