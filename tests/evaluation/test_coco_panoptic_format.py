"""COCO panoptic PNG + JSON writing and reading."""

import json

import numpy as np
import pytest
from PIL import Image

from axial_deeplab_tf.evaluation import coco_panoptic_format as cpf

CATEGORIES = [
    {"id": 17, "name": "sky", "isthing": 0},
    {"id": 1, "name": "person", "isthing": 1},
    {"id": 3, "name": "car", "isthing": 1},
]
DIV = 1000
VOID = 255 * DIV


def _panoptic():
  p = np.zeros((12, 16), np.int64)  # sky
  p[1:5, 2:7] = 1 * DIV + 1
  p[6:11, 1:4] = 1 * DIV + 2
  p[2:9, 9:14] = 1 * DIV  # person crowd
  p[9:12, 10:16] = 2 * DIV + 1
  p[0, :] = VOID
  p[11, 0] = VOID + 3  # void with an instance id is still void
  return p


def test_rgb_encoding():
  ids = np.array([[0, 1 + 2 * 256 + 3 * 65536], [256**3 - 1, 300]])
  rgb = cpf.id2rgb(ids)
  np.testing.assert_array_equal(rgb[0, 1], [1, 2, 3])
  np.testing.assert_array_equal(rgb[1, 0], [255, 255, 255])
  np.testing.assert_array_equal(rgb[1, 1], [300 - 256, 1, 0])
  np.testing.assert_array_equal(cpf.rgb2id(rgb), ids)
  with pytest.raises(ValueError, match="segment_ids"):
    cpf.id2rgb(np.array([[256**3]]))


def test_segments_info_against_masks():
  panoptic = _panoptic()
  segment_map, info = cpf.panoptic_to_coco(panoptic, CATEGORIES, DIV, 255)
  assert [s["id"] for s in info] == sorted(s["id"] for s in info)
  void = panoptic // DIV == 255
  np.testing.assert_array_equal(segment_map == 0, void)
  by_id = {s["id"]: s for s in info}
  for value in np.unique(panoptic[~void]):
    mask = panoptic == value
    segment = by_id[int(value) + 1]
    ys, xs = np.nonzero(mask)
    assert segment["area"] == mask.sum()
    assert segment["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1,
                               ys.max() - ys.min() + 1]
    assert segment["category_id"] == CATEGORIES[value // DIV]["id"]
    assert segment["iscrowd"] == int(value == 1 * DIV)
  assert len(info) == len(np.unique(panoptic[~void]))
  _, pred_info = cpf.panoptic_to_coco(panoptic, CATEGORIES, DIV, 255,
                                      is_groundtruth=False)
  assert not any(s["iscrowd"] for s in pred_info)


def test_write_read_round_trip(tmp_path):
  panoptic = _panoptic()
  annotation = cpf.write_annotation(str(tmp_path / "png"), "a.png", 7,
                                    panoptic, CATEGORIES, DIV, 255)
  cpf.write_json(str(tmp_path / "a.json"), [annotation], CATEGORIES)
  content = cpf.read_json(str(tmp_path / "a.json"))
  assert content["categories"] == CATEGORIES
  assert content["annotations"][0]["image_id"] == 7
  # The PNG is a plain RGB image holding id = R + 256 G + 65536 B.
  rgb = np.array(Image.open(tmp_path / "png" / "a.png"))
  assert rgb.shape == (12, 16, 3) and rgb.dtype == np.uint8
  assert rgb[3, 3].astype(int) @ [1, 256, 65536] == 1 * DIV + 1 + 1
  back = cpf.read_annotation(str(tmp_path / "png"),
                             content["annotations"][0], CATEGORIES, DIV, 255)
  expected = panoptic.copy()
  expected[expected // DIV == 255] = VOID
  np.testing.assert_array_equal(back, expected)


def test_read_renumbers_instances_in_segments_info_order():
  segment_map = np.array([[5, 5, 9, 9], [4, 4, 0, 2]])
  info = [{"id": 9, "category_id": 1, "iscrowd": 0},
          {"id": 5, "category_id": 1, "iscrowd": 0},
          {"id": 4, "category_id": 1, "iscrowd": 1},
          {"id": 2, "category_id": 17, "iscrowd": 0}]
  back = cpf.coco_to_panoptic(segment_map, info, CATEGORIES, DIV, 255)
  np.testing.assert_array_equal(
      back, [[DIV + 2, DIV + 2, DIV + 1, DIV + 1], [DIV, DIV, VOID, 0]])


@pytest.mark.parametrize("info, message", [
    ([{"id": 5, "category_id": 1, "iscrowd": 0}], "not in segments_info"),
    ([{"id": 5, "category_id": 1, "iscrowd": 0},
      {"id": 9, "category_id": 2, "iscrowd": 0}], "unknown category_id"),
    ([{"id": 5, "category_id": 17, "iscrowd": 0},
      {"id": 9, "category_id": 17, "iscrowd": 0}], "two segments"),
    ([{"id": 5, "category_id": 1, "iscrowd": 0},
      {"id": 9, "category_id": 1, "iscrowd": 0},
      {"id": 8, "category_id": 1, "iscrowd": 0}], "not in the PNG"),
])
def test_inconsistent_annotation_raises(info, message):
  with pytest.raises(ValueError, match=message):
    cpf.coco_to_panoptic(np.array([[5, 9]]), info, CATEGORIES, DIV, 255)


def test_failed_png_write_leaves_nothing(tmp_path, monkeypatch):
  def failing_save(self, path, *args, **kwargs):
    with open(path, "wb") as f:
      f.write(b"partial")
    raise OSError("disk full")

  monkeypatch.setattr(Image.Image, "save", failing_save)
  with pytest.raises(OSError, match="disk full"):
    cpf.write_annotation(str(tmp_path), "a.png", 1, _panoptic(), CATEGORIES,
                         DIV, 255)
  assert not list(tmp_path.iterdir())


def test_bad_inputs_raise(tmp_path):
  with pytest.raises(ValueError, match="class ids"):
    cpf.panoptic_to_coco(np.full((2, 2), 3 * DIV), CATEGORIES, DIV, 255)
  with pytest.raises(ValueError, match="dtype"):
    cpf.panoptic_to_coco(np.zeros((2, 2), np.float32), CATEGORIES, DIV, 255)
  with pytest.raises(ValueError, match="24-bit"):
    cpf.panoptic_to_coco(np.full((2, 2), 2 * 10**7 + 1), CATEGORIES, 10**7,
                         255)
  with pytest.raises(ValueError, match="duplicate id"):
    cpf.check_categories(CATEGORIES + [CATEGORIES[0]])
  with pytest.raises(ValueError, match="isthing"):
    cpf.check_categories([{"id": 1, "name": "a", "isthing": 2}])
  with pytest.raises(ValueError, match=".png"):
    cpf.write_annotation(str(tmp_path), "a.jpg", 1, np.zeros((2, 2),
                                                             np.int64),
                         CATEGORIES, DIV, 255)
  bad_json = tmp_path / "bad.json"
  bad_json.write_text(json.dumps({"annotations": []}))
  with pytest.raises(ValueError, match="categories"):
    cpf.read_json(str(bad_json))
