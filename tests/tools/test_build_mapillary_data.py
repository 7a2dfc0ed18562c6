"""End-to-end test of tools/build_mapillary_data.py (v1.2 category set).

Fixture in the Mapillary Vistas v2.0 release layout: training/images/*.jpg
and training/v1.2/panoptic/{panoptic_2018.json, *.png} (COCO panoptic
format, category ids 1..65). The v2.0 category set is tested in-process in
tests/data/test_converters.py.
"""

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
TOOL = os.path.join(REPO, "tools", "build_mapillary_data.py")
DIVISOR = 1000
IGNORE = 255
# Published v1.2 panoptic categories used here: id -> (name, label, isthing).
CATEGORIES = {
    14: ("Road", "construction--flat--road", 0),
    20: ("Person", "human--person", 1),
    28: ("Sky", "nature--sky", 0),
    56: ("Car", "object--vehicle--car", 1),
}


def expected(segment_ids, segments):
  # Train id = category id - 1 (ids 1..65 are contiguous in v1.2).
  out = np.full(segment_ids.shape, IGNORE * DIVISOR, np.int64)
  counters = {}
  for seg_id, cat, crowd in segments:
    train_id = cat - 1
    if CATEGORIES[cat][2] and not crowd:
      counters[train_id] = counters.get(train_id, 0) + 1
      out[segment_ids == seg_id] = train_id * DIVISOR + counters[train_id]
    else:
      out[segment_ids == seg_id] = train_id * DIVISOR
  return out


def test_mapillary_v12_round_trip(tmp_path):
  root = str(tmp_path / "vistas")
  img_dir = os.path.join(root, "training", "images")
  pan_dir = os.path.join(root, "training", "v1.2", "panoptic")
  os.makedirs(img_dir)
  os.makedirs(pan_dir)
  rng = np.random.default_rng(2)
  images, annotations, truth = [], [], {}
  for n, key in enumerate(["--aXk2b", "Zz9_q1"]):
    h, w = 36, 52
    seg = np.full((h, w), 7, np.int64)
    segments = [(7, 14, 0)]
    seg[:10] = 9
    segments.append((9, 28, 0))
    next_id = 1000
    for k in range(12 + 5 * n):
      y, x = 12 + (k // 8) * 6, (k % 8) * 6
      seg[y:y + 5, x:x + 5] = next_id
      segments.append((next_id, 20 if k % 3 else 56, 0))
      next_id += 17
    seg[30:, 40:] = next_id
    segments.append((next_id, 56, 1))  # Crowd of cars.
    seg[30:, :4] = 0  # Unlabeled.
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(image).save(os.path.join(img_dir, f"{key}.jpg"),
                                quality=90)
    rgb = np.stack([seg % 256, seg // 256 % 256, seg // 65536], -1)
    Image.fromarray(rgb.astype(np.uint8)).save(
        os.path.join(pan_dir, f"{key}.png"))
    images.append({"id": key, "file_name": f"{key}.jpg", "height": h,
                   "width": w})
    annotations.append({"image_id": key, "file_name": f"{key}.png",
                        "segments_info": [
                            {"id": s, "category_id": c, "iscrowd": cr}
                            for s, c, cr in segments]})
    truth[key] = expected(seg, segments)
  categories = [{"id": k, "name": v[0], "supercategory": v[1], "isthing": v[2],
                 "color": [1, 2, 3]} for k, v in CATEGORIES.items()]
  with open(os.path.join(pan_dir, "panoptic_2018.json"), "w") as f:
    json.dump({"images": images, "annotations": annotations,
               "categories": categories}, f)

  out = str(tmp_path / "out")
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  result = subprocess.run(
      [sys.executable, TOOL, f"--mapillary_root={root}", "--split=training",
       "--version=v1.2", f"--output_dir={out}", "--num_shards=2",
       "--num_workers=1"], capture_output=True, text=True, env=env, cwd=REPO,
      timeout=300)
  assert result.returncode == 0, result.stderr
  shards = sorted(glob.glob(os.path.join(out, "training-*.tfrecord")))
  assert len(shards) == 2
  decoder = input_pipeline.Decoder("panoptic")
  records = [decoder.decode(r) for r in tf.data.TFRecordDataset(shards)]
  assert sorted(r["source_id"].numpy().decode() for r in records) == sorted(
      truth)
  for d in records:
    key = d["source_id"].numpy().decode()
    np.testing.assert_array_equal(d["panoptic"].numpy(), truth[key])
    with open(os.path.join(img_dir, f"{key}.jpg"), "rb") as f:
      original = tf.io.decode_jpeg(f.read()).numpy()
    np.testing.assert_array_equal(d["image"].numpy(), original)
  meta = metadata_lib.DatasetMetadata.load(out)
  assert meta.name == "mapillary_vistas_v1_2"
  assert meta.num_classes == 65 and len(meta.thing_class_ids) == 37
