"""deeplab2 checkpoints -> zoo models: outputs and panoptic maps as deeplab2.

The fixtures (scripts/fixtures/make_deeplab2_fixtures.py) are checkpoints
of deeplab2's own models with reduced widths and random weights, saved as
its trainer saves them, with deeplab2's outputs and post-processed maps at
two input sizes. Each test imports one family with the tool's `main` and
compares.
"""

import io
import json
import os
import subprocess
import sys
import tarfile

from absl import flags
import numpy as np
import pytest
import tensorflow as tf

from axial_deeplab_tf.importers import deeplab2 as importer
from axial_deeplab_tf.modeling import registry
from axial_deeplab_tf.ops.post_processing import PanopticDeepLabPostProcessor

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "deeplab2")

# Fixture -> (zoo model, builder overrides beyond the reduced widths).
MODELS = {
    "resnet50_os32": ("deeplab2_panoptic_resnet50_os32", {}),
    "resnet50_beta_os16_1x1": (
        "deeplab2_panoptic_resnet50_beta_os32",
        {"output_stride": 16, "atrous_rates": [6, 12, 18],
         "aspp_use_only_1x1_proj_conv": True}),
    "wide_resnet41_os16": ("deeplab2_panoptic_wide_resnet41_os16", {}),
    "swidernet_sac_os16": ("deeplab2_panoptic_swidernet_sac_1_1_1_os16",
                           {"use_sac_beyond_stride": 16,
                            "layer_multiplier": 0.5}),
    "axial_swidernet_os16": ("deeplab2_axial_swidernet_1_1_1_os16",
                             {"layer_multiplier": 0.5}),
    "max_deeplab_s_backbone_os16": ("deeplab2_max_deeplab_s_backbone_os16",
                                    {"layer_multiplier": 0.5}),
    "max_deeplab_l_backbone_os16": ("deeplab2_max_deeplab_l_backbone_os16",
                                    {"layer_multiplier": 0.5}),
    "imagenet_max_deeplab_l_backbone": (
        "deeplab2_max_deeplab_l_backbone_imagenet",
        {"backbone_layer_multiplier": 0.5}),
    "coco_resnet50_beta_os32": ("deeplab2_panoptic_coco_resnet50_beta_os32",
                                {}),
    "imagenet_swidernet_sac": ("deeplab2_swidernet_sac_1_1_1_imagenet",
                               {"backbone_layer_multiplier": 0.5}),
}


def _spec(fixture):
  with open(os.path.join(FIXTURES, fixture, "spec.json")) as f:
    return json.load(f)


def _overrides(fixture):
  spec = _spec(fixture)
  name, extra = MODELS[fixture]
  overrides = {"width_multiplier": spec["width_multiplier"],
               "stem_width_multiplier": spec["stem_width_multiplier"]}
  if "decoder" in spec:
    d = spec["decoder"]
    overrides.update(
        aspp_channels=d["aspp"], semantic_decoder_channels=d["semantic"],
        instance_decoder_channels=d["instance"],
        semantic_low_channels=list(d["low"]),
        instance_low_channels=list(d["instance_low"]),
        semantic_head_channels=d["semantic_head"],
        instance_head_channels=d["instance_head"])
  overrides.update(extra)
  return name, overrides


def _run_tool(args):
  values = flags.FlagValues()
  importer.define_flags(values)
  values(["tool"] + args)
  err = io.StringIO()
  old = sys.stderr
  sys.stderr = err
  try:
    status = importer.main(["tool"], values)
  finally:
    sys.stderr = old
  return status, err.getvalue()


def _import(fixture, tmp_path, checkpoint=None):
  name, overrides = _overrides(fixture)
  out = str(tmp_path / "imported")
  args = [f"--model={name}", f"--output_dir={out}",
          "--checkpoint=" + (checkpoint or os.path.join(FIXTURES, fixture))]
  args += [f"--override={k}={json.dumps(v)}" for k, v in overrides.items()]
  status, err = _run_tool(args)
  assert status == 0, err
  model = registry.build(name, **overrides)
  tf.train.Checkpoint(model=model).read(
      tf.train.latest_checkpoint(out)).assert_existing_objects_matched()
  return model, out


def _close(ours, ref):
  scale = float(np.abs(ref).max())
  diff = float(np.abs(ours - ref).max())
  assert diff <= 1e-4 * scale, (diff, scale)


