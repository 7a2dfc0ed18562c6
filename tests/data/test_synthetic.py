"""Tests of the synthetic panoptic data generator."""

import json
import os

import numpy as np
from PIL import Image
import pytest

from axial_deeplab_tf.data import synthetic

THINGS = {c["id"] for c in synthetic.CATEGORIES if c["isthing"]}
COLORS = {c["id"]: np.array(c["color"], float) for c in synthetic.CATEGORIES}


def _render(seed, **kwargs):
  return synthetic.render_example(np.random.default_rng(seed), **kwargs)


def test_every_pixel_in_one_listed_segment_with_sizes_kept():
  for seed in range(6):
    image, ids, segments = _render(seed, height=96, width=112,
                                   crowd_probability=0.5)
    assert image.shape == (96, 112, 3) and image.dtype == np.uint8
    assert [s["id"] for s in segments] == list(range(1, len(segments) + 1))
    assert set(np.unique(ids)) == {s["id"] for s in segments}
    min_area = int(60 * 96 * 112 / (128 * 128))
    for s in segments:
      if s["category_id"] in THINGS:
        assert (ids == s["id"]).sum() >= min_area
    num_things = sum(s["category_id"] in THINGS and not s["iscrowd"]
                     for s in segments)
    assert 3 <= num_things <= 8
    assert all(s["category_id"] in THINGS for s in segments if s["iscrowd"])


def test_class_colors_are_clear():
  # The mean color of each class stays near its category color, and each
  # class is nearest to its own color: what makes the data easy to learn.
  sums = {k: np.zeros(3) for k in COLORS}
  counts = {k: 0 for k in COLORS}
  for seed in range(8):
    image, ids, segments = _render(seed)
    for s in segments:
      mask = ids == s["id"]
      sums[s["category_id"]] += image[mask].astype(float).sum(0)
      counts[s["category_id"]] += mask.sum()
  for k in COLORS:
    assert counts[k] > 0
    mean = sums[k] / counts[k]
    nearest = min(COLORS, key=lambda j: np.linalg.norm(COLORS[j] - mean))
    assert nearest == k
    assert np.linalg.norm(COLORS[k] - mean) < 30


def test_instances_touch_and_occlude_somewhere():
  touching = occluded = 0
  for seed in range(20):
    _, ids, segments = _render(seed)
    things = [s["id"] for s in segments if s["category_id"] in THINGS]
    for a in things:
      mask = ids == a
      grown = mask.copy()
      grown[1:] |= mask[:-1]
      grown[:-1] |= mask[1:]
      grown[:, 1:] |= mask[:, :-1]
      grown[:, :-1] |= mask[:, 1:]
      neighbours = set(np.unique(ids[grown & ~mask])) & set(things)
      touching += bool(neighbours)
    for s in segments:
      if s["category_id"] != 1 or s["iscrowd"]:
        continue
      # A circle away from the border covers pi r^2 unless it is occluded.
      rows, cols = np.nonzero(ids == s["id"])
      if rows.min() > 0 and cols.min() > 0 and rows.max() < 127 and (
          cols.max() < 127):
        r = max(rows.max() - rows.min() + 1, cols.max() - cols.min() + 1) / 2
        occluded += len(rows) < 0.8 * np.pi * r * r
  assert touching > 10 and occluded >= 2


def test_deterministic_and_seed_dependent():
  a = _render(3)
  b = _render(3)
  c = _render(4)
  np.testing.assert_array_equal(a[0], b[0])
  np.testing.assert_array_equal(a[1], b[1])
  assert a[2] == b[2]
  assert not np.array_equal(a[0], c[0])


def test_image_independent_of_dataset_size(tmp_path):
  small = synthetic.write_split(str(tmp_path / "s"), "train", 2, (40, 40), 9)
  large = synthetic.write_split(str(tmp_path / "l"), "train", 4, (40, 40), 9)
  for name in ("000002.png",):
    with open(f"{small['image_dir']}/{name}", "rb") as f1, \
        open(f"{large['image_dir']}/{name}", "rb") as f2:
      assert f1.read() == f2.read()


def test_segment_ids_to_rgb_inverse():
  ids = np.array([[0, 1, 255, 256], [65535, 65536, 2**24 - 1, 70000]])
  rgb = synthetic.segment_ids_to_rgb(ids).astype(np.int64)
  np.testing.assert_array_equal(
      rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2], ids)


def test_bad_arguments():
  with pytest.raises(ValueError, match="16x16"):
    _render(0, height=8, width=64)
  with pytest.raises(ValueError, match="min_instances"):
    _render(0, min_instances=5, max_instances=2)
  with pytest.raises(ValueError, match="image_format"):
    synthetic.write_split("/tmp/unused", "train", 1, (32, 32), 0, "bmp")


def test_panoptic_split_writer_round_trip(tmp_path):
  # Two images drawn by hand: a stuff background, one square "thing" and,
  # in image 2, an empty mask that must not become a segment.
  def render(index, height, width):
    ids = np.zeros((height, width), np.int32)
    segments = []
    square = np.zeros((height, width), bool)
    square[2:5, 3 + index:7 + index] = True
    assert synthetic.add_segment(ids, segments, ~square, 11)
    assert synthetic.add_segment(ids, segments, square, 1, iscrowd=index)
    assert not synthetic.add_segment(ids, segments,
                                     np.zeros_like(square), 2)
    image = np.full((height, width, 3), 10 * index, np.uint8)
    return image, ids, segments, {"scene": index}

  categories = [{"id": 1, "name": "a", "isthing": 1},
                {"id": 11, "name": "b", "isthing": 0}]
  paths = synthetic.write_panoptic_split(
      str(tmp_path), "x", 2, (8, 12), render, categories, "hand drawn")
  with open(paths["panoptic_json"]) as f:
    data = json.load(f)
  assert data["info"]["description"] == "hand drawn"
  assert data["categories"] == categories
  assert [(i["id"], i["file_name"], i["height"], i["width"], i["scene"])
          for i in data["images"]] == [(1, "000001.png", 8, 12, 0),
                                       (2, "000002.png", 8, 12, 1)]
  for index, annotation in enumerate(data["annotations"]):
    rgb = np.asarray(Image.open(os.path.join(
        paths["panoptic_dir"], annotation["file_name"]))).astype(np.int64)
    ids = rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]
    assert [(s["id"], s["category_id"], s["iscrowd"])
            for s in annotation["segments_info"]] == [(1, 11, 0),
                                                      (2, 1, index)]
    thing = annotation["segments_info"][1]
    # Area and [x, y, w, h] box of the square at rows 2-4, columns
    # 3+index ... 6+index.
    assert thing["area"] == 12 == int((ids == 2).sum())
    assert thing["bbox"] == [3 + index, 2, 4, 3]
    assert annotation["segments_info"][0]["area"] == 8 * 12 - 12
    image = np.asarray(Image.open(os.path.join(
        paths["image_dir"], data["images"][index]["file_name"])))
    assert image.shape == (8, 12, 3) and np.all(image == 10 * index)
  with pytest.raises(ValueError, match="num_images"):
    synthetic.write_panoptic_split(str(tmp_path), "y", -1, (8, 8), render,
                                   categories, "")
  with pytest.raises(ValueError, match="splits"):
    synthetic.write_panoptic_dataset(str(tmp_path), categories, ("a",), (1,),
                                     lambda split, count: {})
