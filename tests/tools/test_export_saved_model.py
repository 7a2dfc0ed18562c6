"""End-to-end: tools/export_saved_model.py on tiny models.

A tiny quickstart experiment (gin file + trainer-style checkpoint folder, as
scripts/quickstart.sh exports it) is loaded in a fresh Python process that
imports only TensorFlow; its outputs are compared with the in-process Keras
model and post-processor on the same images. A tiny SegNeXt zoo model is
exported in bfloat16 with multi-scale and flip inference.
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
from axial_deeplab_tf.serving import export_module as em
from tests.serving import serving_utils as su

CATEGORIES = [{"id": 10 + k, "name": f"class{k}", "isthing": int(k >= 3)}
              for k in range(5)]
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
    if m.split(".")[0] in ("axial_deeplab_tf", "official", "orbit", "gin",
                           "tf_keras"))
np.savez(outputs_path, **outputs)
with open(report_path, "w") as f:
  json.dump(report, f)
"""


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


def _reference(model, post_processor, inputs):
  """The Keras model and the post-processor, run in this process.

  Both run inside one tf.function: the SavedModel's functions are graphs
  too, and graph execution may fuse kernels (e.g. conv + bias + relu) that
  round differently from op-by-op eager execution; a class tie within
  float32 rounding could then flip a pixel between the two modes.
  """

  @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3],
                                              tf.uint8)])
  def run(images):
    raw = model(images, training=False)
    return raw, post_processor(raw)

  result = {}
  for name, images in inputs.items():
    raw, out = run(tf.constant(images))
    result[name] = {k: v.numpy() for k, v in list(raw.items()) +
                    list(out.items())}
  return result


def _saved_model_cli():
  cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
  if not os.path.exists(cli):
    cli = shutil.which("saved_model_cli")
  assert cli, "saved_model_cli not found"
  return cli


def _check_outputs_match_the_reference(served, reference):
  """Exact id maps on batch > 1 and odd sizes; floats to rounding."""
  for name, (batch, height, width) in CASES.items():
    got, ref = served[name], reference[name]
    assert got["panoptic_pred"].shape == (batch, height, width)
    for key in ("panoptic_pred", "semantic_pred", "instance_pred"):
      assert got[key].dtype == np.int32
      np.testing.assert_array_equal(got[key], ref[key], err_msg=key)
    np.testing.assert_array_equal(got["instance_centers"],
                                  ref["instance_centers"])
    np.testing.assert_allclose(got["instance_scores"], ref["instance_scores"],
                               atol=1e-5)
    np.testing.assert_allclose(got["semantic_probs"],
                               su.softmax(ref["semantic_logits"]), atol=1e-5)
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


def _check_input_errors(errors):
  assert "uint8" in errors["float32"]
  for name, shape in (("rank3", "[8 8 3]"), ("channels4", "[1 8 8 4]")):
    assert "images must be uint8 [batch >= 1, height >= 1, width >= 1, 3]" in (
        errors[name]), errors[name]
    assert shape in errors[name], errors[name]


def _check_saved_model_cli(text):
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


@pytest.mark.slow
def test_exported_experiment_in_a_plain_tensorflow_process(tmp_path):
  # One export serves all the checks below: under pytest-xdist the tests
  # of a module go to different workers, so separate tests sharing a
  # fixture would export twice or leave a worker waiting.
  (tmp_path / "data").mkdir()
  gin_params = su.tiny_experiment(tmp_path / "data", CATEGORIES, [
      "post_processing.stuff_area_limit = 16"])
  loaded = em.load_model(gin_files=[su.QUICKSTART_GIN], gin_params=gin_params)
  model, post_processor = loaded.model, loaded.post_processor
  rng = np.random.default_rng(0)
  inputs = {name: su.scenes(rng, b, h, w, rectangles=8, min_size=8, noise=6)
            for name, (b, h, w) in CASES.items()}
  _calibrate_heads(model, inputs["batch2"])
  # The trainer's layout: a model_dir whose checkpoints hold model= and
  # more (the step, the optimizer).
  manager = tf.train.CheckpointManager(
      tf.train.Checkpoint(model=model, global_step=tf.Variable(250)),
      str(tmp_path / "model_dir"), max_to_keep=2)
  checkpoint = manager.save()
  export_dir = str(tmp_path / "saved_model")
  result = su.run_tool("export_saved_model", [
      f"--gin_file={su.QUICKSTART_GIN}"] + [
          f"--gin_param={p}" for p in gin_params] + [
              f"--checkpoint_path={tmp_path / 'model_dir'}",
              f"--export_dir={export_dir}"])
  assert result.returncode == 0, result.stderr[-3000:]
  assert json.loads(result.stdout.strip().splitlines()[-1]) == {
      "export_dir": export_dir, "task": "panoptic",
      "signatures": ["serve_image_bytes", "serve_tf_example",
                     "serving_default"]}

  # A service that imports only TensorFlow, and saved_model_cli, run while
  # this process computes the reference.
  np.savez(tmp_path / "inputs.npz", **inputs)
  serve = subprocess.Popen(
      [sys.executable, "-I", "-c", SERVE_SCRIPT, export_dir,
       str(tmp_path / "inputs.npz"), str(tmp_path / "served.npz"),
       str(tmp_path / "report.json")],
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
      cwd=str(tmp_path), env=su.plain_env())
  show = subprocess.Popen([_saved_model_cli(), "show", "--dir", export_dir,
                           "--all"], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True,
                          env=su.plain_env())
  reference = _reference(model, post_processor, inputs)
  _, serve_err = serve.communicate(timeout=900)
  assert serve.returncode == 0, serve_err[-3000:]
  show_out, show_err = show.communicate(timeout=900)
  assert show.returncode == 0, show_err[-3000:]

  report = json.loads((tmp_path / "report.json").read_text())
  assert report["foreign_modules"] == []
  assert report["signatures"] == ["serve_image_bytes", "serve_tf_example",
                                  "serving_default"]
  served = {}
  for key, value in np.load(tmp_path / "served.npz").items():
    name, output = key.split("/", 1)
    served.setdefault(name, {})[output] = value
  _check_outputs_match_the_reference(served, reference)
  _check_input_errors(report["errors"])
  _check_saved_model_cli(show_out)

  config = em.read_serving_config(export_dir)
  assert config["task"] == "panoptic"
  assert config["num_classes"] == 5
  assert config["thing_class_ids"] == [3, 4]
  assert config["label_divisor"] == 256
  assert config["post_processor"]["stuff_area_limit"] == 16
  assert config["post_processor"]["nms_kernel"] == 7  # The gin file's.
  assert config["model"]["model_name"] == su.TINY_AXIAL_DEEPLAB
  assert config["checkpoint_path"] == checkpoint
  assert config["dataset"]["original_category_ids"] == [10, 11, 12, 13, 14]