def _check_panoptic(fixture, tmp_path, checkpoint=None):
  model, _ = _import(fixture, tmp_path, checkpoint)
  spec = _spec(fixture)
  ref = np.load(os.path.join(FIXTURES, fixture, "reference.npz"))
  for h, w in spec["sizes"]:
    tag = f"{h}x{w}"
    out = model(tf.constant(ref[f"images_{tag}"], tf.float32),
                training=False)
    for key in ("semantic_logits", "center_heatmap", "offset_map"):
      _close(out[key].numpy(), ref[f"{key}_{tag}"])
    pp = spec[f"post_processing_{tag}"]
    post = PanopticDeepLabPostProcessor(
        thing_class_ids=pp["thing_class_ids"], num_classes=19,
        label_divisor=pp["label_divisor"], ignore_label=pp["void_label"],
        center_threshold=pp["center_threshold"], nms_kernel=pp["nms_kernel"],
        keep_k_centers=pp["keep_k_centers"],
        stuff_area_limit=pp["stuff_area_limit"], deeplab2_rules=True)
    maps = post(out)
    np.testing.assert_array_equal(maps["semantic_pred"].numpy(),
                                  ref[f"semantic_{tag}"])
    np.testing.assert_array_equal(maps["instance_pred"].numpy(),
                                  ref[f"instance_{tag}"])
    np.testing.assert_array_equal(maps["panoptic_pred"].numpy(),
                                  ref[f"panoptic_{tag}"])


def test_resnet50_os32_from_published_tar_gz(tmp_path):
  # The published form: a .tar.gz holding a folder with the checkpoint.
  archive = str(tmp_path / "resnet50_os32.tar.gz")
  folder = os.path.join(FIXTURES, "resnet50_os32")
  with tarfile.open(archive, "w:gz") as t:
    for name in os.listdir(folder):
      if name.startswith("ckpt"):
        t.add(os.path.join(folder, name), arcname=f"resnet50_os32/{name}")
  _check_panoptic("resnet50_os32", tmp_path, archive)


def test_resnet50_beta_os16_1x1_aspp_with_optimizer_slots(tmp_path):
  _check_panoptic("resnet50_beta_os16_1x1", tmp_path)


def test_wide_resnet41_os16(tmp_path):
  _check_panoptic("wide_resnet41_os16", tmp_path)


def test_swidernet_sac_os16(tmp_path):
  _check_panoptic("swidernet_sac_os16", tmp_path)


def test_axial_swidernet_os16(tmp_path):
  _check_panoptic("axial_swidernet_os16", tmp_path)


def test_max_deeplab_s_backbone_os16(tmp_path):
  _check_panoptic("max_deeplab_s_backbone_os16", tmp_path)


@pytest.mark.slow
@pytest.mark.slow  # About a minute on a loaded 2-core machine.
def test_max_deeplab_l_backbone_os16(tmp_path):
  # Every variable of the backbone's stacked decoder is consumed although
  # Panoptic-DeepLab reads res5.
  _check_panoptic("max_deeplab_l_backbone_os16", tmp_path)


@pytest.mark.slow
def test_max_deeplab_l_backbone_encoder_stacked_decoder(tmp_path):
  fixture = "imagenet_max_deeplab_l_backbone"
  model, _ = _import(fixture, tmp_path)
  spec = _spec(fixture)
  ref = np.load(os.path.join(FIXTURES, fixture, "reference.npz"))
  for h, w in spec["sizes"]:
    tag = f"{h}x{w}"
    images = tf.constant(ref[f"images_{tag}"], tf.float32)
    endpoints = model.backbone(images / 127.5 - 1.0, training=False)
    _close(endpoints["backbone_output"].numpy(),
           ref[f"backbone_output_{tag}"])
    _close(endpoints["res3"].numpy(), ref[f"res3_{tag}"])


def test_export_for_predict(tmp_path):
  fixture = "resnet50_os32"
  name, overrides = _overrides(fixture)
  out = tmp_path / "imported"
  args = [f"--model={name}", f"--output_dir={out}", "--export",
          "--checkpoint=" + os.path.join(FIXTURES, fixture)]
  args += [f"--override={k}={json.dumps(v)}" for k, v in overrides.items()]
  status, err = _run_tool(args)
  assert status == 0, err
  served = tf.saved_model.load(str(out / "saved_model"))
  ref = np.load(os.path.join(FIXTURES, fixture, "reference.npz"))
  tag = "x".join(map(str, _spec(fixture)["sizes"][0]))
  result = served.signatures["serving_default"](
      tf.constant(ref[f"images_{tag}"]))
  # deeplab2's argmax class (its post-processing settings differ from the
  # Cityscapes ones the export carries, so compare the semantic map).
  np.testing.assert_array_equal(result["semantic_pred"].numpy(),
                                ref[f"semantic_{tag}"])


