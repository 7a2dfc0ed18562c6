"""Tests of PanopticTargetGenerator against an explicit per-instance loop."""

import numpy as np
import pytest
import tensorflow as tf

from axial_deeplab_tf.data.targets import PanopticTargetGenerator

DIVISOR = 256
IGNORE = 255
THINGS = (3, 4, 5)
STUFF = (0, 1, 2)


def random_scene(rng, height, width, num_rects=12):
  """Paints rectangles of stuff, things, crowd and void; returns panoptic."""
  label = np.full((height, width), rng.choice(STUFF) * DIVISOR, np.int32)
  next_instance = {c: 1 for c in THINGS}
  for _ in range(num_rects):
    h = int(rng.integers(1, max(2, height // 2)))
    w = int(rng.integers(1, max(2, width // 2)))
    y = int(rng.integers(0, height - h + 1))
    x = int(rng.integers(0, width - w + 1))
    kind = rng.choice(["stuff", "thing", "thing", "thing", "crowd", "void"])
    if kind == "stuff":
      value = rng.choice(STUFF) * DIVISOR
    elif kind == "void":
      # Void pixels may carry any instance id; they are void all the same.
      value = IGNORE * DIVISOR + int(rng.integers(0, 3))
    else:
      c = int(rng.choice(THINGS))
      if kind == "crowd":
        value = c * DIVISOR
      else:
        value = c * DIVISOR + next_instance[c]
        next_instance[c] += 1
    label[y:y + h, x:x + w] = value
  return label


def reference_targets(label, sigma, small_area, small_weight, ignore_crowd):
  """Targets computed instance by instance with numpy."""
  height, width = label.shape
  semantic = label // DIVISOR
  heatmap = np.zeros((height, width), np.float64)
  offset = np.zeros((height, width, 2), np.float64)
  semantic_weights = np.ones((height, width), np.float64)
  center_weights = np.ones((height, width), np.float64)
  offset_weights = np.zeros((height, width), np.float64)
  yy, xx = np.mgrid[0:height, 0:width]
  for pid in np.unique(label):
    cls, inst = divmod(int(pid), DIVISOR)
    mask = label == pid
    if cls == IGNORE:
      semantic_weights[mask] = 0
      center_weights[mask] = 0
    elif cls in THINGS and inst == 0:
      center_weights[mask] = 0
      if ignore_crowd:
        semantic[mask] = IGNORE
        semantic_weights[mask] = 0
    elif cls in THINGS:
      ys, xs = np.nonzero(mask)
      # Python's round() rounds half to even.
      cy, cx = round(float(np.mean(ys))), round(float(np.mean(xs)))
      gaussian = np.exp(-((yy - cy)**2 + (xx - cx)**2) / (2 * sigma**2))
      heatmap = np.maximum(heatmap, gaussian)
      offset[mask, 0] = cy - ys
      offset[mask, 1] = cx - xs
      offset_weights[mask] = 1
      if mask.sum() < small_area:
        semantic_weights[mask] = small_weight
  return {
      "semantic": semantic,
      "center_heatmap": heatmap[..., None],
      "offset": offset,
      "semantic_weights": semantic_weights,
      "center_weights": center_weights,
      "offset_weights": offset_weights,
  }


def assert_targets_close(result, expected):
  assert set(result) == set(expected)
  for key, value in expected.items():
    got = result[key].numpy()
    assert got.shape == value.shape, key
    if key == "semantic":
      assert result[key].dtype == tf.int32
      np.testing.assert_array_equal(got, value)
    else:
      assert result[key].dtype == tf.float32, key
      np.testing.assert_allclose(got, value, atol=1e-6, err_msg=key)


@pytest.mark.parametrize("seed,ignore_crowd,sigma", [(0, False, 8.0),
                                                     (1, True, 2.0),
                                                     (2, False, 3.5)])
def test_matches_numpy_reference(seed, ignore_crowd, sigma):
  rng = np.random.default_rng(seed)
  generator = PanopticTargetGenerator(
      THINGS, ignore_label=IGNORE, label_divisor=DIVISOR, sigma=sigma,
      small_instance_area=12, small_instance_weight=3.0,
      ignore_crowd_in_semantic=ignore_crowd)
  for height, width in [(17, 23), (32, 9), (40, 40)]:
    label = random_scene(rng, height, width)
    expected = reference_targets(label, sigma, 12, 3.0, ignore_crowd)
    assert expected["offset_weights"].any()
    assert_targets_close(generator(label), expected)


def test_known_center_and_half_to_even_rounding():
  label = np.zeros((6, 8), np.int32) + 1 * DIVISOR
  label[1:3, 1:4] = 3 * DIVISOR + 1   # mean y 1.5 -> 2, mean x 2 -> 2.
  label[3, 0:2] = 3 * DIVISOR + 2     # mean x 0.5 -> 0.
  result = PanopticTargetGenerator(THINGS, label_divisor=DIVISOR)(label)
  heat = result["center_heatmap"].numpy()[..., 0]
  assert heat[2, 2] == 1.0 and heat[3, 0] == 1.0
  assert np.sum(heat == 1.0) == 2
  np.testing.assert_array_equal(result["offset"].numpy()[1, 1], [1.0, 1.0])
  np.testing.assert_array_equal(result["offset"].numpy()[3, 1], [0.0, -1.0])
  # Both instances are far below the default small-instance area.
  np.testing.assert_array_equal(result["semantic_weights"].numpy()[1:3, 1:4],
                                3.0)


def test_channel_dim_and_dtypes_and_no_instances():
  rng = np.random.default_rng(5)
  label = random_scene(rng, 12, 14)
  generator = PanopticTargetGenerator(THINGS, label_divisor=DIVISOR, sigma=2.0,
                                      small_instance_area=10)
  expected = reference_targets(label, 2.0, 10, 3.0, False)
  assert_targets_close(generator(label[..., None].astype(np.int64)), expected)
  assert_targets_close(generator(tf.constant(label, tf.int32)), expected)

  stuff_only = np.full((5, 7), 2 * DIVISOR, np.int32)
  stuff_only[0, 0] = IGNORE * DIVISOR
  result = generator(stuff_only)
  assert not result["center_heatmap"].numpy().any()
  assert not result["offset"].numpy().any()
  assert result["center_weights"].numpy().sum() == 34


def test_in_tf_data_with_dynamic_shapes():
  rng = np.random.default_rng(7)
  labels = [random_scene(rng, h, w) for h, w in [(9, 31), (20, 11), (16, 16)]]
  generator = PanopticTargetGenerator(THINGS, label_divisor=DIVISOR,
                                      small_instance_area=15)
  dataset = tf.data.Dataset.from_generator(
      lambda: iter(labels),
      output_signature=tf.TensorSpec([None, None], tf.int32)).map(generator)
  count = 0
  for label, result in zip(labels, dataset):
    assert_targets_close(result, reference_targets(label, 8.0, 15, 3.0, False))
    count += 1
  assert count == len(labels)


@pytest.mark.parametrize("bad,match", [
    (np.zeros((4,), np.int32), "height, width"),
    (np.zeros((1, 4, 4, 1), np.int32), "height, width"),
    (np.zeros((4, 4, 2), np.int32), r"\[height, width, 1\]"),
    (np.zeros((4, 4), np.float32), "integer"),
    (np.full((4, 4), -3, np.int32), "non-negative"),
    (np.full((4, 4), 2**40, np.int64), "int32"),
])
def test_bad_labels_raise_value_error(bad, match):
  generator = PanopticTargetGenerator(THINGS)
  with pytest.raises(ValueError, match=match):
    generator(bad)


def test_negative_ids_fail_in_graph_mode():
  generator = PanopticTargetGenerator(THINGS)
  fn = tf.function(generator,
                   input_signature=[tf.TensorSpec([None, None], tf.int32)])
  with pytest.raises(tf.errors.InvalidArgumentError, match="non-negative"):
    fn(tf.constant([[1, -1]], tf.int32))


@pytest.mark.parametrize("kwargs,match", [
    ({"thing_class_ids": []}, "empty"),
    ({"thing_class_ids": [1, 1]}, "distinct"),
    ({"thing_class_ids": [1, 255]}, "ignore_label"),
    ({"thing_class_ids": [1.5]}, "ints"),
    ({"thing_class_ids": [-1]}, "non-negative"),
    ({"thing_class_ids": [1], "label_divisor": 0}, "label_divisor"),
    ({"thing_class_ids": [1], "sigma": 0.0}, "sigma"),
])
def test_bad_constructor_arguments(kwargs, match):
  with pytest.raises(ValueError, match=match):
    PanopticTargetGenerator(**kwargs)
