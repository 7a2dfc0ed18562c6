"""End-to-end test of tools/build_panoptic_data.py on own data in COCO format.

The data is the synthetic quickstart dataset (real COCO panoptic files) with
its own category list; an extra category list in a different order checks
that train ids follow the list given by the user.
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
from axial_deeplab_tf.data import synthetic

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
TOOL = os.path.join(REPO, "tools", "build_panoptic_data.py")
DIVISOR = 100
IGNORE = 254


def reference_panoptic(png_path, segments_info, categories):
  """Train id = position in the user's list; instances counted per class."""
  rgb = np.asarray(Image.open(png_path)).astype(np.int64)
  ids = rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]
  position = {c["id"]: i for i, c in enumerate(categories)}
  isthing = {c["id"]: c["isthing"] for c in categories}
  out = np.full(ids.shape, IGNORE * DIVISOR, np.int64)
  counters = {}
  for s in segments_info:
    t = position[s["category_id"]]
    if isthing[s["category_id"]] and not s["iscrowd"]:
      counters[t] = counters.get(t, 0) + 1
      out[ids == s["id"]] = t * DIVISOR + counters[t]
    else:
      out[ids == s["id"]] = t * DIVISOR
  return out


def test_own_panoptic_data_round_trip(tmp_path):
  root = str(tmp_path / "shapes")
  paths = synthetic.generate_synthetic_panoptic(
      root, num_train=5, num_val=0, image_size=(48, 56), seed=11,
      crowd_probability=0.5)
  # The user's list: stuff first, then things, other than the JSON's order.
  categories = [dict(c) for c in synthetic.CATEGORIES]
  categories = categories[3:] + categories[:3]
  cats_path = str(tmp_path / "my_categories.json")
  with open(cats_path, "w") as f:
    json.dump(categories, f)
  split = paths["train"]
  out = str(tmp_path / "out")
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  result = subprocess.run(
      [sys.executable, TOOL, f"--image_dir={split['image_dir']}",
       f"--panoptic_json={split['panoptic_json']}",
       f"--panoptic_dir={split['panoptic_dir']}",
       f"--categories_json={cats_path}", "--split=train",
       "--dataset_name=shapes", f"--label_divisor={DIVISOR}",
       f"--ignore_label={IGNORE}", f"--output_dir={out}", "--num_shards=1",
       "--num_workers=1"], capture_output=True, text=True, env=env, cwd=REPO,
      timeout=300)
  assert result.returncode == 0, result.stderr

  data = json.load(open(split["panoptic_json"]))
  anns = {a["image_id"]: a for a in data["annotations"]}
  decoder = input_pipeline.Decoder("panoptic")
  shards = glob.glob(os.path.join(out, "train-*.tfrecord"))
  records = [decoder.decode(r) for r in tf.data.TFRecordDataset(shards)]
  assert len(records) == 5
  crowd_seen = False
  for d in records:
    ann = anns[int(d["source_id"].numpy())]
    expected = reference_panoptic(
        os.path.join(split["panoptic_dir"], ann["file_name"]),
        ann["segments_info"], categories)
    np.testing.assert_array_equal(d["panoptic"].numpy(), expected)
    image_file = os.path.join(split["image_dir"],
                              os.path.basename(d["filename"].numpy().decode()))
    np.testing.assert_array_equal(d["image"].numpy(),
                                  np.asarray(Image.open(image_file)))
    crowd_seen |= any(s["iscrowd"] for s in ann["segments_info"])
  assert crowd_seen
  meta = metadata_lib.DatasetMetadata.load(out)
  assert meta.name == "shapes"
  assert meta.class_names == ("sky", "grass", "road", "circle", "square",
                              "triangle")
  assert meta.thing_class_ids == (3, 4, 5)
  assert (meta.label_divisor, meta.ignore_label) == (DIVISOR, IGNORE)
