"""utils/io.write_atomically: files and folders, local and through tf.io.gfile."""

import os

import pytest
import tensorflow as tf

from axial_deeplab_tf.utils import io as io_lib


def test_file_is_written_and_replaced(tmp_path):
  path = str(tmp_path / "sub" / "a.json")
  io_lib.write_text_atomically(path, "one")
  io_lib.write_text_atomically(path, b"two")
  with open(path) as f:
    assert f.read() == "two"
  assert os.listdir(tmp_path / "sub") == ["a.json"]


def test_failed_write_leaves_nothing(tmp_path):
  path = str(tmp_path / "a.txt")
  with open(path, "w") as f:
    f.write("old")
  seen = []

  def write(tmp):
    seen.append(tmp)
    with open(tmp, "w") as f:
      f.write("half")
    raise KeyboardInterrupt

  with pytest.raises(KeyboardInterrupt):
    io_lib.write_atomically(path, write)
  assert os.path.dirname(seen[0]) == str(tmp_path)
  assert seen[0].endswith(".txt")  # Writers choose formats by extension.
  assert sorted(os.listdir(tmp_path)) == ["a.txt"]
  with open(path) as f:
    assert f.read() == "old"


def test_given_temporary_name_is_used(tmp_path):
  path = str(tmp_path / "m.json")
  tmp = str(tmp_path / ".tmp-m.json.123")
  seen = []
  io_lib.write_atomically(path, lambda t: (seen.append(t),
                                           open(t, "w").close()),
                          temporary=tmp)
  assert seen == [tmp] and os.listdir(tmp_path) == ["m.json"]


def test_folder_replaces_a_previous_one(tmp_path):
  out = tmp_path / "export"
  os.makedirs(out / "old")

  def write(tmp):
    assert os.path.isdir(tmp) and not os.listdir(tmp)
    with open(os.path.join(tmp, "new.txt"), "w") as f:
      f.write("x")

  io_lib.write_atomically(str(out), write, folder=True)
  assert os.listdir(out) == ["new.txt"]
  assert os.listdir(tmp_path) == ["export"]

  def fail(tmp):
    with open(os.path.join(tmp, "part"), "w") as f:
      f.write("y")
    raise OSError("disk full")

  with pytest.raises(OSError, match="disk full"):
    io_lib.write_atomically(str(out), fail, folder=True)
  assert os.listdir(out) == ["new.txt"]
  assert os.listdir(tmp_path) == ["export"]


def test_remote_paths_go_through_gfile():
  root = "ram://io_test"
  path = f"{root}/run/eval_results.json"
  assert io_lib.is_remote(path) and not io_lib.is_remote("/tmp/x")
  io_lib.write_text_atomically(path, "first")
  io_lib.write_text_atomically(path, "second")
  with tf.io.gfile.GFile(path) as f:
    assert f.read() == "second"
  assert tf.io.gfile.listdir(f"{root}/run") == ["eval_results.json"]

  def fail(tmp):
    with tf.io.gfile.GFile(tmp, "w") as f:
      f.write("half")
    raise ValueError("stop")

  with pytest.raises(ValueError, match="stop"):
    io_lib.write_atomically(path, fail)
  assert tf.io.gfile.listdir(f"{root}/run") == ["eval_results.json"]
