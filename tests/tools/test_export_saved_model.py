"""End-to-end: tools/export_saved_model.py on a tiny Axial-DeepLab.

One export (module-scoped) is loaded in a fresh Python process that imports
only TensorFlow; its outputs are compared with the in-process Keras model
and post-processor on the same images.
"""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from axial_deeplab_tf import models
from axial_deeplab_tf.ops import post_processing

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
TOOL = os.path.join(REPO, "tools", "export_saved_model.py")

MODEL = "axial_deeplab_s"
# Narrow and shallow, so that building, tracing and serving stay cheap.
OVERRIDES = {"width_multiplier": 0.125, "num_classes": 5, "depth": 26,
             "semantic_channels": 16, "instance_channels": 16,
             "context_channels": 16, "stem_channels": (8, 8, 16)}
PP_ARGS = dict(thing_class_ids=[3, 4], num_classes=5, label_divisor=256,
               ignore_label=255, stuff_area_limit=16, nms_kernel=7,
               keep_k_centers=200)
# name -> [batch, height, width]
CASES = {"batch2": (2, 48, 64), "tall": (1, 451, 300), "wide": (1, 97, 1025)}

# Runs in a fresh interpreter (-I: no repository, no PYTHONPATH on the path)
# that imports nothing but TensorFlow and numpy. (The encoded-image
# signatures are exercised on a small model in tests/serving.)
SERVE_SCRIPT = r"""
import json, sys
import numpy as np
import tensorflow as tf
export_dir, inputs_path, outputs_path, report_path = sys.argv[1:5]
loaded = tf.saved_model.load(export_dir)
inputs = np.load(inputs_path)
outputs, report = {}, {"signatures": sorted(loaded.signatures)}
serve = loaded.signatures["serving_default"]
for name in inputs.files:
  if name.startswith("case_"):
    result = serve(images=tf.constant(inputs[name]))
    for key, value in result.items():
      outputs[name + "/" + key] = value.numpy()
errors = {}
for name, bad in (("float32", tf.zeros([1, 8, 8, 3], tf.float32)),
                  ("rank3", tf.zeros([8, 8, 3], tf.uint8)),
                  ("channels4", tf.zeros([1, 8, 8, 4], tf.uint8))):
  try:
    serve(images=bad)
    errors[name] = None
  except Exception as e:
    errors[name] = type(e).__name__ + ": " + str(e)
report["errors"] = errors
report["foreign_modules"] = sorted(
    m for m in sys.modules
    if m.split(".")[0] in ("axial_deeplab_tf", "official", "orbit", "gin"))
np.savez(outputs_path, **outputs)
with open(report_path, "w") as f:
  json.dump(report, f)
"""


def _plain_env():
  """The environment of a service: no project settings for Keras."""
  env = {k: v for k, v in os.environ.items()
         if k not in ("TF_USE_LEGACY_KERAS", "PYTHONPATH")}
  env["TF_CPP_MIN_LOG_LEVEL"] = "2"
  return env


def _scene(rng, height, width):
  """Flat-colored rectangles with a little noise."""
  image = np.empty((height, width, 3), np.int64)
  image[:] = rng.integers(0, 256, size=3)
  for _ in range(8):
    y, x = rng.integers(0, height), rng.integers(0, width)
    h, w = rng.integers(8, height // 2 + 9), rng.integers(8, width // 2 + 9)
    image[y:y + h, x:x + w] = rng.integers(0, 256, size=3)
  image += rng.integers(-6, 7, size=image.shape)
  return np.clip(image, 0, 255).astype(np.uint8)


def _calibrate_heads(model, images):
  """Rescales the 1x1 head classifiers of the random model so that its
  outputs vary like a trained model's (its initial outputs are ~1e-5):
  standardised class logits, a heatmap around 0.3 with many peaks above the
  0.1 threshold, offsets of a few pixels (the model multiplies them by
  its upsampling factor 4)."""
  raw = model(images, training=False)
  targets = {"semantic_logits": (model.semantic_head, 0.0, 2.0),
             "center_heatmap": (model.center_head, 0.3, 0.3),
             "offset_map": (model.offset_head, 0.0, 1.0)}
  for key, (head, target_mean, target_std) in targets.items():
    values = raw[key].numpy().reshape(-1, raw[key].shape[-1])
    kernel, bias = [w for w in head.weights
                    if "classifier" in w.name.split("/")[-2]]
    factor = target_std / values.std(axis=0)
    conv_mean = values.mean(axis=0) - bias.numpy()
    kernel.assign(kernel * factor)
    bias.assign(target_mean - conv_mean * factor)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
  root = tmp_path_factory.mktemp("export")
  model = models.build(MODEL, **OVERRIDES)
  rng = np.random.default_rng(0)
  inputs = {f"case_{name}": np.stack([_scene(rng, h, w) for _ in range(b)])
            for name, (b, h, w) in CASES.items()}
  _calibrate_heads(model, inputs["case_batch2"])
  prefix = tf.train.Checkpoint(model=model).write(str(root / "ckpt" / "ckpt"))
  export_dir = str(root / "saved_model")
  command = [
      sys.executable, TOOL, f"--model={MODEL}",
      f"--checkpoint_path={prefix}", f"--export_dir={export_dir}",
      "--thing_class_ids=3,4", "--label_divisor=256", "--ignore_label=255",
      "--stuff_area_limit=16", "--nms_kernel=7"
  ] + [f"--set={k}={v!r}" for k, v in OVERRIDES.items()]
  result = subprocess.run(command, capture_output=True, text=True, cwd=REPO,
                          timeout=900)
  assert result.returncode == 0, result.stderr[-3000:]
  summary = json.loads(result.stdout.strip().splitlines()[-1])
  assert summary["export_dir"] == export_dir
  assert summary["task"] == "panoptic"

  np.savez(root / "inputs.npz", **inputs)
  result = subprocess.run(
      [sys.executable, "-I", "-c", SERVE_SCRIPT, export_dir,
       str(root / "inputs.npz"), str(root / "outputs.npz"),
       str(root / "report.json")],
      capture_output=True, text=True, cwd=str(root), timeout=900,
      env=_plain_env())
  assert result.returncode == 0, result.stderr[-3000:]
  with open(root / "report.json") as f:
    report = json.load(f)
  served = dict(np.load(root / "outputs.npz"))
  return {"model": model, "export_dir": export_dir, "inputs": inputs,
          "served": served, "report": report}


def _reference_fn(model):
  """The Keras model and the post-processor, run in this process.

  Both run inside one tf.function: the SavedModel's functions are graphs
  too, and graph execution may fuse kernels (e.g. conv + bias + relu) that
  round differently from op-by-op eager execution; a class tie within
  float32 rounding could then flip a pixel between the two modes.
  """
  post_processor = post_processing.PanopticDeepLabPostProcessor(**PP_ARGS)

  @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3],
                                              tf.uint8)])
  def run(images):
    raw = model(images, training=False)
    return raw, post_processor(raw)

  def reference(images):
    raw, out = run(tf.constant(images, tf.uint8))
    out = {k: v.numpy() for k, v in out.items()}
    out.update({k: v.numpy() for k, v in raw.items()})
    return out

  return reference


