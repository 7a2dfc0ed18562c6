"""Hostile TFRecord shards: every bad shard named, nothing hangs.

Shards are written here record by record; their corruptions (empty,
truncated, flipped bytes, another schema, not a TFRecord at all) are made
by editing the bytes. The check and the pipeline run in this process (no
tool involved) except for the training run with an empty shard, which is
the tool as users run it.
"""

import io
import os
import struct
import subprocess
import sys
import time
import zlib

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from axial_deeplab_tf.data import input_pipeline
from axial_deeplab_tf.data import shard_check
from axial_deeplab_tf.data import tfrecord_schema as schema
from axial_deeplab_tf.utils import errors

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
CONFIG = input_pipeline.SemanticParserConfig(
    crop_size=(8, 8), min_scale=1.0, max_scale=1.0, flip_probability=0.0,
    num_classes=3)


def _png(array):
  buf = io.BytesIO()
  Image.fromarray(array).save(buf, format="PNG")
  return buf.getvalue()


def _record(k, label_type="semantic"):
  rng = np.random.default_rng(k)
  image = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
  features = schema.image_features(
      encoded=_png(image), image_format="png", height=8, width=8,
      filename=f"{k}.png", source_id=str(k))
  if label_type == "semantic":
    features.update(schema.semantic_features(
        _png(rng.integers(0, 3, (8, 8), dtype=np.uint8))))
  else:
    features.update(schema.classification_features(k % 3, "x"))
  return schema.to_tf_example(features).SerializeToString()


def _write(path, records):
  with tf.io.TFRecordWriter(str(path)) as w:
    for r in records:
      w.write(r)
  return str(path)


def _shards(folder, n=3, per=4, label_type="semantic"):
  return [_write(folder / f"train-{i:05d}-of-{n:05d}.tfrecord",
                 [_record(i * per + j, label_type) for j in range(per)])
          for i in range(n)]


def _record_offsets(path):
  data = open(path, "rb").read()
  offsets, offset = [], 0
  while offset < len(data):
    length = struct.unpack("<Q", data[offset:offset + 8])[0]
    offsets.append((offset, length))
    offset += 12 + length + 4
  return offsets


