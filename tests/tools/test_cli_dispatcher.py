"""The `axial-deeplab` dispatcher (axial_deeplab_tf/cli/main.py).

Every subcommand's --help runs without TensorFlow work and lists its own
flags only; unknown subcommands and missing modules end with one `error:`
line and status 2; the tools/ wrappers run the same modules.
"""

import os
import subprocess
import sys

import pytest

from axial_deeplab_tf.cli import main

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))

# Subcommand -> (flags it must list, flags of other subcommands it must not).
_OWN_FLAGS = {
    ("train",): (["--gin_file", "--model_dir", "--mode"],
                 ["--saved_model", "--export_dir", "--image_dir"]),
    ("eval",): (["--gin_file", "--model_dir"], ["--saved_model"]),
    ("export",): (["--gin_file", "--checkpoint_path", "--export_dir",
                   "--model", "--set"], ["--model_dir", "--saved_model"]),
    ("predict",): (["--saved_model", "--images", "--output_dir"],
                   ["--gin_file", "--checkpoint_path", "--export_dir"]),
    ("make-synthetic",): (["--output_dir", "--num_train", "--seed"],
                          ["--gin_file", "--num_shards"]),
    ("build-data", "panoptic"): (["--image_dir", "--panoptic_json",
                                  "--output_dir", "--num_shards"],
                                 ["--gin_file", "--coco_root"]),
    ("build-data", "coco"): (["--coco_root", "--output_dir"],
                             ["--image_size", "--cityscapes_root"]),
    ("build-data", "cityscapes"): (["--cityscapes_root", "--mode"],
                                   ["--coco_root"]),
    ("build-data", "mapillary"): (["--mapillary_root", "--version"],
                                  ["--coco_root"]),
    ("build-data", "ade20k"): (["--ade20k_root"], ["--coco_root"]),
    ("build-data", "imagenet"): (["--image_dir", "--synsets_file"],
                                 ["--panoptic_json"]),
    ("experiments",): (["--paths"], ["--gin_file"]),
    ("stats",): (["--model", "--input_size"], ["--gin_file"]),
    ("benchmark",): (["--suite", "--output_dir"], ["--gin_file"]),
    ("visualize-attention",): (["--image", "--block", "--gin_file"],
                               ["--saved_model"]),
    ("scale-stress",): (["--gin_file", "--resolutions"], ["--saved_model"]),
    ("export-tflite",): (["--output", "--input_size", "--quantization"],
                         ["--export_dir", "--saved_model"]),
    ("export-onnx",): (["--output", "--input_size"],
                       ["--export_dir", "--saved_model"]),
    ("import-torch-axial",): (["--model", "--checkpoint", "--output_dir"],
                              ["--gin_file", "--dataset"]),
    ("import-segnext",): (["--model", "--dataset", "--checkpoint"],
                          ["--gin_file", "--input_size"]),
    ("import-isanet",): (["--model", "--dataset", "--checkpoint"],
                         ["--gin_file", "--input_size"]),
    ("import-deeplab2",): (["--model", "--checkpoint", "--output_dir"],
                           ["--gin_file", "--dataset"]),
}


def _env():
  return dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2",
              CUDA_VISIBLE_DEVICES="")


def _run(args, **kwargs):
  return subprocess.run([sys.executable, "-m", "axial_deeplab_tf", *args],
                        cwd=REPO, env=_env(), capture_output=True, text=True,
                        timeout=300, **kwargs)


def _leaves(table, path=()):
  for name, target in table.items():
    if isinstance(target, dict):
      yield from _leaves(target, path + (name,))
    else:
      yield path + (name,), target


def test_every_subcommand_of_the_package_is_tested_here():
  ours = {path for path, module in _leaves(main.SUBCOMMANDS)
          if module.startswith("axial_deeplab_tf.cli.")}
  assert ours == set(_OWN_FLAGS)


