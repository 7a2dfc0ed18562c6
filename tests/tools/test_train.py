"""tools/train.py: configuration errors fail fast with one clear line.

Each case runs the tool as a subprocess with an otherwise valid quickstart
command and checks: non-zero exit, exactly one "error:" line on stderr that
names the culprit (gin file and line, --gin_param, data path, model_dir),
no traceback, and nothing trained (no checkpoint, no summaries). Successful
training runs of the tool are in tests/tasks/test_training_runs.py.
"""

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
TOOL = os.path.join(REPO, "tools", "train.py")
QUICKSTART = os.path.join(REPO, "gin", "quickstart", "axial_deeplab.gin")

# The module fixture starts the four runs once; with pytest-xdist's
# --dist=loadgroup its tests share one worker instead of each worker
# starting them again.
pytestmark = pytest.mark.xdist_group("train_tool_errors")


def _start(args):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TF_USE_LEGACY_KERAS="1",
             CUDA_VISIBLE_DEVICES="")
  return subprocess.Popen([sys.executable, TOOL, "--mode=train"] + args,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, env=env, cwd=REPO)


@pytest.fixture(scope="module")
def failures(tmp_path_factory):
  """Runs every failing command at once; {case: (code, stderr, model_dir)}."""
  root = tmp_path_factory.mktemp("train_errors")
  bad_gin = root / "bad.gin"
  bad_gin.write_text(f"include '{QUICKSTART}'\n\n"
                     "trainer.train_stepz = 5\n")
  a_file = root / "a_file"
  a_file.write_text("not a folder")
  data = [f"--gin_param=train/data.input_path='{root}/none/train-*'",
          f"--gin_param=eval/data.input_path='{root}/none/val-*'"]
  cases = {
      "gin_file": ([f"--gin_file={bad_gin}"] + data, root / "run_gin"),
      "gin_param": ([f"--gin_file={QUICKSTART}",
                     "--gin_param=trainer.bogus = 1"] + data,
                    root / "run_param"),
      "data": ([f"--gin_file={QUICKSTART}"] + data, root / "run_data"),
      "model_dir": ([f"--gin_file={QUICKSTART}"] + data,
                    a_file / "run"),
  }
  processes = {
      name: (_start(args + [f"--model_dir={model_dir}"]), model_dir)
      for name, (args, model_dir) in cases.items()}
  results = {}
  for name, (process, model_dir) in processes.items():
    _, stderr = process.communicate(timeout=600)
    results[name] = (process.returncode, stderr, str(model_dir))
  return results, str(bad_gin), str(root)


def _error_line(code, stderr):
  assert code != 0
  assert "Traceback" not in stderr, stderr[-3000:]
  lines = [l for l in stderr.splitlines() if l.startswith("error:")]
  assert len(lines) == 1, stderr[-3000:]
  return lines[0]


def _trained_nothing(model_dir):
  if not os.path.isdir(model_dir):
    return True
  return not any(name.startswith(("ckpt", "checkpoint", "train"))
                 for name in os.listdir(model_dir))


def test_unknown_binding_in_a_gin_file_names_file_and_line(failures):
  results, bad_gin, _ = failures
  code, stderr, model_dir = results["gin_file"]
  line = _error_line(code, stderr)
  assert "train_stepz" in line and f'"{bad_gin}", line 3' in line, line
  # Parsing comes first: not even model_dir was created.
  assert not os.path.exists(model_dir)


def test_unknown_gin_param_names_the_flag(failures):
  results, _, _ = failures
  code, stderr, model_dir = results["gin_param"]
  line = _error_line(code, stderr)
  assert "bogus" in line and "--gin_param 'trainer.bogus = 1'" in line, line
  assert not os.path.exists(model_dir)


def test_missing_data_names_the_path_before_training(failures):
  results, _, root = failures
  code, stderr, model_dir = results["data"]
  line = _error_line(code, stderr)
  assert f"train/data.input_path '{root}/none/train-*'" in line, line
  assert "matches no files" in line
  assert _trained_nothing(model_dir)


def test_unwritable_model_dir_names_the_path(failures):
  results, _, _ = failures
  code, stderr, model_dir = results["model_dir"]
  line = _error_line(code, stderr)
  assert f"model_dir {model_dir!r} is not writable" in line, line
