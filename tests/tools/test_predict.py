"""End-to-end: tools/predict.py on a small exported model and labelled set.

The COCO panoptic files it writes are scored by the Cityscapes panoptic
evaluation script (run as its own program) and by our PanopticQuality on
the in-process predictions; the two must agree.
"""

import json
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from axial_deeplab_tf.data import metadata as metadata_lib
from axial_deeplab_tf.evaluation import coco_panoptic_format as cpf
from axial_deeplab_tf.evaluation.panoptic_quality import PanopticQuality
from axial_deeplab_tf.serving import export_module as em
from tests.serving import serving_utils as su

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


def _produce_predictions(root):
  """Export -> images (one broken) -> tools/predict.py.

  Writes under root: export/, images/, out/ (the tool's output), tool.json
  (its exit status and stderr), preds.npz (the export module's outputs in
  this process).
  """
  # Biased towards the thing classes so that scenes hold instances.
  model = su.built(su.TinyPanoptic(len(CATEGORIES), seed=11,
                                   semantic_bias=(0., 0., 1.2, 1.2)))
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
  preds = {}
  for name, (h, w) in SIZES.items():
    image = su.scene(rng, h, w)
    Image.fromarray(image).save(images_dir / f"{name}.png")
    out = module.inference_from_image_tensors(tf.constant(image[None]))
    preds.update({f"{name}/{k}": v.numpy()[0] for k, v in out.items()})
  (images_dir / "broken.png").write_bytes(b"not a png at all")
  np.savez(root / "preds.npz", **preds)
  result = su.run_tool("predict", [
      f"--saved_model={export_dir}", f"--images={images_dir}/*.png",
      f"--output_dir={root / 'out'}", "--save_semantic", "--save_instance"],
                       timeout=600)
  (root / "tool.json").write_text(json.dumps(
      {"returncode": result.returncode, "stderr": result.stderr}))


@pytest.fixture(scope="module")
def predicted(tmp_path_factory):
  root = su.run_once(tmp_path_factory, "predict", _produce_predictions)
  preds = {}
  for key, value in np.load(root / "preds.npz").items():
    name, output = key.split("/", 1)
    preds.setdefault(name, {})[output] = value
  return {"root": root, "out": root / "out", "preds": preds,
          "tool": json.loads((root / "tool.json").read_text())}


def test_reports_the_bad_image_and_writes_the_others(predicted):
  returncode, stderr = (predicted["tool"]["returncode"],
                        predicted["tool"]["stderr"])
  assert returncode == 1, stderr[-2000:]
  assert "broken.png: FAILED" in stderr
  assert "1 image(s) failed" in stderr
  assert f"Predicted {len(SIZES)} of {len(SIZES) + 1} images" in stderr
  # The progress bar reaches the last of the four images.
  assert f"] {len(SIZES) + 1}/{len(SIZES) + 1} " in stderr
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
  # The official script as its own program; it finds the PNGs of
  # <dir>/panoptic.json in <dir>/panoptic/ by its own convention.
  results_file = root / "cityscapes_pq.json"
  result = subprocess.run(
      [sys.executable, "-m",
       "cityscapesscripts.evaluation.evalPanopticSemanticLabeling",
       f"--gt-json-file={root / 'gt.json'}", f"--gt-folder={root / 'gt'}",
       f"--prediction-json-file={out / 'panoptic.json'}",
       f"--results_file={results_file}"],
      capture_output=True, text=True, cwd=str(root), timeout=300,
      env=su.plain_env())
  assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
  reference = json.loads(results_file.read_text())
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
  su.assert_usage_error("predict", [
      f"--saved_model={tmp_path}", f"--images={tmp_path}/*.png",
      f"--output_dir={tmp_path / 'o'}"], "no files match")
  su.assert_usage_error("predict", [f"--images={tmp_path}/*.png"],
                        "--saved_model is required")
