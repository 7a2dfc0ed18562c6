"""Export --overwrite never deletes what is not an export; image bombs.

The tools run as subprocesses; both refuse before building a model, so
the runs cost a TensorFlow import only.
"""

import os
import struct
import subprocess
import sys
import zlib

import pytest
from PIL import Image

from axial_deeplab_tf.serving import export_module
from axial_deeplab_tf.utils import errors
from axial_deeplab_tf.utils import io as io_utils

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
TINY = ["--model=axial_deeplab_s", "--set=num_classes=3",
        "--set=width_multiplier=0.125", "--set=depth=26"]


def _tool(name, args):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TF_USE_LEGACY_KERAS="1",
             CUDA_VISIBLE_DEVICES="")
  return subprocess.run(
      [sys.executable, os.path.join(REPO, "tools", f"{name}.py")] + args,
      capture_output=True, text=True, env=env, cwd=REPO, timeout=600)


def _error_line(result):
  assert result.returncode == 2, (result.returncode, result.stderr[-3000:])
  assert "Traceback" not in result.stderr, result.stderr[-3000:]
  lines = [l for l in result.stderr.splitlines() if l.startswith("error:")]
  assert len(lines) == 1, result.stderr[-3000:]
  return lines[0]


def _tree(folder):
  return sorted((os.path.relpath(os.path.join(d, f), folder),
                 open(os.path.join(d, f), "rb").read())
                for d, _, files in os.walk(folder) for f in files)


def _user_folder(tmp_path):
  folder = tmp_path / "my_thesis"
  (folder / "chapters").mkdir(parents=True)
  (folder / "chapters" / "one.tex").write_text("precious")
  (folder / "notes.txt").write_text("also precious")
  return folder


def _fake_export(folder, *extra):
  (folder / "variables").mkdir(parents=True)
  (folder / "variables" / "variables.index").write_bytes(b"x")
  (folder / "saved_model.pb").write_bytes(b"pb")
  (folder / "assets.extra").mkdir()
  for name in extra:
    (folder / name).write_text("not an export file")
  return folder


# ------------------------------------------------------------- 4. export
@pytest.mark.slow
def test_overwrite_refuses_a_folder_that_is_not_an_export(tmp_path):
  folder = _user_folder(tmp_path)
  before = _tree(folder)
  line = _error_line(_tool("export_saved_model", TINY + [
      f"--export_dir={folder}", "--overwrite"]))
  assert line.startswith(f"error: --overwrite refused: not a previous "
                         f"export, {folder}"), line
  assert _tree(folder) == before


@pytest.mark.parametrize("case,refused", [
    ("user_files", "not a previous export"),
    ("export_plus_user_file", "besides an export"),
    ("a_file", "is not a folder"),
    ("not_empty_without_overwrite", "is not empty"),
])
def test_export_dir_refusals(tmp_path, case, refused):
  if case == "user_files":
    target = _user_folder(tmp_path)
  elif case == "export_plus_user_file":
    target = _fake_export(tmp_path / "export", "thesis.tex")
  elif case == "a_file":
    target = tmp_path / "a_file"
    target.write_text("keep")
  else:
    target = _fake_export(tmp_path / "export")
  before = _tree(tmp_path)
  with pytest.raises(errors.UserError, match=refused) as info:
    export_module.check_replaceable_export_dir(
        str(target), overwrite=case != "not_empty_without_overwrite")
  assert info.value.path == str(target)
  assert _tree(tmp_path) == before


@pytest.mark.parametrize("case", ["previous_export", "empty", "missing"])
def test_export_dir_accepted(tmp_path, case):
  target = tmp_path / "export"
  if case == "previous_export":
    _fake_export(target)
  elif case == "empty":
    target.mkdir()
  export_module.check_replaceable_export_dir(str(target), overwrite=True)


# --------------------------------------------------- 5. decompression bomb
def _png_header(width, height):
  """A PNG that claims width x height RGB pixels in a few dozen bytes."""

  def chunk(kind, data):
    return (struct.pack(">I", len(data)) + kind + data +
            struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

  ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
  idat = zlib.compress(b"\0" * 1024)
  return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) +
          chunk(b"IDAT", idat) + chunk(b"IEND", b""))


@pytest.mark.parametrize("width,height", [(60000, 60000), (10000, 10000)])
def test_image_pixel_limit_from_the_header(tmp_path, width, height):
  path = tmp_path / "bomb.png"
  path.write_bytes(_png_header(width, height))
  assert path.stat().st_size < 2000
  with pytest.raises(errors.UserError, match="image too large") as info:
    io_utils.check_image_pixels(str(path))
  assert info.value.path == str(path)
  if width * height < 2 * Image.MAX_IMAGE_PIXELS:
    # Under a limit that admits it, the same header passes (it is the size
    # that is refused, not the file).
    assert io_utils.check_image_pixels(
        str(path), max_pixels=width * height) == str(path)


@pytest.mark.slow
def test_visualize_attention_refuses_a_bomb_in_one_line(tmp_path):
  bomb = tmp_path / "bomb.png"
  bomb.write_bytes(_png_header(60000, 60000))
  line = _error_line(_tool("visualize_attention", TINY + [
      f"--image={bomb}", "--query=1,1", f"--output={tmp_path / 'o.png'}"]))
  assert line.startswith(f"error: image too large, {bomb}"), line
  assert not (tmp_path / "o.png").exists()
  # Not an image at all: also one line.
  text = tmp_path / "text.png"
  text.write_text("hello")
  line = _error_line(_tool("visualize_attention", TINY + [
      f"--image={text}", "--query=1,1", f"--output={tmp_path / 'o.png'}"]))
  assert line.startswith(f"error: not a readable image, {text}"), line
