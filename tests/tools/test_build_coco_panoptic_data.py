"""End-to-end test of tools/build_coco_panoptic_data.py on COCO-format data.

The fixture is written in COCO panoptic's on-disk layout (val2017/*.jpg,
annotations/panoptic_val2017.json, annotations/panoptic_val2017/*.png) with
good images (one with 300 instances, one grayscale, one RGBA) and one bad
file of every kind the converter must report. Records are read back with the
training decoder and compared with labels computed here from the fixture.
"""

import glob
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from axial_deeplab_tf.data import input_pipeline
from axial_deeplab_tf.data import metadata as metadata_lib

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
TOOL = os.path.join(REPO, "tools", "build_coco_panoptic_data.py")
DIVISOR = 256
IGNORE = 255
# COCO category id -> (name, isthing, expected train id). Train ids follow
# the sorted COCO panoptic category ids: 80 things, then stuff in id order
# (20 stuff ids are below 149 "road", 39 below 187 "sky-other-merged").
CATEGORIES = {1: ("person", 1, 0), 2: ("bicycle", 1, 1), 3: ("car", 1, 2),
              149: ("road", 0, 100), 187: ("sky-other-merged", 0, 119)}


def _rgb(segment_ids):
  ids = segment_ids.astype(np.int64)
  return np.stack([ids % 256, ids // 256 % 256, ids // 65536],
                  -1).astype(np.uint8)


def _save(array, path, fmt, **kwargs):
  Image.fromarray(array).save(path, format=fmt, **kwargs)


class _Fixture:
  """Builds the dataset and remembers the expected panoptic labels."""

  def __init__(self, root):
    self.root = root
    self.image_dir = os.path.join(root, "val2017")
    self.png_dir = os.path.join(root, "annotations", "panoptic_val2017")
    os.makedirs(self.image_dir)
    os.makedirs(self.png_dir)
    self.rng = np.random.default_rng(0)
    self.images, self.annotations = [], []
    self.expected = {}  # image file name -> (image array, panoptic)
    self.bad = {}  # path -> expected kind

  def add(self, stem, image, image_fmt, segment_ids, segments, ext,
          json_size=None, png_segment_ids=None):
    image_id = len(self.images) + 1
    name = f"{stem}.{ext}"
    h, w = segment_ids.shape
    if json_size:
      h, w = json_size
    self.images.append({"id": image_id, "file_name": name, "height": h,
                        "width": w})
    self.annotations.append({
        "image_id": image_id, "file_name": f"{stem}.png",
        "segments_info": [{"id": s, "category_id": c, "iscrowd": crowd,
                           "area": 1, "bbox": [0, 0, 1, 1]}
                          for s, c, crowd in segments]})
    if image is not None:
      _save(image, os.path.join(self.image_dir, name), image_fmt)
    ids = segment_ids if png_segment_ids is None else png_segment_ids
    _save(_rgb(ids), os.path.join(self.png_dir, f"{stem}.png"), "PNG")
    return os.path.join(self.image_dir, name)

  def write_json(self):
    cats = [{"id": k, "name": v[0], "isthing": v[1], "supercategory": "x"}
            for k, v in CATEGORIES.items()]
    with open(os.path.join(self.root, "annotations",
                           "panoptic_val2017.json"), "w") as f:
      json.dump({"images": self.images, "annotations": self.annotations,
                 "categories": cats}, f)


def expected_panoptic(segment_ids, segments):
  """Independent reference: per-class instance counters in JSON order."""
  out = np.full(segment_ids.shape, IGNORE * DIVISOR, np.int64)
  counters = {}
  for seg_id, cat, crowd in segments:
    name, isthing, train_id = CATEGORIES[cat]
    if isthing and not crowd:
      counters[train_id] = counters.get(train_id, 0) + 1
      value = train_id * DIVISOR + counters[train_id]
    else:
      value = train_id * DIVISOR
    out[segment_ids == seg_id] = value
  return out


def random_ids(rng, n):
  return [int(v) for v in rng.choice(np.arange(1, 2**24), n, replace=False)]


def build_fixture(root):
  fx = _Fixture(root)
  rng = fx.rng
  # Image "many": 300 instances (150 person, 150 car) in 4x2-pixel tiles, a
  # crowd region, two stuff classes and some void.
  h, w = 48, 100
  ids = random_ids(rng, 304)
  seg = np.zeros((h, w), np.int64)
  segments = [(ids[0], 187, 0), (ids[1], 149, 0)]
  seg[:24] = ids[0]
  seg[24:] = ids[1]
  tiles = [(y, x) for y in range(0, 40, 4) for x in range(0, 100, 2)]
  order = rng.permutation(len(tiles))[:300]
  for k, t in enumerate(order):
    y, x = tiles[t]
    seg[y:y + 4, x:x + 2] = ids[2 + k]
    segments.append((ids[2 + k], 1 if k % 2 == 0 else 3, 0))
  seg[40:44, :10] = ids[302]
  segments.append((ids[302], 1, 1))  # Crowd person.
  seg[44:, :5] = 0  # Void.
  image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
  path = fx.add("000000000001", image, "JPEG", seg, segments, "jpg")
  fx.expected[path] = ("jpeg", expected_panoptic(seg, segments), None)

  def small(stem, image, fmt, ext, **kw):
    sids = random_ids(rng, 3)
    s = np.full((32, 40), sids[0], np.int64)
    s[5:15, 5:15] = sids[1]
    s[20:30, 22:35] = sids[2]
    segs = [(sids[0], 149, 0), (sids[1], 3, 0), (sids[2], 2, 0)]
    return fx.add(stem, image, fmt, s, segs, ext, **kw), s, segs

  gray = rng.integers(0, 256, (32, 40), dtype=np.uint8)
  path, s, segs = small("000000000002", gray, "JPEG", "jpg")
  fx.expected[path] = ("converted", expected_panoptic(s, segs),
                       "grayscale image converted to RGB")
  rgba = rng.integers(0, 256, (32, 40, 4), dtype=np.uint8)
  path, s, segs = small("000000000003", rgba, "PNG", "png")
  fx.expected[path] = ("converted", expected_panoptic(s, segs),
                       "RGBA image converted to RGB (alpha dropped)")

  # Bad: truncated JPEG.
  path, _, _ = small("000000000004", image[:32, :40], "JPEG", "jpg")
  with open(path, "rb") as f:
    data = f.read()
  with open(path, "wb") as f:
    f.write(data[:len(data) // 2])
  fx.bad[path] = "corrupted or truncated image"
  # Bad: image 32x41 but label 32x40 (JSON states the label size).
  sids = random_ids(rng, 1)
  p = fx.add("000000000005", None, None, np.full((32, 40), sids[0]),
             [(sids[0], 149, 0)], "jpg")
  _save(rng.integers(0, 256, (32, 41, 3), dtype=np.uint8), p, "JPEG")
  fx.bad[p] = "image/label size mismatch"
  # Bad: category 12 does not exist in COCO panoptic.
  sids = random_ids(rng, 2)
  s = np.full((32, 40), sids[0])
  s[:4] = sids[1]
  fx.add("000000000006", gray, "JPEG", s, [(sids[0], 149, 0),
                                            (sids[1], 12, 0)], "jpg")
  fx.bad[os.path.join(fx.png_dir, "000000000006.png")] = (
      "category id not in metadata")
  # Bad: a segment listed in the JSON has no pixel in the PNG.
  sids = random_ids(rng, 2)
  fx.add("000000000007", gray, "JPEG", np.full((32, 40), sids[0]),
         [(sids[0], 149, 0), (sids[1], 1, 0)], "jpg")
  fx.bad[os.path.join(fx.png_dir, "000000000007.png")] = (
      "segment in JSON absent from PNG")
  # Bad: 16-bit PNG image.
  sids = random_ids(rng, 1)
  p = fx.add("000000000008", None, None, np.full((32, 40), sids[0]),
             [(sids[0], 149, 0)], "png")
  Image.fromarray(rng.integers(0, 65535, (32, 40)).astype(np.uint16)).save(p)
  fx.bad[p] = "unsupported image"
  fx.write_json()
  return fx


def run_tool(args):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  return subprocess.run([sys.executable, TOOL] + args, capture_output=True,
                        text=True, env=env, cwd=REPO, timeout=300)


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
  return build_fixture(str(tmp_path_factory.mktemp("coco")))


def test_converts_good_images_exactly_and_reports_bad_ones(fixture, tmp_path):
  out = str(tmp_path / "out")
  result = run_tool([f"--coco_root={fixture.root}", "--split=val2017",
                     f"--output_dir={out}", "--num_shards=2",
                     "--num_workers=2"])
  assert result.returncode == 0, result.stderr
  shards = sorted(glob.glob(os.path.join(out, "val2017-*-of-00002.tfrecord")))
  assert len(shards) == 2
  assert not glob.glob(os.path.join(out, "*.tmp-*"))

  decoder = input_pipeline.Decoder("panoptic")
  seen = {}
  for serialized in tf.data.TFRecordDataset(shards):
    d = decoder.decode(serialized)
    seen[d["filename"].numpy().decode()] = (d, serialized)
  assert sorted(seen) == ["val2017/000000000001.jpg",
                          "val2017/000000000002.jpg",
                          "val2017/000000000003.png"]
  for path, (kind, panoptic, _) in fixture.expected.items():
    d, serialized = seen[os.path.relpath(path, fixture.root)]
    np.testing.assert_array_equal(d["panoptic"].numpy(), panoptic)
    assert int(d["label_divisor"]) == DIVISOR
    source = Image.open(path)
    expected_rgb = np.asarray(source.convert("RGB"))
    example = tf.train.Example.FromString(serialized.numpy())
    encoded = example.features.feature["image/encoded"].bytes_list.value[0]
    if kind == "jpeg":
      # RGB JPEGs are stored unchanged.
      with open(path, "rb") as f:
        assert encoded == f.read()
    else:
      np.testing.assert_array_equal(
          np.asarray(Image.open(io.BytesIO(encoded))), expected_rgb)
      np.testing.assert_array_equal(d["image"].numpy(), expected_rgb)
  many = fixture.expected[os.path.join(fixture.image_dir,
                                       "000000000001.jpg")][1]
  assert len(np.unique(many[many % DIVISOR > 0])) == 300

  summary = json.load(open(os.path.join(out, "summary_val2017.json")))
  assert summary["num_records"] == 3
  skipped = {s["path"]: s["kind"] for s in summary["skipped"]}
  assert skipped == fixture.bad
  converted = {c["path"]: c["note"] for c in summary["converted"]}
  assert converted == {p: v[2] for p, v in fixture.expected.items() if v[2]}
  for path in fixture.bad:
    assert path in result.stderr  # Reported with path and reason.
  meta = metadata_lib.DatasetMetadata.load(out)
  assert meta.num_classes == 133 and len(meta.thing_class_ids) == 80


def test_strict_stops_without_writing_a_shard(fixture, tmp_path):
  out = str(tmp_path / "strict")
  result = run_tool([f"--coco_root={fixture.root}", "--split=val2017",
                     f"--output_dir={out}", "--num_shards=2",
                     "--num_workers=1", "--strict"])
  assert result.returncode != 0
  assert "strict mode" in result.stderr
  assert any(p in result.stderr for p in fixture.bad)
  leftovers = os.listdir(out) if os.path.isdir(out) else []
  assert not [f for f in leftovers if ".tfrecord" in f], leftovers
