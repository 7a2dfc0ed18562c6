"""End-to-end tests of tools/model_stats.py on a tiny registered model."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))
TOOL = os.path.join(ROOT, "tools", "model_stats.py")

# A module that registers two small models (one that always fails to build).
_MODULE = '''
import tf_keras
from axial_deeplab_tf.modeling import registry


def build_tiny(num_classes=3, input_size=(8, 8), width=4):
  inputs = tf_keras.Input([input_size[0], input_size[1], 3])
  x = tf_keras.layers.Conv2D(width, 3, padding="same", use_bias=False)(inputs)
  x = tf_keras.layers.GlobalAveragePooling2D()(x)
  return tf_keras.Model(inputs, tf_keras.layers.Dense(num_classes)(x))


def build_broken(num_classes=3, input_size=(8, 8)):
  raise ValueError("this model cannot be built")


if "tiny_stats_net" not in registry._REGISTRY:
  registry.register_model("tiny_stats_net", build_tiny,
                          task="classification", num_classes=3,
                          input_size=(8, 8))
  registry.register_model("broken_stats_net", build_broken,
                          task="classification", num_classes=3,
                          input_size=(8, 8))
'''


def _tiny_madds(height, width, channels, classes):
  # 3x3 'same' conv from 3 channels, then the dense layer on pooled features.
  return height * width * channels * 3 * 3 * 3 + channels * classes


@pytest.fixture
def module_path(tmp_path):
  path = tmp_path / "tiny_models.py"
  path.write_text(_MODULE)
  return str(path)


def test_subprocess_prints_json(module_path):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  result = subprocess.run(
      [sys.executable, TOOL, "--model", "tiny_stats_net", "--input_size", "6",
       "10", "--num_classes", "5", "--set", "width=2", "--module",
       module_path], capture_output=True, text=True, env=env, timeout=300,
      check=False)
  assert result.returncode == 0, result.stderr
  stats = json.loads(result.stdout.strip().splitlines()[-1])
  assert stats["model"] == "tiny_stats_net"
  assert stats["input_size"] == [6, 10]
  assert stats["num_classes"] == 5
  assert stats["params"] == 3 * 3 * 3 * 2 + 2 * 5 + 5
  assert stats["madds"] == _tiny_madds(6, 10, 2, 5)
  assert stats["madds_by_op"] == {"Conv2D": 6 * 10 * 2 * 27, "MatMul": 10}
  assert "Einsum" in stats["madds_method"]


def _load_tool():
  # The module behind tools/model_stats.py and `axial-deeplab stats`; its
  # main takes the program name first.
  return importlib.import_module("axial_deeplab_tf.cli.stats")


def test_unknown_model_exits_2_naming_choices(module_path, capsys):
  tool = _load_tool()
  with pytest.raises(SystemExit) as exit_info:
    tool.main(["stats", "--model", "no_such_net", "--module", module_path])
  assert exit_info.value.code == 2
  err = capsys.readouterr().err
  assert "no_such_net" in err and "tiny_stats_net" in err


@pytest.mark.parametrize("argv", [
    ["--model", "tiny_stats_net", "--input_size", "0", "8"],
    ["--model", "tiny_stats_net", "--set", "width"],
    ["--model", "tiny_stats_net", "--set", "num_classes=4"],
])
def test_bad_arguments_exit_2(module_path, argv):
  tool = _load_tool()
  with pytest.raises(SystemExit) as exit_info:
    tool.main(["stats"] + argv + ["--module", module_path])
  assert exit_info.value.code == 2


def test_all_reports_every_model(module_path, capsys, monkeypatch):
  tool = _load_tool()
  from axial_deeplab_tf import models  # pylint: disable=g-import-not-at-top
  # Building the whole zoo is too slow for a unit test: limit "all" to the
  # two test models, one of which fails to build.
  monkeypatch.setattr(models, "list_models",
                      lambda task=None: ["broken_stats_net", "tiny_stats_net"])
  code = tool.main(["stats", "--model", "all", "--module", module_path])
  assert code == 1
  lines = [json.loads(l) for l in capsys.readouterr().out.splitlines()]
  assert [l["model"] for l in lines] == ["broken_stats_net", "tiny_stats_net"]
  assert "cannot be built" in lines[0]["error"]
  # Defaults of the model: 8x8 input, 3 classes, width 4.
  assert lines[1]["input_size"] == [8, 8] and lines[1]["num_classes"] == 3
  assert lines[1]["madds"] == _tiny_madds(8, 8, 4, 3)
