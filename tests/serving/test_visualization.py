"""Colorized maps and overlays (axial_deeplab_tf/utils/visualization.py)."""

import numpy as np
import pytest
from PIL import Image

from axial_deeplab_tf.utils import visualization as vis

COLORS = [(10, 20, 30), (200, 100, 50), (0, 255, 0)]


def test_colorize_semantic_by_pixel_loop():
  semantic = np.array([[0, 1, 255], [2, 2, 0]])
  out = vis.colorize_semantic(semantic, COLORS, ignore_label=255,
                              void_color=(1, 2, 3))
  for y in range(2):
    for x in range(3):
      c = semantic[y, x]
      want = (1, 2, 3) if c == 255 else COLORS[c]
      assert tuple(out[y, x]) == want
  assert out.dtype == np.uint8
  with pytest.raises(ValueError, match="outside"):
    vis.colorize_semantic(np.array([[3]]), COLORS)
  with pytest.raises(ValueError, match="integer"):
    vis.colorize_semantic(np.zeros((2, 2), np.float32), COLORS)


def test_colorize_panoptic_shades_instances_only():
  div = 100
  panoptic = np.array([[0, 0, 201, 202],
                       [100, 101, 201, 202],
                       [255 * div, 102, 200, 200]])
  out = vis.colorize_panoptic(panoptic, div, COLORS, thing_class_ids=(2,),
                              ignore_label=255)
  assert tuple(out[0, 0]) == COLORS[0]
  # Class 1 is stuff here: all its pixels share the class color.
  assert tuple(out[1, 0]) == tuple(out[1, 1]) == tuple(out[2, 1]) == COLORS[1]
  # Crowd (instance 0) of a thing class keeps the class color.
  assert tuple(out[2, 2]) == COLORS[2]
  assert tuple(out[2, 0]) == (0, 0, 0)
  a, b = tuple(out[0, 2]), tuple(out[0, 3])
  assert a == tuple(out[1, 2]) and b == tuple(out[1, 3])
  assert a != b and COLORS[2] not in (a, b)
  for instance, color in ((1, a), (2, b)):
    for channel, m in enumerate((41, 59, 31)):
      offset = (instance * m) % 97 - 48
      base = COLORS[2][channel]
      want = base + offset if 0 <= base + offset <= 255 else base - offset
      assert color[channel] == want


def test_overlay_formula_and_mask():
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, size=(4, 5, 3), dtype=np.uint8)
  colors = rng.integers(0, 256, size=(4, 5, 3), dtype=np.uint8)
  mask = rng.random((4, 5)) < 0.5
  out = vis.overlay(image, colors, 0.25, mask)
  for y in range(4):
    for x in range(5):
      for c in range(3):
        want = (round(0.75 * int(image[y, x, c]) + 0.25 * int(colors[y, x, c]))
                if mask[y, x] else image[y, x, c])
        assert abs(int(out[y, x, c]) - want) <= 0, (y, x, c)
  with pytest.raises(ValueError, match="alpha"):
    vis.overlay(image, colors, 1.5)
  with pytest.raises(ValueError, match="same shape"):
    vis.overlay(image, colors[:3], 0.5)


def test_segment_boundaries_by_neighbour_loop():
  rng = np.random.default_rng(1)
  ids = rng.integers(0, 3, size=(6, 7))
  edge = vis.segment_boundaries(ids)
  h, w = ids.shape
  for y in range(h):
    for x in range(w):
      neighbours = [(y + dy, x + dx) for dy, dx in ((0, 1), (1, 0), (0, -1),
                                                    (-1, 0))
                    if 0 <= y + dy < h and 0 <= x + dx < w]
      want = any(ids[n] != ids[y, x] for n in neighbours)
      assert edge[y, x] == want, (y, x)


def test_panoptic_overlay_keeps_void_and_draws_outlines():
  image = np.full((6, 6, 3), 100, np.uint8)
  panoptic = np.zeros((6, 6), np.int64)
  panoptic[:, 3:] = 255 * 256
  out = vis.panoptic_overlay(image, panoptic, 256, COLORS, (), 255, alpha=0.5,
                             boundary_color=(255, 255, 255))
  assert tuple(out[0, 0]) == tuple(np.round((np.array([100] * 3) +
                                             COLORS[0]) / 2).astype(int))
  assert tuple(out[0, 5]) == (100, 100, 100)
  assert tuple(out[0, 2]) == tuple(out[0, 3]) == (255, 255, 255)


def test_palette_is_deterministic_and_distinct():
  colors = vis.palette(40)
  assert colors.shape == (40, 3) and colors.dtype == np.uint8
  assert len({tuple(c) for c in colors}) == 40
  np.testing.assert_array_equal(colors, vis.palette(40))


def test_attention_band_marks_the_query_band():
  image = np.full((20, 30, 3), 200, np.uint8)
  weights = np.array([0.0, 0.1, 0.6, 0.3, 0.0])  # 5 feature rows
  out = vis.axis_band_overlay(image, weights, "height", (9, 13), (5, 6))
  # Query column 13 -> feature column 2 -> image columns 10..14.
  changed = np.any(out != np.round(image * 0.35).astype(np.uint8), axis=-1)
  band_cols = np.flatnonzero(changed.all(axis=0))
  np.testing.assert_array_equal(band_cols, np.arange(10, 15))
  # Image rows 8..11 lie in feature row 2 (the largest weight): brightest.
  brightness = out[:, 11].astype(int).sum(-1)
  assert brightness[8:12].min() > brightness[:4].max()
  figure = vis.attention_figure(image, weights, np.ones(6) / 6, (9, 13),
                                (5, 6), title="b h")
  assert figure.shape == (48, 68, 3)
  assert vis.attention_figure(image, weights, np.ones(6) / 6, (9, 13),
                              (5, 6)).shape == (36, 68, 3)
  with pytest.raises(ValueError, match="shape"):
    vis.axis_band_overlay(image, weights, "width", (9, 13), (5, 6))


def test_save_png_writes_atomically(tmp_path):
  labels = np.array([[0, 300], [65535, 7]], np.uint16)
  path = tmp_path / "a" / "labels.png"
  vis.save_png(labels, str(path))
  np.testing.assert_array_equal(np.asarray(Image.open(path)), labels)
  with pytest.raises(ValueError, match="uint8"):
    vis.save_png(np.zeros((2, 2, 3), np.uint16), str(tmp_path / "b.png"))

  def failing(tmp):
    with open(tmp, "w") as f:
      f.write("half")
    raise OSError("disk full")

  with pytest.raises(OSError, match="disk full"):
    vis.write_atomically(str(tmp_path / "a" / "labels.png"), failing)
  # The old file stays whole and no temporary file is left behind.
  np.testing.assert_array_equal(np.asarray(Image.open(path)), labels)
  assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["labels.png"]
