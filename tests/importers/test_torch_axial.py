"""Importing PyTorch Axial-DeepLab reference state dicts.

Fixtures (scripts/fixtures/make_torch_axial_fixtures.py, run on the
reference): seeded parameter recipes, batch-norm running statistics from
training passes and the reference's logits for axial26s / axial50s at
224x224, 225x225 and 320x320. The test rebuilds each state dict with numpy,
saves it as a real .pth, runs the import tool and compares logits.
"""

import json
import os

import numpy as np
import pytest
import tensorflow as tf
import torch

from axial_deeplab_tf.importers import common
from axial_deeplab_tf.importers import torch_axial
from scripts.fixtures import make_torch_axial_fixtures as fixtures

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(__file__)),
                        "fixtures", "torch_axial")


def _state_dict(key):
  """The reference state dict of fixture `key`, in the reference's order."""
  with open(os.path.join(FIXTURES, f"{key}.json")) as f:
    info = json.load(f)
  arrays = np.load(os.path.join(FIXTURES, f"{key}.npz"))
  values = fixtures.synthetic_parameters(info["recipe"], info["seed"])
  for name in info["buffers"]:
    values[name] = arrays[name]
  for name, numel in info["flatten_index"].items():
    # The reference's table index buffer: (key - query) + L - 1 per pair.
    length = int(round(numel ** 0.5))
    pos = np.arange(length)
    values[name] = (pos[:, None] - pos[None, :] + length - 1).reshape(-1)
  state = {n: torch.from_numpy(np.ascontiguousarray(values[n]))
           for n in info["state_dict_order"]}
  return state, arrays["logits"], info


def _relative_error(got, expected):
  return float(np.linalg.norm(got - expected) / np.linalg.norm(expected))


CASES = [(arch, size) for arch in fixtures.ARCHS for size in fixtures.SIZES]


@pytest.mark.parametrize("arch,size", [
    pytest.param(a, s, marks=pytest.mark.slow) if a == "axial50s" or s == 320
    else (a, s) for a, s in CASES])
def test_imported_logits_match_reference(arch, size, tmp_path):
  key = fixtures.fixture_key(arch, size)
  state, expected, info = _state_dict(key)
  layouts = {224: state, 225: {"state_dict": state},
             320: {"state_dict": {"module." + k: v for k, v in state.items()}}}
  path = str(tmp_path / "reference.pth")
  torch.save(layouts[size], path)
  output_dir = str(tmp_path / "imported")
  assert torch_axial.main([f"--model={info['model']}", f"--checkpoint={path}",
                           f"--output_dir={output_dir}",
                           f"--input_size={size}"]) == 0
  model = common.load_imported(output_dir)
  images = fixtures.input_images(info["seed"], size)  # Normalised NCHW.
  pixels = (np.transpose(images, (0, 2, 3, 1)) *
            np.array(torch_axial.INPUT_STD, np.float32) +
            np.array(torch_axial.INPUT_MEAN, np.float32))
  got = model(tf.constant(pixels), training=False)["logits"].numpy()
  error = _relative_error(got, expected)
  print(f"{key}: relative error {error:.2e}")
  assert error < 1e-3
  np.testing.assert_array_equal(got.argmax(-1), expected.argmax(-1))


def test_qkv_order_interleaves_heads():
  # Head h of the reference holds [q (2), k (2), v (4)] at 8h..8h+7.
  order = torch_axial.qkv_source_order(num_heads=2, key_head=2, value_head=4)
  np.testing.assert_array_equal(
      order, [0, 1, 8, 9, 2, 3, 10, 11, 4, 5, 6, 7, 12, 13, 14, 15])


def _small_state_dict():
  state, _, _ = _state_dict(fixtures.fixture_key("axial26s", 224))
  return state


