"""ISANet importer: openseg state dicts -> our isanet_* models.

References are the openseg ISANet-R50 logits (and auxiliary logits) recorded
by scripts/fixtures/make_segnext_isanet_fixtures.py with the same weights
(in-place ABN scales of both signs, non-trivial BN statistics).
"""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from axial_deeplab_tf import models
from axial_deeplab_tf.importers import _torch_state
from axial_deeplab_tf.importers import isanet as isanet_importer
from axial_deeplab_tf.tasks import experiment
from tests.importers import fixture_utils

TOOL = os.path.join(fixture_utils.ROOT, "tools", "import_isanet_checkpoint.py")
CAFFE_BGR_MEAN = np.array([102.9801, 115.9465, 122.7717], np.float32)


def _run_tool(*args):
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  env["PYTHONPATH"] = fixture_utils.ROOT
  env["TF_CPP_MIN_LOG_LEVEL"] = "2"
  return subprocess.run([sys.executable, TOOL, *args], capture_output=True,
                        text=True, env=env, timeout=600, check=False)


@pytest.mark.slow
def test_tool_imports_isanet_r50_and_matches_openseg(tmp_path):
  config, arrays = fixture_utils.load("isanet_r50_cityscapes")
  pth = fixture_utils.save_published(config, str(tmp_path / "official.pth"))
  out = tmp_path / "imported"
  result = _run_tool("--model=isanet_r50", "--dataset=cityscapes",
                     f"--checkpoint={pth}", f"--output_dir={out}")
  assert result.returncode == 0, result.stderr
  assert ("346 tensors consumed, 0 ignored (none), 346/346 variables set"
          in result.stdout)
  parsed = experiment.parse_experiment([str(out / "model.gin")])
  overrides = dict(parsed.task.model.overrides.as_dict())
  assert overrides["activation"] == "leaky_relu"
  assert overrides["align_corners"] is True
  model = models.build("isanet_r50", num_classes=19, **overrides)
  tf.train.Checkpoint(model=model).read(
      parsed.task.init_checkpoint).assert_existing_objects_matched()
  image = tf.constant(arrays["image"])
  logits = model(image, training=False)["semantic_logits"].numpy()
  assert fixture_utils.relative_error(logits, arrays["logits"]) < 2e-4
  # The auxiliary (dsn) head, run on stage 3 as openseg does at inference.
  features = model.backbone(arrays["image"][..., ::-1] - CAFFE_BGR_MEAN,
                            training=False)
  aux = model.upsample(model.auxiliary_head(features["c4"], training=False),
                       arrays["image"].shape[1:3]).numpy()
  assert fixture_utils.relative_error(aux, arrays["aux_logits"]) < 2e-4
  # Each openseg option matters: without it the logits move far off.
  weights = {v.name: v.numpy() for v in model.variables}
  for name, value in (("align_corners", False), ("ceil_mode_max_pool", False),
                      ("symmetric_padding", False),
                      ("dilation_pattern", "uniform"),
                      ("activation", "relu"),
                      ("input_normalization", "imagenet_rgb")):
    variant = models.build("isanet_r50", num_classes=19,
                           **dict(overrides, **{name: value}))
    for var in variant.variables:
      var.assign(weights[var.name])
    logits = variant(image, training=False)["semantic_logits"].numpy()
    assert fixture_utils.relative_error(logits, arrays["logits"]) > 1e-2, name


def test_wrong_depth_and_missing_output_dir_are_user_errors(tmp_path):
  config, _ = fixture_utils.load("isanet_r50_cityscapes")
  names = [n for n, _, _ in config["entries"]]
  # A state dict with 23 blocks in layer3 is a ResNet-101 ISANet.
  state = {f"backbone.layer3.{i}.conv1.weight": np.zeros([1], np.float32)
           for i in range(23)}
  assert isanet_importer.detect_depth(state) == 101
  assert isanet_importer.detect_depth(dict.fromkeys(names)) == 50
  pth = tmp_path / "r101.pth"
  import torch  # pylint: disable=g-import-not-at-top
  torch.save({"state_dict": {"module." + k: torch.zeros(1)
                             for k in state}}, str(pth))
  out = tmp_path / "out"
  with pytest.raises(_torch_state.CheckpointImportError,
                     match="ResNet-101 ISANet; use --model=isanet_r101"):
    isanet_importer.import_checkpoint("isanet_r50", "cityscapes", str(pth),
                                      str(out), report=lambda line: None)
  assert not out.exists()
  result = _run_tool("--model=isanet_r50", "--dataset=cityscapes",
                     f"--checkpoint={pth}", f"--output_dir={out}")
  assert result.returncode == 2
  assert result.stderr.strip().splitlines() == [
      "error: the checkpoint holds a ResNet-101 ISANet; use "
      "--model=isanet_r101 instead of isanet_r50."]
  assert not out.exists()
