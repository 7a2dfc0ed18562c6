"""End-to-end test of tools/build_ade20k_data.py on an ADE20K tree."""

import glob
import json
import os
import subprocess
import sys

import numpy as np
import tensorflow as tf
from PIL import Image

from axial_deeplab_tf.data import input_pipeline
from axial_deeplab_tf.data import metadata as metadata_lib

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
TOOL = os.path.join(REPO, "tools", "build_ade20k_data.py")


def test_ade20k_round_trip_and_bad_labels(tmp_path):
  root = str(tmp_path / "ADEChallengeData2016")
  img_dir = os.path.join(root, "images", "validation")
  ann_dir = os.path.join(root, "annotations", "validation")
  os.makedirs(img_dir)
  os.makedirs(ann_dir)
  rng = np.random.default_rng(3)
  truth = {}
  for i in range(1, 4):
    stem = f"ADE_val_{i:08d}"
    h, w = 30 + i, 44 - i
    label = rng.integers(0, 151, (h, w)).astype(np.uint8)
    label[0, :3] = [0, 1, 150]
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(image).save(os.path.join(img_dir, f"{stem}.jpg"))
    Image.fromarray(label, mode="L").save(os.path.join(ann_dir, f"{stem}.png"))
    # Reference mapping written out explicitly: 0 -> 255, v -> v - 1.
    expected = np.where(label == 0, 255, label.astype(np.int64) - 1)
    truth[stem] = expected
  # Bad: label value 151 is not an ADE20K class.
  bad_label = np.ones((20, 20), np.uint8)
  bad_label[3, 3] = 151
  Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(
      os.path.join(img_dir, "ADE_val_00000009.jpg"))
  Image.fromarray(bad_label, mode="L").save(
      os.path.join(ann_dir, "ADE_val_00000009.png"))
  # Bad: missing annotation.
  Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(
      os.path.join(img_dir, "ADE_val_00000010.jpg"))

  out = str(tmp_path / "out")
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  result = subprocess.run(
      [sys.executable, TOOL, f"--ade20k_root={root}", "--split=validation",
       f"--output_dir={out}", "--num_shards=1", "--num_workers=1"],
      capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
  assert result.returncode == 0, result.stderr
  decoder = input_pipeline.Decoder("semantic")
  shards = glob.glob(os.path.join(out, "validation-*.tfrecord"))
  records = [decoder.decode(r) for r in tf.data.TFRecordDataset(shards)]
  assert sorted(r["source_id"].numpy().decode() for r in records) == sorted(
      truth)
  for d in records:
    stem = d["source_id"].numpy().decode()
    np.testing.assert_array_equal(d["semantic"].numpy(), truth[stem])
    with open(os.path.join(img_dir, f"{stem}.jpg"), "rb") as f:
      np.testing.assert_array_equal(d["image"].numpy(),
                                    tf.io.decode_jpeg(f.read()).numpy())
  summary = json.load(open(os.path.join(out, "summary_validation.json")))
  kinds = {os.path.basename(s["path"]): s["kind"] for s in summary["skipped"]}
  assert kinds == {"ADE_val_00000009.png": "label value not in metadata",
                   "ADE_val_00000010.png": "missing file"}
  meta = metadata_lib.DatasetMetadata.load(out)
  assert meta.num_classes == 150 and meta.ignore_label == 255
  assert meta.class_names[0] == "wall" and meta.class_names[-1] == "flag"