def test_errors_name_both_sides_and_write_nothing(tmp_path, capsys):
  state = dict(_small_state_dict())
  bad = dict(state)
  bad["layer1.0.conv_up.weight"] = bad["layer1.0.conv_up.weight"][:, :-1]
  torch.save(bad, str(tmp_path / "bad.pth"))
  out = str(tmp_path / "out")
  assert torch_axial.main(["--model=axial_resnet_26s",
                           f"--checkpoint={tmp_path / 'bad.pth'}",
                           f"--output_dir={out}"]) == 2
  err = capsys.readouterr().err.strip().splitlines()[-1]
  assert err.startswith("error: shape mismatch")
  assert "layer1.0.conv_up.weight" in err
  assert "res2_block1/conv_up/kernel" in err
  assert not os.path.exists(out)
  assert [p for p in os.listdir(tmp_path) if p.startswith(".tmp")] == []

  extra = dict(state, **{"unused.weight": torch.zeros(3)})
  torch.save(extra, str(tmp_path / "extra.pth"))
  assert torch_axial.main(["--model=axial_resnet_26s",
                           f"--checkpoint={tmp_path / 'extra.pth'}",
                           f"--output_dir={out}"]) == 2
  assert "unused.weight" in capsys.readouterr().err
  missing = {k: v for k, v in state.items() if k != "fc.bias"}
  torch.save(missing, str(tmp_path / "missing.pth"))
  assert torch_axial.main(["--model=axial_resnet_26s",
                           f"--checkpoint={tmp_path / 'missing.pth'}",
                           f"--output_dir={out}"]) == 2
  assert "missing source tensor 'fc.bias'" in capsys.readouterr().err
  assert torch_axial.main(["--model=axial_resnet_26s",
                           f"--checkpoint={tmp_path / 'missing.pth'}",
                           f"--output_dir={out}", "--input_size=320"]) == 2
  assert "shape mismatch" in capsys.readouterr().err
  assert not os.path.exists(out)


def test_bad_arguments_end_in_one_error_line(tmp_path, capsys):
  assert torch_axial.main(["--model=resnet_50", "--checkpoint=x.pth",
                           f"--output_dir={tmp_path / 'o'}"]) == 2
  assert "no PyTorch reference layout" in capsys.readouterr().err
  assert torch_axial.main(["--model=axial_resnet_26s",
                           f"--checkpoint={tmp_path / 'none.pth'}",
                           f"--output_dir={tmp_path / 'o'}"]) == 2
  assert "is not a file" in capsys.readouterr().err
  (tmp_path / "busy").mkdir()
  (tmp_path / "busy" / "mine.txt").write_text("keep")
  assert torch_axial.main(["--model=axial_resnet_26s", "--checkpoint=x.pth",
                           f"--output_dir={tmp_path / 'busy'}"]) == 2
  assert (tmp_path / "busy" / "mine.txt").read_text() == "keep"


def test_model_gin_round_trips_and_rejects_other_bindings(tmp_path):
  path = tmp_path / "model.gin"
  overrides = torch_axial.model_overrides((225, 225))
  path.write_text(torch_axial.gin_text("axial_resnet_26s", (225, 225), "x"))
  assert common.read_model_gin(str(path)) == ("axial_resnet_26s", overrides)
  path.write_text("trainer.train_steps = 3\n")
  with pytest.raises(common.ImportFailure, match="model.gin:1: expected"):
    common.read_model_gin(str(path))


def test_write_import_is_atomic(tmp_path):
  out = str(tmp_path / "out")
  module = tf.Module()
  module.v = tf.Variable([1.0, 2.0])

  def fail(_):
    raise OSError("disk full")
  with pytest.raises(OSError, match="disk full"):
    common.write_import(out, {"model": module}, {"a.gin": "x"},
                        before_rename=fail)
  assert os.listdir(tmp_path) == []
  prefix = common.write_import(out, {"model": module}, {"a.gin": "x"})
  restored = tf.Module()
  restored.v = tf.Variable([0.0, 0.0])
  tf.train.Checkpoint(model=restored).read(prefix).assert_consumed()
  np.testing.assert_array_equal(restored.v.numpy(), [1.0, 2.0])
