"""Hostile and odd image files: refused before decoding, or read right.

The files are generated here (tests/serving/hostile_images.py): PNG, JPEG,
GIF and BMP files declaring huge sizes, a 40000 x 40000 PNG decompression
bomb, truncated, empty and non-image files, and 16-bit, palette, CMYK,
grayscale, RGBA and EXIF-rotated images whose expected pixels are computed
here with numpy.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from axial_deeplab_tf.serving import export_module as em
from axial_deeplab_tf.serving import predictor
from tests.serving import hostile_images as hi
from tests.serving import serving_utils as su

GIB = 1 << 30


def _rgb(rng, h=10, w=14):
  return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def odd_files(rng):
  """{name: (bytes, expected uint8 [h, w, 3])} of readable odd images."""
  files = {}
  base = _rgb(rng)
  gray16 = rng.integers(0, 65536, (9, 7), dtype=np.uint16)
  files["gray16.png"] = (
      hi.encode(Image.fromarray(gray16), "PNG"),
      np.repeat(np.round(gray16 / 257.0).astype(np.uint8)[..., None], 3, -1))
  gray = base[..., 0]
  files["gray.png"] = (hi.encode(Image.fromarray(gray), "PNG"),
                       np.repeat(gray[..., None], 3, -1))
  rgba = np.concatenate([base, rng.integers(0, 256, base.shape[:2] + (1,),
                                            dtype=np.uint8)], -1)
  files["rgba.png"] = (hi.encode(Image.fromarray(rgba), "PNG"), base)
  palette = rng.integers(0, 256, (16, 3), dtype=np.uint8)
  index = rng.integers(0, 16, (8, 11), dtype=np.uint8)
  image = Image.fromarray(index, "P")
  image.putpalette(palette.reshape(-1).tolist())
  files["palette.png"] = (hi.encode(image, "PNG", transparency=3),
                          palette[index])
  # Pure inks, so that any CMYK -> RGB formula gives the same colors.
  inks = np.array([[0, 0, 0, 0], [255, 0, 0, 0], [0, 255, 0, 0],
                   [0, 0, 255, 0], [0, 0, 0, 255]], np.uint8)
  cmyk = np.repeat(inks[None], 4, 0)
  rgb = np.where(inks[:, 3:] == 255, 0, 255 - inks[:, :3]).astype(np.uint8)
  files["cmyk.tiff"] = (hi.encode(Image.fromarray(cmyk, "CMYK"), "TIFF"),
                        np.repeat(rgb[None], 4, 0))
  # EXIF orientation 6: the display is the stored image turned 90 degrees
  # clockwise. Large flat blocks keep JPEG's error small.
  blocks = np.kron(rng.integers(0, 256, (2, 3, 3), dtype=np.uint8),
                   np.ones((16, 16, 1), np.uint8))
  files["exif_rotated.jpg"] = (hi.exif_rotated_jpeg(blocks, 6),
                               np.rot90(blocks, k=-1))
  return files


def hostile_files(rng):
  """{name: (bytes, reason text)} of files that must be refused."""
  good_png = hi.encode(Image.fromarray(_rgb(rng, 40, 40)), "PNG")
  return {
      "bomb.png": (hi.png_bomb(40000, 40000), "above the limit"),
      "huge_header.png": (hi.png_header_only(100000, 100000),
                          "above the limit"),
      "huge.jpg": (hi.jpeg_declaring(60000, 60000), "above the limit"),
      "huge.gif": (hi.gif_declaring(65535, 65535), "above the limit"),
      "huge.bmp": (hi.bmp_declaring(50000, 40000), "above the limit"),
      "truncated.png": (good_png[:len(good_png) // 2], "truncated"),
      "empty.png": (b"", "empty file"),
      "notes.png": (b"these are not the pixels you are looking for\n" * 9,
                    "not an image"),
  }


def test_odd_images_are_read_right(tmp_path):
  rng = np.random.default_rng(0)
  for name, (data, expected) in odd_files(rng).items():
    (tmp_path / name).write_bytes(data)
    got = predictor.read_image(str(tmp_path / name))
    assert got.dtype == np.uint8 and got.shape == expected.shape, name
    tolerance = 8 if name.endswith(".jpg") else 0
    assert np.abs(got.astype(int) - expected).max() <= tolerance, name


def test_hostile_images_are_refused_with_a_reason(tmp_path):
  rng = np.random.default_rng(1)
  for name, (data, reason) in hostile_files(rng).items():
    (tmp_path / name).write_bytes(data)
    with pytest.raises(predictor.ImageError, match=reason) as info:
      predictor.read_image(str(tmp_path / name))
    assert str(tmp_path / name) in str(info.value)
  # The limit is configurable: a 40 x 40 image against 1000 pixels.
  (tmp_path / "ok.png").write_bytes(
      hi.encode(Image.fromarray(_rgb(rng, 40, 40)), "PNG"))
  with pytest.raises(predictor.ImageError, match="1600 pixels.*1000"):
    predictor.read_image(str(tmp_path / "ok.png"), max_pixels=1000)
  assert predictor.read_image(str(tmp_path / "ok.png"),
                              max_pixels=1600).shape == (40, 40, 3)
  # The default fits 4K frames (DCI 4096 x 2160).
  assert 4096 * 2160 <= predictor.DEFAULT_MAX_PIXELS < 40000 * 40000


@pytest.mark.parametrize("make,pixels", [
    (lambda: hi.png_header_only(70000, 30000), 70000 * 30000),
    (lambda: hi.jpeg_declaring(60000, 50000), 60000 * 50000),
    (lambda: hi.gif_declaring(65535, 3), 65535 * 3),
    (lambda: hi.bmp_declaring(50000, 40000), 50000 * 40000),
    (lambda: hi.encode(Image.new("RGB", (13, 7)), "PNG"), 91),
    (lambda: hi.encode(Image.new("RGB", (13, 7)), "JPEG"), 91),
    (lambda: b"GIF", -1), (lambda: b"", -1), (lambda: b"plain text", -1),
])
def test_declared_pixels_reads_headers(make, pixels):
  got = em.declared_pixels(tf.constant(make()))
  assert int(got) == pixels


def test_signatures_refuse_bombs_before_decoding():
  model = su.built(su.TinyPanoptic(4))
  module = em.build_export_module(
      em.ServingParams(task="semantic", max_pixels=5000), model)
  serve = tf.function(module.inference_from_image_bytes)
  rng = np.random.default_rng(2)
  ok = hi.encode(Image.fromarray(_rgb(rng, 50, 60)), "PNG")
  out = serve(tf.constant([ok]))
  assert out["semantic_pred"].shape == (1, 50, 60)
  for bomb in (hi.png_bomb(40000, 40000), hi.jpeg_declaring(60000, 60000),
               hi.encode(Image.fromarray(_rgb(rng, 80, 80)), "PNG")):
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match="refused.*above the limit"):
      serve(tf.constant([ok, bomb]))
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match="unsupported image format"):
    serve(tf.constant([b"not an image"]))


@pytest.mark.slow
def test_predict_tool_survives_a_hostile_folder(tmp_path):
  rng = np.random.default_rng(3)
  model = su.built(su.TinyPanoptic(4))
  module = em.build_export_module(
      em.ServingParams(task="panoptic"), model,
      dict(thing_class_ids=[2, 3], num_classes=4, label_divisor=256,
           ignore_label=255, stuff_area_limit=8, nms_kernel=3,
           keep_k_centers=16))
  export = em.export_saved_model(module, str(tmp_path / "export"),
                                 function_keys=["image_tensor"])
  images = tmp_path / "images"
  for folder in ("a", "b"):
    (images / folder).mkdir(parents=True)
  hostile = hostile_files(rng)
  odd = odd_files(rng)
  for name, (data, _) in {**hostile, **odd}.items():
    (images / "a" / name).write_bytes(data)
  same = {}
  for folder in ("a", "b"):  # The same base name in two folders.
    same[folder] = _rgb(rng, 20, 24)
    Image.fromarray(same[folder]).save(images / folder / "frame.png")
  out = tmp_path / "out"
  command = [sys.executable, su.tool("predict"), f"--saved_model={export}",
             f"--images={images}/a/*", f"--images={images}/b/*",
             f"--output_dir={out}"]
  with open(tmp_path / "stderr.txt", "w") as err:
    returncode, peak = su.run_with_peak_rss(
        command, str(tmp_path / "peak.txt"), stdout=subprocess.DEVNULL,
        stderr=err, cwd=su.REPO, env=su.plain_env())
  stderr = (tmp_path / "stderr.txt").read_text()
  assert returncode == 1, stderr[-3000:]
  assert peak < 2 * GIB, f"peak RSS {peak / GIB:.2f} GiB"
  for name, (_, reason) in hostile.items():
    lines = [l for l in stderr.splitlines()
             if l.strip().startswith(str(images / "a" / name) + ":")]
    assert lines and reason in lines[-1], (name, stderr[-3000:])
  assert f"{len(hostile)} image(s) failed" in stderr
  written = sorted(os.listdir(out / "overlays"))
  assert len(written) == len(odd) + 2
  frames = [n for n in written if n.startswith("frame-")]
  assert len(frames) == 2
  # Every output stays inside the output folder.
  for root, _, files in os.walk(out):
    for name in files:
      real = os.path.realpath(os.path.join(root, name))
      assert real.startswith(os.path.realpath(out) + os.sep)
  panoptic = json.loads((out / "panoptic.json").read_text())
  assert len(panoptic["annotations"]) == len(odd) + 2
  # The two frames got their own predictions (different images).
  overlays = [np.asarray(Image.open(out / "overlays" / n)) for n in frames]
  assert not np.array_equal(overlays[0], overlays[1])
