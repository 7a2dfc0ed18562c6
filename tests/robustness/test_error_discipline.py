"""The one-line error discipline: mapping, --verbose, gin files."""

import errno
import io
import json
import os
import subprocess
import sys

import pytest

from axial_deeplab_tf.utils import errors

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


@pytest.mark.parametrize("code,what,hint", [
    (errno.ENOSPC, "no space left on device", "free space"),
    (errno.EACCES, "permission denied", "not accessible"),
    (errno.EMFILE, "too many open files", "ulimit -n"),
    (errno.ENOTDIR, "not a folder", "is a file"),
    (errno.EROFS, "read-only file system", "writable"),
])
def test_os_errors_become_one_line_with_the_file(code, what, hint):
  stream = io.StringIO()

  def main(argv):
    del argv
    raise OSError(code, os.strerror(code), "/data/out/train-00000.tfrecord")

  assert errors.run_tool(main, ["tool"], stream=stream) == 2
  lines = stream.getvalue().splitlines()
  assert len(lines) == 1, lines
  assert lines[0].startswith(f"error: {what}, /data/out/train-00000.tfrecord"
                             ), lines[0]
  assert hint in lines[0]


def test_user_error_parts_and_verbose_traceback():
  def main(argv):
    del argv
    raise errors.UserError("corrupt record", "/d/train-1", "record 3: crc")

  quiet = io.StringIO()
  assert errors.run_tool(main, ["tool"], stream=quiet) == 2
  assert quiet.getvalue() == "error: corrupt record, /d/train-1, record 3: crc\n"
  loud = io.StringIO()
  assert errors.run_tool(main, ["tool", "--verbose"], stream=loud) == 2
  assert "Traceback" in loud.getvalue()
  assert loud.getvalue().splitlines()[-1].startswith("error: corrupt record")


def test_bugs_keep_their_traceback():
  def main(argv):
    del argv
    raise ZeroDivisionError("a bug")

  with pytest.raises(ZeroDivisionError):
    errors.run_tool(main, ["tool"], stream=io.StringIO())


def _run(args, tool="train.py"):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TF_USE_LEGACY_KERAS="1",
             CUDA_VISIBLE_DEVICES="")
  return subprocess.run([sys.executable, os.path.join(REPO, "tools", tool)]
                        + args, capture_output=True, text=True, env=env,
                        cwd=REPO, timeout=600)


@pytest.mark.slow
@pytest.mark.parametrize("content,expected", [
    ("import no_such_module_for_axial_tests\n",
     "cannot import module no_such_module_for_axial_tests"),
    ("trainer.train_steps = (\n", "line"),
])
def test_a_bad_gin_file_is_one_line(tmp_path, content, expected):
  gin_file = tmp_path / "hostile.gin"
  gin_file.write_text(content)
  result = _run([f"--gin_file={gin_file}", f"--model_dir={tmp_path / 'm'}"])
  assert result.returncode == 2, result.stderr[-3000:]
  assert "Traceback" not in result.stderr, result.stderr[-3000:]
  lines = [l for l in result.stderr.splitlines() if l.startswith("error:")]
  assert len(lines) == 1, result.stderr[-3000:]
  assert expected in lines[0] and str(gin_file) in lines[0], lines[0]
  assert not (tmp_path / "m").exists()


def test_converter_verbose_shows_the_traceback(tmp_path):
  bad = tmp_path / "bad.json"
  bad.write_text(json.dumps([1, 2]))
  args = [f"--image_dir={tmp_path}", f"--panoptic_json={bad}",
          f"--panoptic_dir={tmp_path}", f"--output_dir={tmp_path / 'o'}"]
  quiet = _run(args, "build_panoptic_data.py")
  loud = _run(args + ["--verbose"], "build_panoptic_data.py")
  for result in (quiet, loud):
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.splitlines()[-1].startswith(
        f"error: not a COCO panoptic JSON, {bad}"), result.stderr[-3000:]
  assert "Traceback" not in quiet.stderr
  assert "Traceback" in loud.stderr