SEGNEXT_OVERRIDES = {"num_classes": 4, "embed_dims": (8, 16, 24, 32),
                     "depths": (1, 1, 1, 1), "head_channels": 16,
                     "ham_channels": 16, "md_r": 4, "norm_groups": 4,
                     "nmf_seed": 0}


@pytest.mark.slow
def test_semantic_model_in_bfloat16_with_multi_scale_and_flip(tmp_path):
  with em.compute_dtype_scope("bfloat16"):
    model = models.build("segnext_t", **SEGNEXT_OVERRIDES)
  images = su.scenes(np.random.default_rng(3), 2, 37, 53)
  # Logits of the random model are ~1e-2: scaled up, the classes differ.
  logits = model(images, training=False)["semantic_logits"].numpy()
  classifier = model.decode_head.classifier
  classifier.kernel.assign(classifier.kernel * (2.0 / logits.std()))
  prefix = tf.train.Checkpoint(model=model).write(str(tmp_path / "ckpt"))
  export_dir = str(tmp_path / "export")
  result = su.run_tool("export_saved_model", [
      "--model=segnext_t", f"--checkpoint_path={prefix}",
      f"--export_dir={export_dir}", "--dtype=bfloat16", "--scales=0.5,1.0",
      "--flip", "--signatures=image_tensor"] + su.set_flags(
          SEGNEXT_OVERRIDES))
  assert result.returncode == 0, result.stderr[-3000:]
  config = em.read_serving_config(export_dir)
  assert config["params"]["dtype"] == "bfloat16"
  assert (config["params"]["scales"], config["params"]["flip"]) == (
      [0.5, 1.0], True)
  assert config["outputs"] == ["semantic_pred", "semantic_probs",
                               "image_size"]

  out = tf.saved_model.load(export_dir).signatures["serving_default"](
      images=tf.constant(images))
  # Reference: every pass by hand, numpy-side flips, softmax and mean.
  probs = []
  for scale in (0.5, 1.0):
    size = (round(37 * scale), round(53 * scale))
    scaled = tf.cast(tf.round(tf.image.resize(images, size)),
                     tf.uint8).numpy()
    for flip in (False, True):
      x = scaled[:, :, ::-1] if flip else scaled
      logits = tf.cast(model(x, training=False)["semantic_logits"],
                       tf.float32).numpy()
      if flip:
        logits = logits[:, :, ::-1]
      probs.append(su.softmax(tf.image.resize(logits, (37, 53)).numpy()))
  want = np.mean(probs, axis=0)
  got = out["semantic_probs"].numpy()
  assert got.dtype == np.float32 and got.shape == (2, 37, 53, 4)
  # bfloat16 keeps 8 bits of mantissa: graph and eager round differently.
  np.testing.assert_allclose(got, want, atol=2e-2)
  assert np.ptp(want) > 0.1  # The probabilities are not all alike.
  np.testing.assert_array_equal(out["semantic_pred"].numpy(),
                                got.argmax(-1))


def test_usage_errors_exit_with_status_2(tmp_path):
  su.assert_usage_error("export_saved_model",
                        [f"--export_dir={tmp_path / 'x'}"], "--model",
                        "--gin_file")
  su.assert_usage_error("export_saved_model", [
      "--model=axial_deeplab_s", f"--export_dir={tmp_path / 'x'}",
      "--scales=1.0,big"], "--scales must be numbers")
