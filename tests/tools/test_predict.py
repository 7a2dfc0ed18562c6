"""End-to-end: tools/predict.py on a small exported model and labelled set.

The COCO panoptic files it writes are scored by the Cityscapes panoptic
evaluation scripts and by our PanopticQuality on the in-process predictions;
the two must agree.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tf_keras
from PIL import Image

from axial_deeplab_tf.data import metadata as metadata_lib
from axial_deeplab_tf.evaluation import coco_panoptic_format as cpf
from axial_deeplab_tf.evaluation.panoptic_quality import PanopticQuality
from axial_deeplab_tf.serving import export_module as em

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
TOOL = os.path.join(REPO, "tools", "predict.py")

CATEGORIES = [
    {"id": 7, "name": "road", "isthing": 0, "color": [128, 64, 128]},
    {"id": 11, "name": "building", "isthing": 0, "color": [70, 70, 70]},
    {"id": 24, "name": "person", "isthing": 1, "color": [220, 20, 60]},
    {"id": 26, "name": "car", "isthing": 1, "color": [0, 0, 142]},
]
THINGS = (2, 3)
DIV = 1000
IGNORE = 255
SIZES = {"street": (40, 56), "odd": (33, 47), "square": (48, 48)}


class _TinyPanoptic(tf_keras.Model):
  """Conv stand-in with the panoptic output dict at input resolution."""

  def __init__(self, **kwargs):
    super().__init__(**kwargs)
    init = tf_keras.initializers.RandomNormal(stddev=0.5, seed=11)
    self.num_classes = len(CATEGORIES)
    self.body = tf_keras.layers.Conv2D(8, 3, padding="same",
                                       activation="relu",
                                       kernel_initializer=init)
    self.pool = tf_keras.layers.AveragePooling2D(5, 1, padding="same")
    # Biased towards the thing classes so that scenes hold instances.
    self.semantic = tf_keras.layers.Conv2D(
        self.num_classes, 1, kernel_initializer=init,
        bias_initializer=tf_keras.initializers.Constant([0., 0., 1.2, 1.2]))
    self.center = tf_keras.layers.Conv2D(
        1, 1, kernel_initializer=init,
        bias_initializer=tf_keras.initializers.Constant(1.0))
    self.offset = tf_keras.layers.Conv2D(2, 1, kernel_initializer=init)

  def call(self, images, training=None):
    x = tf.cast(images, tf.float32) / 127.5 - 1.0
    x = self.pool(self.body(x))
    return {"semantic_logits": self.semantic(x),
            "center_heatmap": self.center(x),
            "offset_map": self.offset(x) * 3.0}


def _scene(rng, height, width):
  image = np.empty((height, width, 3), np.int64)
  image[:] = rng.integers(0, 256, size=3)
  for _ in range(6):
    y, x = rng.integers(0, height), rng.integers(0, width)
    h, w = rng.integers(4, height // 2 + 5), rng.integers(4, width // 2 + 5)
    image[y:y + h, x:x + w] = rng.integers(0, 256, size=3)
  image += rng.integers(-8, 9, size=image.shape)
  return np.clip(image, 0, 255).astype(np.uint8)


def _groundtruth(rng, pred):
  """A labelling close to the prediction: crowd, void, splits, relabels."""
  gt = pred.copy()
  things = [s for s in np.unique(pred) if s // DIV in THINGS and s % DIV]
  if things:
    gt[pred == things[0]] = things[0] // DIV * DIV  # crowd
  for s in things[1:3]:
    ys, xs = np.nonzero(pred == s)
    half = ys < np.median(ys)
    gt[ys[half], xs[half]] = s // DIV * DIV + 900  # split off a new instance
  for s in things[3:5]:
    other = THINGS[0] if s // DIV == THINGS[1] else THINGS[1]
    gt[pred == s] = other * DIV + 800  # the other thing class
  h, w = gt.shape
  gt[rng.integers(0, h // 2):, :rng.integers(2, w // 3)] = IGNORE * DIV
  y, x = rng.integers(0, h // 2), rng.integers(w // 2, w - 4)
  gt[y:y + h // 3, x:x + w // 4] = 1 * DIV  # building
  return gt


@pytest.fixture(scope="module")
def predicted(tmp_path_factory):
  root = tmp_path_factory.mktemp("predict")
  model = _TinyPanoptic()
  model(tf.zeros([1, 8, 8, 3], tf.uint8))
  meta = metadata_lib.from_categories(CATEGORIES, name="tiny_city",
                                      label_divisor=DIV, ignore_label=IGNORE)
  module = em.build_export_module(
      em.ServingParams(task="panoptic"), model,
      em.panoptic_post_processor(len(CATEGORIES), meta, stuff_area_limit=20,
                                 nms_kernel=5, keep_k_centers=32))
  export_dir = em.export_saved_model(module, str(root / "export"),
                                     function_keys=["image_tensor"],
                                     dataset_metadata=meta)
  rng = np.random.default_rng(0)
  images_dir = root / "images"
  images_dir.mkdir()
  images = {}
  for name, (h, w) in SIZES.items():
    images[name] = _scene(rng, h, w)
    Image.fromarray(images[name]).save(images_dir / f"{name}.png")
  (images_dir / "broken.png").write_bytes(b"not a png at all")
  output_dir = root / "out"
  result = subprocess.run(
      [sys.executable, TOOL, f"--saved_model={export_dir}",
       f"--images={images_dir}/*.png", f"--output_dir={output_dir}",
       "--save_semantic", "--save_instance"],
      capture_output=True, text=True, cwd=REPO, timeout=600)
  preds = {n: module.inference_from_image_tensors(tf.constant(i[None]))
           for n, i in images.items()}
  return {"result": result, "out": output_dir, "images": images,
          "preds": {n: {k: v.numpy()[0] for k, v in p.items()}
                    for n, p in preds.items()},
          "root": root}


def test_reports_the_bad_image_and_writes_the_others(predicted):
  result = predicted["result"]
  assert result.returncode == 1, result.stderr[-2000:]
  assert "broken.png: FAILED" in result.stderr
  assert "1 image(s) failed" in result.stderr
  assert f"Predicted {len(SIZES)} of {len(SIZES) + 1} images" in result.stderr
  out = predicted["out"]
  content = json.loads((out / "panoptic.json").read_text())
  assert sorted(a["image_id"] for a in content["annotations"]) == sorted(SIZES)
  assert [c["id"] for c in content["categories"]] == [7, 11, 24, 26]
  for name, (h, w) in SIZES.items():
    overlay = np.asarray(Image.open(out / "overlays" / f"{name}.png"))
    assert overlay.shape == (h, w, 3)
    pred = predicted["preds"][name]
    semantic = np.asarray(Image.open(out / "semantic" / f"{name}.png"))
    np.testing.assert_array_equal(semantic, pred["semantic_pred"])
    instance = np.asarray(Image.open(out / "instance" / f"{name}.png"))
    np.testing.assert_array_equal(instance, pred["instance_pred"])
    annotation = next(a for a in content["annotations"]
                      if a["image_id"] == name)
    back = cpf.read_annotation(str(out / "panoptic"), annotation, CATEGORIES,
                               DIV, IGNORE)
    # Same segments (instance numbers may be renumbered by the reader).
    panoptic = pred["panoptic_pred"]
    pairs = set(zip(panoptic.ravel().tolist(), back.ravel().tolist()))
    assert len(pairs) == len(np.unique(panoptic)) == len(np.unique(back))
    assert all(p // DIV == b // DIV for p, b in pairs)


def test_cityscapes_evaluator_agrees_with_ours(predicted):
  cs_eval = pytest.importorskip(
      "cityscapesscripts.evaluation.evalPanopticSemanticLabeling")
  rng = np.random.default_rng(1)
  root, out = predicted["root"], predicted["out"]
  metric = PanopticQuality(len(CATEGORIES), THINGS, IGNORE, DIV)
  gt_annotations = []
  for name in SIZES:
    pred = predicted["preds"][name]["panoptic_pred"]
    gt = _groundtruth(rng, pred)
    metric.update(gt, pred)
    gt_annotations.append(cpf.write_annotation(
        str(root / "gt"), f"{name}.png", name, gt, CATEGORIES, DIV, IGNORE,
        is_groundtruth=True))
  cpf.write_json(str(root / "gt.json"), gt_annotations, CATEGORIES)
  gt_json = cpf.read_json(str(root / "gt.json"))
  pred_json = cpf.read_json(str(out / "panoptic.json"))
  by_id = {a["image_id"]: a for a in pred_json["annotations"]}
  pairs = [(a, by_id[a["image_id"]]) for a in gt_json["annotations"]]
  categories = {c["id"]: c for c in gt_json["categories"]}
  stat = cs_eval.pq_compute_single_core(0, pairs, str(root / "gt"),
                                        str(out / "panoptic"), categories)
  reference = cs_eval.average_pq(stat, categories)
  ours = metric.result()
  for name, suffix in (("All", ""), ("Things", "_th"), ("Stuff", "_st")):
    for key in ("pq", "sq", "rq"):
      assert abs(ours[key + suffix] - reference[name][key]) < 1e-9, (name,
                                                                     key)
    assert ours["num_classes_valid" + suffix] == reference[name]["n"]
  # A score strictly between 0 and 1, with crowd, void and misses in play.
  assert 0.2 < ours["pq"] < 0.95
  assert ours["fn_per_class"].sum() > 0 and ours["fp_per_class"].sum() > 0


def test_usage_errors_exit_with_status_2(tmp_path):
  result = subprocess.run(
      [sys.executable, TOOL, f"--saved_model={tmp_path}",
       f"--images={tmp_path}/*.png", f"--output_dir={tmp_path / 'o'}"],
      capture_output=True, text=True, cwd=REPO, timeout=300)
  assert result.returncode == 2
  assert "no files match" in result.stderr
