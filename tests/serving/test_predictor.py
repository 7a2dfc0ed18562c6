"""PredictionWriter and category handling on hand-made outputs."""

import json

import numpy as np
import pytest
from PIL import Image

from axial_deeplab_tf.evaluation import coco_panoptic_format as cpf
from axial_deeplab_tf.serving import predictor

PANOPTIC_CONFIG = {"task": "panoptic", "num_classes": 3, "label_divisor": 100,
                   "ignore_label": 255, "thing_class_ids": [2],
                   "dataset": None}


def test_categories_from_metadata_flags_and_defaults():
  meta = {"class_names": ["sky", "road", "car"],
          "original_category_ids": [23, 7, 26], "thing_class_ids": [2],
          "colors": [[1, 2, 3], [4, 5, 6], [7, 8, 9]]}
  cats = predictor.categories_for(dict(PANOPTIC_CONFIG, dataset=meta))
  assert [(c["id"], c["name"], c["isthing"]) for c in cats] == [
      (23, "sky", 0), (7, "road", 0), (26, "car", 1)]
  generic = predictor.categories_for(PANOPTIC_CONFIG)
  assert [(c["id"], c["isthing"]) for c in generic] == [(0, 0), (1, 0),
                                                        (2, 1)]
  given = [{"id": 5, "name": "a", "isthing": 0},
           {"id": 6, "name": "b", "isthing": 1},
           {"id": 7, "name": "c", "isthing": 1}]
  with pytest.raises(ValueError, match="things"):
    predictor.categories_for(PANOPTIC_CONFIG, given)
  with pytest.raises(ValueError, match="3 classes"):
    predictor.categories_for(PANOPTIC_CONFIG, given[:2])


def test_panoptic_files(tmp_path):
  cats = predictor.categories_for(PANOPTIC_CONFIG)
  writer = predictor.PredictionWriter(str(tmp_path), PANOPTIC_CONFIG, cats,
                                      save_semantic=True, save_instance=True)
  panoptic = np.array([[0, 0, 201, 201], [100, 202, 201, 201],
                       [25500, 25500, 202, 0], [25500, 25500, 202, 0]],
                      np.int32)
  outputs = {"panoptic_pred": panoptic,
             "semantic_pred": np.array([[0, 0, 2, 2], [1, 2, 2, 2],
                                        [1, 1, 2, 0], [1, 1, 2, 0]]),
             "instance_pred": np.array([[0, 0, 1, 1], [0, 2, 1, 1],
                                        [0, 0, 2, 0], [0, 0, 2, 0]])}
  image = np.full((4, 4, 3), 50, np.uint8)
  writer.write("a", "a.jpg", image, outputs)
  written = writer.finish()
  content = json.loads(open(written["panoptic_json"]).read())
  assert content["images"] == [{"id": "a", "file_name": "a.jpg", "height": 4,
                                "width": 4}]
  annotation = content["annotations"][0]
  assert annotation["file_name"] == "a.png"
  assert {s["id"] for s in annotation["segments_info"]} == {1, 101, 202, 203}
  assert not any(s["iscrowd"] for s in annotation["segments_info"])
  back = cpf.read_annotation(str(tmp_path / "panoptic"), annotation, cats,
                             100, 255)
  np.testing.assert_array_equal(back, panoptic)
  np.testing.assert_array_equal(
      np.asarray(Image.open(tmp_path / "semantic" / "a.png")),
      outputs["semantic_pred"])
  np.testing.assert_array_equal(
      np.asarray(Image.open(tmp_path / "instance" / "a.png")),
      outputs["instance_pred"])
  overlay = np.asarray(Image.open(tmp_path / "overlays" / "a.png"))
  assert overlay.shape == (4, 4, 3)
  # Inside the void region (off the outlines) the image shows unchanged.
  assert tuple(overlay[3, 0]) == (50, 50, 50)
  with pytest.raises(ValueError, match="does not match"):
    writer.write("b", "b.jpg", np.zeros((5, 4, 3), np.uint8), outputs)


def test_semantic_and_classification_files(tmp_path):
  config = {"task": "semantic", "num_classes": 300, "dataset": None}
  writer = predictor.PredictionWriter(str(tmp_path / "s"), config,
                                      predictor.categories_for(config))
  semantic = np.array([[0, 299], [5, 5]])
  writer.write("x", "x.png", np.zeros((2, 2, 3), np.uint8),
               {"semantic_pred": semantic,
                "semantic_probs": np.zeros((2, 2, 300))})
  saved = np.asarray(Image.open(tmp_path / "s" / "semantic" / "x.png"))
  np.testing.assert_array_equal(saved, semantic)  # 16-bit: ids above 255
  assert writer.finish() == {}

  config = {"task": "classification", "num_classes": 3, "dataset": None}
  cats = [{"id": "n01", "name": "tench", "isthing": 0},
          {"id": "n02", "name": "goldfish", "isthing": 0},
          {"id": "n03", "name": "shark", "isthing": 0}]
  writer = predictor.PredictionWriter(str(tmp_path / "c"), config, cats)
  writer.write("y", "y.jpg", np.zeros((2, 2, 3), np.uint8),
               {"probabilities": np.array([0.2, 0.7, 0.1]),
                "classes": np.int32(1), "logits": np.zeros(3)})
  path = writer.finish()["predictions_json"]
  prediction = json.loads(open(path).read())["predictions"][0]
  assert prediction["class_name"] == "goldfish"
  assert prediction["category_id"] == "n02"
  assert abs(prediction["probability"] - 0.7) < 1e-9
