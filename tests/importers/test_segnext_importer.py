"""SegNeXt importer: official (mmseg) state dicts -> our segnext_* models.

References are the official MSCAN + LightHamHead logits recorded by
scripts/fixtures/make_segnext_isanet_fixtures.py with the same weights and
NMF initial bases.
"""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from axial_deeplab_tf import models
from axial_deeplab_tf.importers import _torch_state
from axial_deeplab_tf.importers import segnext as segnext_importer
from axial_deeplab_tf.tasks import experiment
from tests.importers import fixture_utils

TOOL = os.path.join(fixture_utils.ROOT, "tools",
                    "import_segnext_checkpoint.py")


def _logits(model, arrays):
  bases = tf.constant(arrays["nmf_bases"])
  model.decode_head.hamburger.nmf.sample_bases = lambda batch: bases
  return model(tf.constant(arrays["image"]),
               training=False)["semantic_logits"].numpy()


def _run_tool(*args):
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  env["PYTHONPATH"] = fixture_utils.ROOT
  env["TF_CPP_MIN_LOG_LEVEL"] = "2"
  return subprocess.run([sys.executable, TOOL, *args], capture_output=True,
                        text=True, env=env, timeout=300, check=False)


@pytest.mark.slow
def test_tool_imports_segnext_t_ade20k_and_matches_official(tmp_path):
  config, arrays = fixture_utils.load("segnext_t_ade20k")
  pth = fixture_utils.save_published(config, str(tmp_path / "official.pth"))
  out = tmp_path / "imported"
  result = _run_tool("--model=segnext_t", "--dataset=ade20k",
                     f"--checkpoint={pth}", f"--output_dir={out}")
  assert result.returncode == 0, result.stderr
  summary = result.stdout.strip().splitlines()[-1]
  counters = sum(1 for n, _, _ in config["entries"]
                 if n.endswith("num_batches_tracked"))
  assert summary.startswith(
      f"imported segnext_t (ade20k): {550 - counters} tensors consumed, "
      f"{counters} ignored ({counters} BN step counters")
  assert sorted(os.listdir(out)) == ["checkpoint", "ckpt-1.data-00000-of-00001",
                                     "ckpt-1.index", "model.gin"]
  # The gin file names the model, its overrides and the checkpoint.
  parsed = experiment.parse_experiment([str(out / "model.gin")])
  assert parsed.task.model.name == "segnext_t"
  overrides = dict(parsed.task.model.overrides.as_dict())
  assert overrides["md_r"] == 16 and overrides["head_channels"] == 256
  assert parsed.task.init_checkpoint == str(out / "ckpt-1")
  model = models.build("segnext_t", num_classes=150, **overrides)
  tf.train.Checkpoint(model=model).read(
      parsed.task.init_checkpoint).assert_existing_objects_matched()
  ours = _logits(model, arrays)
  assert ours.shape == arrays["logits"].shape
  assert fixture_utils.relative_error(ours, arrays["logits"]) < 2e-4


@pytest.mark.parametrize("name", [
    "segnext_s_cityscapes",
    pytest.param("segnext_b_cityscapes", marks=pytest.mark.slow),
    pytest.param("segnext_l_cityscapes", marks=pytest.mark.slow),
])
def test_import_matches_official(name, tmp_path):
  config, arrays = fixture_utils.load(name)
  pth = fixture_utils.save_published(config, str(tmp_path / "official.pth"))
  model, summary = segnext_importer.import_checkpoint(
      config["model"], config["dataset"], pth, str(tmp_path / "out"),
      report=lambda line: None)
  n_counters = sum(1 for n, _, _ in config["entries"]
                   if n.endswith("num_batches_tracked"))
  assert f"{len(config['entries']) - n_counters} tensors consumed" in summary
  assert f"{len(model.variables)}/{len(model.variables)} variables" in summary
  error = fixture_utils.relative_error(_logits(model, arrays),
                                       arrays["logits"])
  assert error < 2e-4, error


@pytest.fixture(name="tiny_state")
def _tiny_state():
  config, _ = fixture_utils.load("segnext_t_ade20k")
  return config, fixture_utils.state_dict(config)


def _expect_error(tmp_path, config, state, message, **kwargs):
  pth = fixture_utils.save_published(config, str(tmp_path / "bad.pth"),
                                     state=state)
  out = tmp_path / "out"
  with pytest.raises(_torch_state.CheckpointImportError, match=message):
    segnext_importer.import_checkpoint(
        kwargs.get("model", "segnext_t"), kwargs.get("dataset", "ade20k"),
        pth, str(out), report=lambda line: None)
  assert not out.exists()
  assert [p for p in os.listdir(tmp_path) if p.startswith(".tmp")] == []


def test_missing_tensor_is_named(tmp_path, tiny_state):
  config, state = tiny_state
  del state["backbone.block2.1.attn.proj_2.bias"]
  _expect_error(tmp_path, config, state,
                r"no tensor 'backbone\.block2\.1\.attn\.proj_2\.bias'")


def test_extra_tensor_is_named(tmp_path, tiny_state):
  config, state = tiny_state
  state["decode_head.extra.weight"] = np.zeros([3], np.float32)
  _expect_error(tmp_path, config, state,
                r"1 SegNeXt checkpoint tensor\(s\) not consumed: "
                r"'decode_head\.extra\.weight'")


def test_shape_mismatch_names_both_sides(tmp_path, tiny_state):
  config, state = tiny_state
  # A Cityscapes head given as ADE20K: 19 classes instead of 150.
  state["decode_head.conv_seg.weight"] = np.zeros([19, 256, 1, 1], np.float32)
  state["decode_head.conv_seg.bias"] = np.zeros([19], np.float32)
  _expect_error(tmp_path, config, state,
                r"'decode_head\.conv_seg\.weight' gives \[1, 1, 256, 19\] but "
                r"model variable 'light_ham_head/classifier/kernel:0' is "
                r"\[1, 1, 256, 150\]")


def test_wrong_variant_is_refused(tmp_path, tiny_state):
  config, state = tiny_state
  _expect_error(tmp_path, config, state, r"pick the matching --model",
                model="segnext_s")


def test_tool_user_errors_are_one_line_exit_2(tmp_path):
  out = tmp_path / "out"
  result = _run_tool("--model=segnext_t", "--dataset=ade20k",
                     f"--checkpoint={tmp_path / 'missing.pth'}",
                     f"--output_dir={out}")
  assert result.returncode == 2
  assert result.stderr.strip().splitlines() == [
      f"error: checkpoint file not found: {tmp_path / 'missing.pth'}"]
  assert not out.exists()
  result = _run_tool("--model=segnext_x", "--dataset=ade20k",
                     "--checkpoint=x", f"--output_dir={out}")
  assert result.returncode == 2
  assert len(result.stderr.strip().splitlines()) == 1
  assert result.stderr.startswith("error: argument --model")
  # A folder with content is never written into.
  out.mkdir()
  (out / "keep.txt").write_text("mine")
  pth = tmp_path / "junk.pth"
  pth.write_bytes(b"not a checkpoint")
  result = _run_tool("--model=segnext_t", "--dataset=cityscapes",
                     f"--checkpoint={pth}", f"--output_dir={out}")
  assert result.returncode == 2
  assert "exists and is not an empty folder" in result.stderr
  assert os.listdir(out) == ["keep.txt"]