def test_fresh_process_matches_in_process_model_and_post_processing(
    exported):
  report, served = exported["report"], exported["served"]
  assert report["foreign_modules"] == []
  assert report["signatures"] == ["serve_image_bytes", "serve_tf_example",
                                  "serving_default"]
  reference = _reference_fn(exported["model"])
  for name, (batch, height, width) in CASES.items():
    images = exported["inputs"][f"case_{name}"]
    ref = reference(images)
    got = {k.split("/", 1)[1]: v for k, v in served.items()
           if k.startswith(f"case_{name}/")}
    assert got["panoptic_pred"].shape == (batch, height, width)
    for key in ("panoptic_pred", "semantic_pred", "instance_pred"):
      assert got[key].dtype == np.int32
      np.testing.assert_array_equal(got[key], ref[key], err_msg=key)
    np.testing.assert_array_equal(got["instance_centers"],
                                  ref["instance_centers"])
    np.testing.assert_allclose(got["instance_scores"], ref["instance_scores"],
                               atol=1e-5)
    logits = ref["semantic_logits"].astype(np.float64)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    np.testing.assert_allclose(got["semantic_probs"],
                               probs / probs.sum(-1, keepdims=True),
                               atol=1e-5)
    np.testing.assert_allclose(got["center_heatmap"], ref["center_heatmap"],
                               atol=1e-4)
    np.testing.assert_allclose(got["offset_map"], ref["offset_map"],
                               atol=1e-3)
    np.testing.assert_array_equal(got["image_size"],
                                  [[height, width]] * batch)
    # The comparison means something only with instances and stuff.
    panoptic = got["panoptic_pred"]
    assert np.any((panoptic // 256 >= 3) & (panoptic // 256 <= 4) &
                  (panoptic % 256 > 0)), name
    assert np.any(panoptic // 256 < 3), name


def test_wrong_inputs_give_clear_errors(exported):
  errors = exported["report"]["errors"]
  assert "uint8" in errors["float32"]
  for name, shape in (("rank3", "[8 8 3]"), ("channels4", "[1 8 8 4]")):
    assert "images must be uint8 [batch >= 1, height >= 1, width >= 1, 3]" in (
        errors[name]), errors[name]
    assert shape in errors[name], errors[name]


def test_saved_model_cli_lists_the_signatures(exported):
  cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
  if not os.path.exists(cli):
    cli = shutil.which("saved_model_cli")
  assert cli, "saved_model_cli not found"
  result = subprocess.run([cli, "show", "--dir", exported["export_dir"],
                           "--all"], capture_output=True, text=True,
                          timeout=600, env=_plain_env())
  assert result.returncode == 0, result.stderr[-2000:]
  text = result.stdout
  for signature, argument in (("serving_default", "images"),
                              ("serve_image_bytes", "encoded_images"),
                              ("serve_tf_example", "serialized_examples")):
    assert f"signature_def['{signature}']" in text
    assert f"inputs['{argument}']" in text
  for output in ("panoptic_pred", "semantic_pred", "instance_pred",
                 "semantic_probs", "center_heatmap", "offset_map",
                 "instance_scores", "image_size"):
    assert f"outputs['{output}']" in text
  assert "DT_UINT8" in text and "DT_STRING" in text


def test_export_description(exported):
  with open(os.path.join(exported["export_dir"], "assets.extra",
                         "axial_deeplab_serving.json")) as f:
    config = json.load(f)
  assert config["task"] == "panoptic"
  assert config["num_classes"] == 5
  assert config["thing_class_ids"] == [3, 4]
  assert config["label_divisor"] == 256
  assert config["post_processor"]["stuff_area_limit"] == 16
  assert config["model"]["model_name"] == MODEL


def test_usage_errors_exit_with_status_2(tmp_path):
  result = subprocess.run(
      [sys.executable, TOOL, f"--export_dir={tmp_path / 'x'}"],
      capture_output=True, text=True, cwd=REPO, timeout=300)
  assert result.returncode == 2
  assert "--model" in result.stderr and "--gin_file" in result.stderr
