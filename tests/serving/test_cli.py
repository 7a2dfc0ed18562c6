"""Shared pieces of the serving tools (axial_deeplab_tf/serving/cli.py)."""

import hashlib
import io
import subprocess
import sys

import pytest
from absl import flags

from axial_deeplab_tf import serving
from axial_deeplab_tf.serving import cli
from axial_deeplab_tf.serving import export_module
from axial_deeplab_tf.serving import predictor
from tests.serving import serving_utils as su


def test_importing_cli_leaves_tensorflow_unloaded():
  code = ("import sys; import axial_deeplab_tf.serving.cli; "
          "print('tensorflow' in sys.modules)")
  result = subprocess.run([sys.executable, "-c", code], capture_output=True,
                          text=True, cwd=su.REPO, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.split() == ["False"]
  # The package's names load their module on first use.
  assert serving.load_model is export_module.load_model
  assert serving.SavedModelPredictor is predictor.SavedModelPredictor
  with pytest.raises(AttributeError, match="no_such_name"):
    serving.no_such_name  # pylint: disable=pointless-statement


def test_find_files_by_output_name(tmp_path):
  for name in ("b.png", "a.jpg", "c.txt"):
    (tmp_path / name).write_bytes(b"x")
  (tmp_path / "d.png").mkdir()
  found = cli.find_files("images", [str(tmp_path / "*.png"),
                                    str(tmp_path / "*.jpg"),
                                    str(tmp_path / "b.*png")])
  assert found == {"a": str(tmp_path / "a.jpg"), "b": str(tmp_path / "b.png")}
  with pytest.raises(ValueError, match="no files match --images"):
    cli.find_files("images", [str(tmp_path / "*.gif")])
  # The same base name twice (here also in two folders): distinct names,
  # stable across runs (a hash of the absolute path).
  (tmp_path / "a.png").write_bytes(b"x")
  (tmp_path / "sub").mkdir()
  (tmp_path / "sub" / "a.jpg").write_bytes(b"x")
  found = cli.find_files("images", [str(tmp_path / "*"),
                                    str(tmp_path / "sub" / "*")])
  tag = lambda p: hashlib.sha256(str(p).encode()).hexdigest()[:8]
  assert found == {"b": str(tmp_path / "b.png"),
                   f"a-{tag(tmp_path / 'a.jpg')}": str(tmp_path / "a.jpg"),
                   f"a-{tag(tmp_path / 'a.png')}": str(tmp_path / "a.png"),
                   f"a-{tag(tmp_path / 'sub' / 'a.jpg')}":
                       str(tmp_path / "sub" / "a.jpg"),
                   "c": str(tmp_path / "c.txt")}
  assert len(set(found)) == 5


@pytest.mark.parametrize("path,name", [
    ("/x/../..png", "png"), ("/x/.hidden.png", "hidden"),
    ("/x/a b\\c:d.png", "a_b_c_d"), ("/x/..", "image"),
    ("/x/\u00e9t\u00e9.jpg", "_t_"), ("/x/ok-1_2.v3.png", "ok-1_2.v3"),
])
def test_output_names_are_plain(path, name):
  assert cli.output_name(path) == name


def test_usage_checks_and_list_parsing():
  values = flags.FlagValues()
  cli.define_model_flags("x", flag_values=values)
  flags.DEFINE_string("output", None, "", flag_values=values)
  values(["prog"])
  stream = io.StringIO()
  sys_stderr, sys.stderr = sys.stderr, stream
  try:
    assert cli.check_usage(["prog", "extra"], values) == 2
    assert cli.check_usage(["prog"], values, required=("output",)) == 2
    assert cli.check_usage(["prog"], values, model_flags=True) == 2
    values.model = "axial_deeplab_s"
    assert cli.check_usage(["prog"], values, model_flags=True) is None
    values.gin_file = ["a.gin"]
    assert cli.check_usage(["prog"], values, model_flags=True) == 2
  finally:
    sys.stderr = sys_stderr
  assert stream.getvalue().splitlines() == [
      "error: unexpected arguments ['extra']",
      "error: --output is required.",
      "error: give either --model (a zoo model) or --gin_file (an "
      "experiment).",
      "error: give either --model (a zoo model) or --gin_file (an "
      "experiment).",
  ]
  assert cli.parse_list("scales", ["0.5", "1"], float, "numbers") == [0.5, 1.0]
  assert cli.parse_list("ids", None, int, "integers") is None
  with pytest.raises(ValueError, match=r"--ids must be integers, got \['1', "
                     r"'x'\]"):
    cli.parse_list("ids", ["1", "x"], int, "integers")
  stream = io.StringIO()
  assert cli.report_error(ValueError("bad\n  value"), stream) == 2
  assert stream.getvalue() == "error: ValueError: bad value\n"


def test_progress_bar_counts_rate_and_time_left():
  now = [100.0]
  stream = io.StringIO()
  bar = cli.ProgressBar(4, stream=stream, width=8, clock=lambda: now[0])
  now[0] = 102.0
  bar.update(1, text="a.png")
  now[0] = 104.0
  bar.update(2, message="b.png: FAILED: broken")
  now[0] = 108.0
  bar.update(4)
  # 1 image in 2 s: 0.5/s, 3 left -> 6 s; 2 in 4 s -> 4 s left.
  assert stream.getvalue().splitlines() == [
      "[##......] 1/4 0.50/s 6s left a.png",
      "b.png: FAILED: broken",
      "[####....] 2/4 0.50/s 4s left",
      "[########] 4/4 0.50/s",
  ]
  with pytest.raises(ValueError, match="total"):
    cli.ProgressBar(-1)