def test_coco_void_class_dropped(tmp_path):
  fixture = "coco_resnet50_beta_os32"
  model, _ = _import(fixture, tmp_path)
  spec = _spec(fixture)
  ref = np.load(os.path.join(FIXTURES, fixture, "reference.npz"))
  for h, w in spec["sizes"]:
    tag = f"{h}x{w}"
    out = model(tf.constant(ref[f"images_{tag}"], tf.float32),
                training=False)
    # deeplab2's class c is class c - 1 here; its void class 0 is dropped.
    _close(out["semantic_logits"].numpy(),
           ref[f"semantic_logits_{tag}"][..., 1:])
    for key in ("center_heatmap", "offset_map"):
      _close(out[key].numpy(), ref[f"{key}_{tag}"])


def test_imagenet_encoder_import_and_finetune_gin(tmp_path):
  fixture = "imagenet_swidernet_sac"
  model, out = _import(fixture, tmp_path)
  spec = _spec(fixture)
  ref = np.load(os.path.join(FIXTURES, fixture, "reference.npz"))
  for h, w in spec["sizes"]:
    tag = f"{h}x{w}"
    images = tf.constant(ref[f"images_{tag}"], tf.float32)
    endpoints = model.backbone(images / 127.5 - 1.0, training=False)
    _close(endpoints["backbone_output"].numpy(),
           ref[f"backbone_output_{tag}"])
    _close(endpoints["res3"].numpy(), ref[f"res3_{tag}"])
  with open(os.path.join(out, "experiment.gin")) as f:
    gin_text = f.read()
  assert "deeplab2_panoptic_swidernet_sac_1_1_1_os16.gin" in gin_text
  assert "init_checkpoint_modules = 'backbone'" in gin_text


def test_imported_gin_parses_with_evaluation_settings(tmp_path):
  from axial_deeplab_tf.tasks import experiment  # pylint: disable=g-import-not-at-top
  _, out = _import("resnet50_os32", tmp_path)
  config = experiment.parse_experiment([os.path.join(out, "experiment.gin")])
  task = config.task
  assert task.model.name == "deeplab2_panoptic_resnet50_os32"
  assert task.model.overrides.as_dict()["width_multiplier"] == 0.0625
  assert list(task.validation_data.crop_size) == [1025, 2049]
  p = task.post_processor
  assert (p.nms_kernel, p.keep_k_centers, p.stuff_area_limit,
          p.center_threshold, p.deeplab2_rules) == (13, 400, 2048, 0.1, True)
  assert task.init_checkpoint == out
  assert task.init_checkpoint_modules == "all"


def _corrupt_copy(tmp_path, fixture, truncate):
  src = os.path.join(FIXTURES, fixture)
  dst = tmp_path / "bad"
  dst.mkdir()
  for name in os.listdir(src):
    if name.startswith("ckpt"):
      data = open(os.path.join(src, name), "rb").read()
      if truncate in name:
        data = data[:len(data) // 2]
      (dst / name).write_bytes(data)
  return str(dst)


@pytest.mark.parametrize("case", ["truncated_data", "truncated_index",
                                  "wrong_family", "wrong_shape"])
def test_bad_checkpoints_one_error_line_and_no_output(tmp_path, case):
  fixture, model = "resnet50_os32", None
  checkpoint = os.path.join(FIXTURES, fixture)
  name, overrides = _overrides(fixture)
  if case == "truncated_data":
    checkpoint = _corrupt_copy(tmp_path, fixture, ".data")
  elif case == "truncated_index":
    checkpoint = _corrupt_copy(tmp_path, fixture, ".index")
  elif case == "wrong_family":
    model = "deeplab2_panoptic_wide_resnet41_os16"
  else:
    overrides["semantic_head_channels"] = 12
  out = tmp_path / "out"
  args = [f"--model={model or name}", f"--checkpoint={checkpoint}",
          f"--output_dir={out}"]
  args += [f"--override={k}={json.dumps(v)}" for k, v in overrides.items()]
  status, err = _run_tool(args)
  assert status == 2
  lines = err.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), err
  if case == "wrong_shape":
    assert "semantic_head_without_last_layer" in lines[0]
    assert "semantic_head/conv_block" in lines[0]
  if case == "wrong_family":
    assert "does not match" in lines[0]
  assert not out.exists()
  assert not [p for p in os.listdir(tmp_path) if p.startswith(".deeplab2")]


def test_tool_subprocess_usage_error(tmp_path):
  result = subprocess.run(
      [sys.executable, os.path.join(ROOT, "tools",
                                    "import_deeplab2_checkpoint.py"),
       "--model=nope", f"--checkpoint={tmp_path}",
       f"--output_dir={tmp_path / 'out'}"],
      capture_output=True, text=True, timeout=120,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
  assert result.returncode == 2
  errors = [l for l in result.stderr.splitlines() if l.startswith("error:")]
  assert len(errors) == 1 and "nope" in errors[0]
  assert not (tmp_path / "out").exists()
