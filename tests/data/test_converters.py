"""In-process tests of the converter library: image checks, panoptic ids,
atomic writing, Cityscapes semantic mode, Mapillary v2.0 categories."""

import io
import json
import os
import signal
import struct
import zlib

import hypothesis
from hypothesis import strategies as st
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from axial_deeplab_tf.data import input_pipeline
from axial_deeplab_tf.data import metadata as metadata_lib
from axial_deeplab_tf.data.converters import cityscapes
from axial_deeplab_tf.data.converters import common
from axial_deeplab_tf.data.converters import mapillary
from axial_deeplab_tf.data.converters import writer
from axial_deeplab_tf.utils import progress


def _save(array, path, fmt, mode=None):
  Image.fromarray(array, mode=mode).save(path, format=fmt)
  return str(path)


def _png_rgb16(path, height, width):
  """A 48-bit RGB PNG written by hand (PIL cannot write one)."""
  def chunk(kind, data):
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
  rows = b"".join(b"\x00" + bytes(range(6 * width)) for _ in range(height))
  data = (b"\x89PNG\r\n\x1a\n"
          + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0,
                                       0))
          + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
  with open(path, "wb") as f:
    f.write(data)
  return str(path)


def test_load_rgb_image_keeps_converts_or_rejects(tmp_path):
  rng = np.random.default_rng(0)
  rgb = rng.integers(0, 256, (9, 11, 3), dtype=np.uint8)
  path = _save(rgb, tmp_path / "a.jpg", "JPEG")
  loaded = common.load_rgb_image(path)
  assert loaded.note is None and loaded.image_format == "jpeg"
  assert (loaded.height, loaded.width) == (9, 11)
  with open(path, "rb") as f:
    assert loaded.encoded == f.read()

  cases = {
      "L": (rng.integers(0, 256, (9, 11), dtype=np.uint8),
            "grayscale image converted to RGB"),
      "RGBA": (rng.integers(0, 256, (9, 11, 4), dtype=np.uint8),
               "RGBA image converted to RGB (alpha dropped)"),
      "LA": (rng.integers(0, 256, (9, 11, 2), dtype=np.uint8),
             "grayscale+alpha image converted to RGB (alpha dropped)"),
  }
  for mode, (array, note) in cases.items():
    p = _save(array, tmp_path / f"{mode}.png", "PNG", mode=mode)
    loaded = common.load_rgb_image(p)
    assert loaded.note == note and loaded.image_format == "png"
    expected = np.asarray(Image.open(p).convert("RGB"))
    np.testing.assert_array_equal(
        np.asarray(Image.open(io.BytesIO(loaded.encoded))), expected)

  gray16 = _save(rng.integers(0, 65535, (5, 6)).astype(np.uint16),
                 tmp_path / "g16.png", "PNG")
  rgb16 = _png_rgb16(tmp_path / "rgb16.png", 5, 6)
  for p in (gray16, rgb16):
    with pytest.raises(common.BadExample) as e:
      common.load_rgb_image(p)
    assert e.value.kind == common.UNSUPPORTED_IMAGE and "16-bit" in str(e.value)

  png = _save(rgb, tmp_path / "t.png", "PNG")
  with open(png, "rb") as f:
    data = f.read()
  truncated = tmp_path / "t2.png"
  truncated.write_bytes(data[:len(data) * 2 // 3])
  garbage = tmp_path / "g.jpg"
  garbage.write_bytes(b"definitely not an image")
  for p in (truncated, garbage):
    with pytest.raises(common.BadExample) as e:
      common.load_rgb_image(str(p))
    assert e.value.kind == common.CORRUPTED_IMAGE
  with pytest.raises(common.BadExample) as e:
    common.load_rgb_image(str(tmp_path / "missing.jpg"))
  assert e.value.kind == common.MISSING_FILE


def _reference_panoptic(ids, segments, cat_to_train, things, divisor, ignore):
  """Pixel-by-pixel loop: the independent reference."""
  info = {s: (c, crowd) for s, c, crowd in segments}
  instance_of = {}
  counters = {}
  for s, c, crowd in segments:
    t = cat_to_train[c]
    if t in things and not crowd:
      counters[t] = counters.get(t, 0) + 1
      instance_of[s] = counters[t]
  out = np.zeros(ids.shape, np.int64)
  for y in range(ids.shape[0]):
    for x in range(ids.shape[1]):
      s = int(ids[y, x])
      if s == 0:
        out[y, x] = ignore * divisor
      else:
        out[y, x] = (cat_to_train[info[s][0]] * divisor
                     + instance_of.get(s, 0))
  return out


@hypothesis.settings(max_examples=30, deadline=None)
@hypothesis.given(seed=st.integers(0, 2**31 - 1),
                  num_segments=st.integers(1, 12))
def test_panoptic_from_segments_matches_loop(seed, num_segments):
  rng = np.random.default_rng(seed)
  seg_ids = [int(v) for v in rng.choice(np.arange(1, 2**24), num_segments,
                                        replace=False)]
  ids = rng.choice(np.array(seg_ids + [0]), size=(7, 9))
  present = set(np.unique(ids)) - {0}
  cat_to_train = {10: 0, 20: 1, 30: 2, 40: 3}
  things = frozenset({1, 3})
  segments = [(s, int(rng.choice([10, 20, 30, 40])), int(rng.uniform() < 0.2))
              for s in seg_ids if s in present]
  got = common.panoptic_from_segments(ids, segments, cat_to_train, things,
                                      1000, 255, "x.png")
  assert got.dtype == np.int32
  np.testing.assert_array_equal(
      got, _reference_panoptic(ids, segments, cat_to_train, things, 1000,
                               255))


@pytest.mark.parametrize("segments, kind", [
    ([(5, 10, 0), (7, 99, 0)], common.UNKNOWN_CATEGORY),
    ([(5, 10, 0), (7, 20, 0), (8, 20, 0)], common.SEGMENT_NOT_IN_PNG),
    ([(5, 10, 0)], common.SEGMENT_NOT_IN_JSON),
    ([(5, 10, 0), (5, 10, 0)], common.BAD_SEGMENTS),
    ([(5, 10, 0), (7, 20, 0), (0, 20, 0)], common.BAD_SEGMENTS),
])
def test_panoptic_from_segments_reports_bad_segments(segments, kind):
  ids = np.array([[5, 5, 7], [0, 7, 7]])
  with pytest.raises(common.BadExample) as e:
    common.panoptic_from_segments(ids, segments, {10: 0, 20: 1},
                                  frozenset({1}), 256, 255, "lbl.png")
  assert e.value.kind == kind and e.value.path == "lbl.png"


def test_too_many_instances_for_divisor():
  ids = np.arange(1, 5).reshape(2, 2)
  segments = [(i, 20, 0) for i in range(1, 5)]
  with pytest.raises(common.BadExample) as e:
    common.panoptic_from_segments(ids, segments, {20: 0}, frozenset({0}), 4,
                                  255, "p.png")
  assert e.value.kind == common.TOO_MANY_INSTANCES
  out = common.panoptic_from_segments(ids, segments, {20: 0}, frozenset({0}),
                                      5, 255, "p.png")
  np.testing.assert_array_equal(out, [[1, 2], [3, 4]])


def _features(task):
  if task == "bad":
    raise common.BadExample("bad.png", common.CORRUPTED_IMAGE, "broken")
  if task == "bug":
    raise RuntimeError("a bug, not bad data")
  return {"image/source_id": str(task).encode(), "n": int(task)}, []


def _meta():
  return metadata_lib.cityscapes("semantic")


def test_writer_round_robin_summary_and_atomicity(tmp_path):
  out = str(tmp_path / "out")
  summary = writer.write_records(
      dataset="t", tasks=[0, 1, "bad", 2, 3], process_fn=_features,
      output_dir=out, split="train", num_shards=2, num_workers=1,
      strict=False, metadata=_meta(), progress_stream=io.StringIO())
  assert summary.num_records == 4 and summary.num_inputs == 5
  assert summary.skipped == [("bad.png", common.CORRUPTED_IMAGE, "broken")]
  values = []
  for shard in summary.shard_paths:
    values.append([tf.train.Example.FromString(r.numpy()).features.feature[
        "n"].int64_list.value[0] for r in tf.data.TFRecordDataset(shard)])
  assert values == [[0, 2], [1, 3]]
  assert "bad.png: corrupted or truncated image: broken" in summary.format()
  assert sorted(os.listdir(out)) == [
      "metadata.json", "summary_train.json", "train-00000-of-00002.tfrecord",
      "train-00001-of-00002.tfrecord"]

  for tasks, error in (([0, "bad", 1], writer.StrictModeError),
                       ([0, "bug", 1], RuntimeError)):
    out2 = str(tmp_path / f"strict_{error.__name__}")
    with pytest.raises(error):
      writer.write_records(
          dataset="t", tasks=tasks, process_fn=_features, output_dir=out2,
          split="train", num_shards=2, num_workers=1, strict=True,
          metadata=_meta(), progress_stream=io.StringIO())
    assert os.listdir(out2) == []  # No shard, no temp file, no metadata.

  # A rerun with another shard count would mix shards: refused.
  with pytest.raises(ValueError, match="another shard count"):
    writer.write_records(
        dataset="t", tasks=[0], process_fn=_features, output_dir=out,
        split="train", num_shards=3, num_workers=1, strict=False,
        metadata=_meta(), progress_stream=io.StringIO())
  with pytest.raises(ValueError, match="num_shards"):
    writer.write_records(
        dataset="t", tasks=[0], process_fn=_features, output_dir=out,
        split="x", num_shards=0, num_workers=1, strict=False,
        metadata=_meta())


def test_progress_bar_prints_to_a_stream():
  stream = io.StringIO()
  bar = progress.ProgressBar(20, "demo", stream=stream, steps=10)
  for _ in range(20):
    bar.update()
  bar.close()
  text = stream.getvalue()
  assert "demo" in text and "20/20" in text and text.count("\n") <= 11


def test_cityscapes_semantic_mode(tmp_path):
  root = tmp_path / "cs"
  rng = np.random.default_rng(5)
  truth = {}
  for city, frame, bad in (("aachen", "aachen_000000_000019", False),
                           ("bonn", "bonn_000001_000019", False),
                           ("bonn", "bonn_000002_000019", True)):
    os.makedirs(root / "leftImg8bit" / "val" / city, exist_ok=True)
    os.makedirs(root / "gtFine" / "val" / city, exist_ok=True)
    image = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
    label = rng.choice(np.array(list(range(19)) + [255], np.uint8), (12, 16))
    if bad:
      label[0, 0] = 19  # Not a trainId.
    _save(image, root / "leftImg8bit" / "val" / city /
          f"{frame}_leftImg8bit.png", "PNG")
    _save(label, root / "gtFine" / "val" / city /
          f"{frame}_gtFine_labelTrainIds.png", "PNG", mode="L")
    truth[frame] = (image, label)
  out = str(tmp_path / "out")
  summary = cityscapes.convert_cityscapes(
      cityscapes_root=str(root), split="val", output_dir=out,
      mode="semantic", num_shards=1, progress_stream=io.StringIO())
  assert summary.num_records == 2
  assert [s[1] for s in summary.skipped] == [common.BAD_LABEL_VALUES]
  assert "bonn_000002_000019" in summary.skipped[0][0]
  decoder = input_pipeline.Decoder("semantic")
  for r in tf.data.TFRecordDataset(summary.shard_paths):
    d = decoder.decode(r)
    image, label = truth[d["source_id"].numpy().decode()]
    np.testing.assert_array_equal(d["image"].numpy(), image)
    np.testing.assert_array_equal(d["semantic"].numpy(), label)


def test_cityscapes_category_map_label_or_train_ids():
  meta = metadata_lib.cityscapes()
  label_ids = [{"id": 26, "name": "car", "isthing": 1},
               {"id": 7, "name": "road", "isthing": 0}]
  assert cityscapes.cityscapes_category_map(label_ids, meta, "j") == {
      26: 13, 7: 0}
  train_ids = [{"id": 13, "name": "car", "isthing": 1},
               {"id": 0, "name": "road", "isthing": 0}]
  assert cityscapes.cityscapes_category_map(train_ids, meta, "j") == {
      13: 13, 0: 0}
  with pytest.raises(ValueError, match="neither"):
    cityscapes.cityscapes_category_map(
        [{"id": 26, "name": "car"}, {"id": 0, "name": "road"}], meta, "j")


def test_mapillary_v20_categories_come_from_the_json(tmp_path):
  root = tmp_path / "vistas"
  pan = root / "validation" / "v2.0" / "panoptic"
  os.makedirs(pan)
  os.makedirs(root / "validation" / "images")
  cats = [{"id": 1, "name": "Bird", "supercategory": "animal--bird",
           "isthing": 1, "color": [165, 42, 42]},
          {"id": 2, "name": "Ambiguous Barrier",
           "supercategory": "construction--barrier--ambiguous", "isthing": 0,
           "color": [250, 170, 31]},
          {"id": 3, "name": "Sky", "supercategory": "nature--sky",
           "isthing": 0, "color": [70, 130, 180]}]
  seg = np.array([[1, 1, 2], [3, 3, 0]])
  _save(np.zeros((2, 3, 3), np.uint8), root / "validation" / "images" /
        "k1.jpg", "JPEG")
  _save(np.stack([seg, 0 * seg, 0 * seg], -1).astype(np.uint8),
        pan / "k1.png", "PNG")
  with open(pan / "panoptic_2020.json", "w") as f:
    json.dump({"images": [{"id": "k1", "file_name": "k1.jpg"}],
               "annotations": [{"image_id": "k1", "file_name": "k1.png",
                                "segments_info": [
                                    {"id": 1, "category_id": 3},
                                    {"id": 2, "category_id": 1},
                                    {"id": 3, "category_id": 1}]}],
               "categories": cats}, f)
  out = str(tmp_path / "out")
  summary = mapillary.convert_mapillary(
      mapillary_root=str(root), split="validation", output_dir=out,
      version="v2.0", num_shards=1, progress_stream=io.StringIO())
  assert summary.num_records == 1
  meta = metadata_lib.DatasetMetadata.load(out)
  assert meta.name == "mapillary_vistas_v2_0"
  assert meta.class_names == ("Bird", "Ambiguous Barrier", "Sky")
  assert meta.thing_class_ids == (0,)
  d = input_pipeline.Decoder("panoptic").decode(
      next(iter(tf.data.TFRecordDataset(summary.shard_paths))))
  np.testing.assert_array_equal(d["panoptic"].numpy(),
                                [[2000, 2000, 1], [2, 2, 255000]])


class _InterruptsInAFinalizer:
  """Sends SIGINT to this thread from __del__: the KeyboardInterrupt that
  Python's handler raises there is swallowed ("Exception ignored in")."""

  def __del__(self):
    signal.raise_signal(signal.SIGINT)
    for _ in range(1000):  # Loop bytecode in the finalizer: the handler
      pass                 # runs here.


def _features_then_lost_interrupt(task):
  if task == 1:
    _InterruptsInAFinalizer()  # Collected at once: __del__ runs now.
  return _features(task)


@pytest.fixture
def python_sigint_handler():
  """Python's own SIGINT handler, whatever this process inherited (a shell
  starts background jobs with SIGINT ignored, and the writer keeps an
  ignored SIGINT ignored, as such jobs expect)."""
  previous = signal.signal(signal.SIGINT, signal.default_int_handler)
  yield
  signal.signal(signal.SIGINT, previous)


def test_an_interrupt_swallowed_by_a_finalizer_still_stops_the_writer(
    tmp_path, python_sigint_handler):  # pylint: disable=redefined-outer-name,unused-argument
  out = str(tmp_path / "out")
  with pytest.raises(KeyboardInterrupt):
    writer.write_records(
        dataset="t", tasks=[0, 1, 2, 3],
        process_fn=_features_then_lost_interrupt,
        output_dir=out, split="train", num_shards=2, num_workers=1,
        strict=False, metadata=_meta(), progress_stream=io.StringIO())
  assert os.listdir(out) == []  # No shard, no temporary, no metadata.
  # The handlers are restored.
  assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