def _flip(path, record, where="data"):
  offsets = _record_offsets(path)
  offset, length = offsets[record]
  position = offset + (12 + length // 2 if where == "data" else 3)
  data = bytearray(open(path, "rb").read())
  data[position] ^= 0xFF
  open(path, "wb").write(bytes(data))


def _check(pattern, **kw):
  return shard_check.check_shards(pattern, "semantic", **kw)


@pytest.mark.parametrize("corruption,what", [
    ("empty", "empty shard"),
    ("truncated_header", "truncated shard"),
    ("truncated_data", "truncated shard"),
    ("flipped_length", "corrupt shard"),
    ("flipped_first_record", "corrupt first record"),
    ("not_a_tfrecord", "corrupt shard"),
    ("directory", "shard is not a file"),
])
def test_bad_shards_are_named_before_training(tmp_path, corruption, what):
  paths = _shards(tmp_path)
  bad = paths[1]
  if corruption == "empty":
    open(bad, "wb").close()
  elif corruption.startswith("truncated"):
    data = open(bad, "rb").read()
    cut = 6 if corruption == "truncated_header" else len(data) - 20
    open(bad, "wb").write(data[:cut])
  elif corruption == "flipped_length":
    _flip(bad, 2, where="length")
  elif corruption == "flipped_first_record":
    _flip(bad, 0)
  elif corruption == "not_a_tfrecord":
    open(bad, "wb").write(zlib.compress(os.urandom(2000)))
  elif corruption == "directory":
    os.remove(bad)
    os.mkdir(bad)
  start = time.monotonic()
  with pytest.raises(errors.UserError) as info:
    input_pipeline.build_dataset(str(tmp_path / "train-*"), CONFIG, True, 2)
  assert time.monotonic() - start < 30
  assert info.value.what == what, str(info.value)
  assert info.value.path == bad
  assert errors.describe(info.value).startswith(f"{what}, {bad}")


def test_another_schema_and_missing_files_are_named(tmp_path):
  paths = _shards(tmp_path, label_type="classification")
  with pytest.raises(errors.UserError,
                     match="does not hold semantic records") as info:
    _check(str(tmp_path / "train-*"))
  assert info.value.path == paths[0]
  with pytest.raises(errors.UserError, match="matches no file"):
    _check(str(tmp_path / "val-*"))


def test_a_truncated_shard_no_longer_trains_silently(tmp_path):
  # Cut at a record boundary minus a byte: TensorFlow alone would read the
  # whole records and end the shard early, without a word.
  paths = _shards(tmp_path, n=1, per=5)
  offsets = _record_offsets(paths[0])
  open(paths[0], "r+b").truncate(offsets[3][0] + 7)
  with pytest.raises(errors.UserError, match="truncated shard"):
    _check(paths[0])


def test_corrupt_record_in_training_stops_naming_the_shard(tmp_path):
  paths = _shards(tmp_path, n=3, per=4)
  _flip(paths[2], 2)  # Data bytes: only reading the record finds it.
  files = _check(str(tmp_path / "train-*"))  # The header walk passes.
  assert files == paths
  dataset = input_pipeline.build_dataset(
      str(tmp_path / "train-*"), CONFIG, False, 1)
  with pytest.raises(tf.errors.DataLossError) as info:
    for _ in dataset:
      pass
  message = errors.describe(info.value)
  assert message.startswith(f"corrupt record, {paths[2]}, record 2"), message
  assert "skip_corrupt_records" in message


def test_skip_corrupt_records_reads_the_rest_and_says_how_many(
    tmp_path, capsys):
  paths = _shards(tmp_path, n=3, per=4)
  _flip(paths[0], 1)
  dataset = input_pipeline.build_dataset(
      str(tmp_path / "train-*"), CONFIG, False, 1, skip_corrupt_records=True)
  count = sum(1 for _ in dataset)
  out = capsys.readouterr().out
  assert f"corrupt shard {paths[0]}" in out and "first 1 record(s)" in out
  # Shard 0 keeps its record before the corrupt one; the rest are whole.
  assert count == 1 + 4 + 4, count


def test_skip_refuses_data_with_no_readable_record(tmp_path):
  paths = _shards(tmp_path, n=2, per=2)
  _flip(paths[0], 0)
  open(paths[1], "wb").close()
  with pytest.raises(errors.UserError, match="no readable record"):
    _check(str(tmp_path / "train-*"), skip_corrupt_records=True)


@pytest.mark.slow
def test_training_on_an_empty_shard_stops_instead_of_spinning(tmp_path):
  # The reported hang: "step 0/4 ... ETA inf" forever. The tool must end
  # with one error line naming the shard, well before the timeout.
  sys.path.insert(0, REPO)
  from tests.serving import serving_utils  # pylint: disable=g-import-not-at-top
  data = tmp_path / "data"
  data.mkdir()
  params = serving_utils.tiny_experiment(
      data, [{"id": 1, "name": "a", "isthing": 1},
             {"id": 2, "name": "b", "isthing": 0}],
      ["trainer.train_steps = 4", "optimization.warmup_steps = 0"])
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TF_USE_LEGACY_KERAS="1",
             CUDA_VISIBLE_DEVICES="")
  start = time.monotonic()
  result = subprocess.run(
      [sys.executable, os.path.join(REPO, "tools", "train.py"),
       f"--gin_file={serving_utils.QUICKSTART_GIN}", "--mode=train",
       f"--model_dir={tmp_path / 'run'}"] +
      [f"--gin_param={p}" for p in params],
      capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
  elapsed = time.monotonic() - start
  assert result.returncode == 2, result.stderr[-3000:]
  assert "Traceback" not in result.stderr, result.stderr[-3000:]
  lines = [l for l in result.stderr.splitlines() if l.startswith("error:")]
  assert lines == [f"error: empty shard, {data}/train-00000-of-00001.tfrecord"
                   f", the file has 0 bytes (no record); remove it or rerun "
                   f"the converter"], result.stderr[-3000:]
  assert "ETA" not in result.stdout
  print(f"stopped after {elapsed:.1f} s")