@pytest.mark.parametrize("path", sorted(_OWN_FLAGS), ids="_".join)
def test_help_lists_only_the_subcommands_own_flags(path):
  result = _run([*path, "--help"])
  assert result.returncode == 0, result.stderr[-2000:]
  own, others = _OWN_FLAGS[path]
  # absl subcommands: docstring, then "flags:"; argparse ones: "options:".
  doc, _, listing = result.stdout.rpartition(
      "\nflags:\n" if "\nflags:\n" in result.stdout else "\noptions:\n")
  assert doc.strip() and listing.strip(), result.stdout
  listing = listing.replace("--[no]", "--")
  for flag in own:
    assert f"{flag}:" in listing or f"{flag} " in listing, (flag, listing)
  for flag in others:
    assert f"{flag}:" not in listing and f"{flag} " not in listing, (
        flag, listing)
  assert "Traceback" not in result.stderr


def test_top_level_help_and_missing_subcommand():
  result = _run(["--help"])
  assert result.returncode == 0
  for path in _OWN_FLAGS:
    assert f"\n  {path[0]} " in result.stdout
  result = _run([])
  assert result.returncode == 2 and "usage:" in result.stderr


def test_unknown_subcommand_is_one_error_line():
  result = _run(["trian"])
  assert result.returncode == 2
  assert result.stderr.splitlines() == [
      line for line in result.stderr.splitlines() if line.startswith("error:")]
  assert "'trian'" in result.stderr and "train" in result.stderr
  result = _run(["build-data", "kitti"])
  assert result.returncode == 2 and "'kitti'" in result.stderr


def test_missing_module_and_missing_dependency(tmp_path, monkeypatch,
                                               capsys):
  (tmp_path / "needs_a_package.py").write_text(
      "import a_package_that_is_not_installed_xyz\n")
  monkeypatch.syspath_prepend(str(tmp_path))
  monkeypatch.setitem(main.SUBCOMMANDS, "needs", "needs_a_package")
  assert main.run(["needs"]) == 2
  err = capsys.readouterr().err
  assert err.startswith("error: 'axial-deeplab needs' needs the Python "
                        "package 'a_package_that_is_not_installed_xyz'"), err
  monkeypatch.setitem(main.SUBCOMMANDS, "import-x",
                      "axial_deeplab_tf.importers.not_a_module_xyz")
  assert main.run(["import-x", "--flag=1"]) == 2
  err = capsys.readouterr().err
  assert err == ("error: 'axial-deeplab import-x' is not available in this "
                 "installation: its module "
                 "axial_deeplab_tf.importers.not_a_module_xyz is not "
                 "installed.\n")


def test_importer_entries_point_at_the_importers_package():
  import importlib  # pylint: disable=g-import-not-at-top
  for name in ("torch-axial", "segnext", "isanet", "deeplab2"):
    module = name.replace("-", "_")
    assert main.SUBCOMMANDS[f"import-{name}"] == (
        f"axial_deeplab_tf.cli.import_{module}")
    source = importlib.util.find_spec(f"axial_deeplab_tf.cli.import_{module}")
    with open(source.origin) as f:
      assert f"from axial_deeplab_tf.importers import {module}" in f.read()


def test_eval_refuses_a_training_mode():
  result = _run(["eval", "--gin_file=quickstart/axial_deeplab",
                 "--model_dir=/nonexistent", "--mode=train"])
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1].startswith(
      "error: --mode=train trains")


def test_tools_wrapper_runs_the_same_module():
  wrapper = subprocess.run(
      [sys.executable, os.path.join(REPO, "tools", "build_panoptic_data.py"),
       "--help"], cwd="/", env=dict(_env(), PYTHONPATH=""),
      capture_output=True, text=True, timeout=300)
  assert wrapper.returncode == 0, wrapper.stderr
  assert wrapper.stdout == _run(["build-data", "panoptic", "--help"]).stdout


def test_unknown_experiment_name_is_a_clear_error(tmp_path):
  result = _run(["train", "--gin_file=coco/axial_deeplab_q",
                 f"--model_dir={tmp_path}/run", "--mode=train"])
  assert result.returncode == 2
  (line,) = [l for l in result.stderr.splitlines() if l.startswith("error:")]
  assert "'coco/axial_deeplab_q' is neither a file nor a shipped experiment" \
      in line, line
