"""End-to-end test of tools/build_cityscapes_data.py (panoptic mode).

The fixture is made the way real Cityscapes panoptic data is: instanceIds
PNGs under gtFine/ converted by cityscapesscripts' own createPanopticImgs
(convert2panoptic), images under leftImg8bit/. One image holds 300 car
instances (more than an 8-bit PNG could). Semantic mode is tested in-process
in tests/data/test_converters.py.
"""

import glob
import os
import subprocess
import sys

import numpy as np
import tensorflow as tf
from cityscapesscripts.helpers import labels as cs_labels
from cityscapesscripts.preparation import createPanopticImgs
from PIL import Image

from axial_deeplab_tf.data import input_pipeline
from axial_deeplab_tf.data import metadata as metadata_lib

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
TOOL = os.path.join(REPO, "tools", "build_cityscapes_data.py")
DIVISOR = 1000
IGNORE = 255


def write_frame(root, split, city, frame, instance_ids, rng):
  h, w = instance_ids.shape
  gt_dir = os.path.join(root, "gtFine", split, city)
  img_dir = os.path.join(root, "leftImg8bit", split, city)
  os.makedirs(gt_dir, exist_ok=True)
  os.makedirs(img_dir, exist_ok=True)
  Image.fromarray(instance_ids.astype(np.uint16)).save(
      os.path.join(gt_dir, f"{frame}_gtFine_instanceIds.png"))
  image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
  path = os.path.join(img_dir, f"{frame}_leftImg8bit.png")
  Image.fromarray(image).save(path)
  return image


def expected_panoptic(instance_ids):
  """Reference from the Cityscapes label definitions, independent of ours."""
  id2label = cs_labels.id2label
  out = np.full(instance_ids.shape, IGNORE * DIVISOR, np.int64)
  counters = {}
  for value in np.unique(instance_ids):  # Sorted, like createPanopticImgs.
    label = id2label[value // 1000 if value >= 1000 else value]
    if label.ignoreInEval:
      continue
    train_id = label.trainId
    if label.hasInstances and value >= 1000:
      counters[train_id] = counters.get(train_id, 0) + 1
      out[instance_ids == value] = train_id * DIVISOR + counters[train_id]
    else:
      out[instance_ids == value] = train_id * DIVISOR
  return out


def test_cityscapes_panoptic_round_trip(tmp_path):
  root = str(tmp_path / "cityscapes")
  rng = np.random.default_rng(1)
  frames = {}
  # Frame 1: road, sky, 300 cars (26xxx), a car group (crowd, 26), persons,
  # and ignored pixels (0 unlabeled, 1 ego vehicle).
  ids = np.full((40, 120), 7, np.int32)
  ids[:8] = 23
  tiles = [(y, x) for y in range(8, 38, 2) for x in range(0, 120, 6)]
  for k, (y, x) in enumerate(tiles[:300]):
    ids[y:y + 2, x:x + 6] = 26000 + 3 * k + 1  # Sparse instance ids.
  ids[38:, :30] = 26
  ids[38:, 30:40] = 24005
  ids[38:, 40:50] = 24002
  ids[38:, 50:60] = 0
  ids[38:, 60:70] = 1
  frames[("frankfurt", "frankfurt_000000_000294")] = ids
  ids2 = np.full((24, 32), 8, np.int32)
  ids2[5:15, 5:20] = 33001
  frames[("lindau", "lindau_000001_000019")] = ids2
  images = {}
  for (city, frame), inst in frames.items():
    images[frame] = (write_frame(root, "val", city, frame, inst, rng), inst)
  createPanopticImgs.convert2panoptic(
      os.path.join(root, "gtFine"), os.path.join(root, "gtFine"),
      useTrainId=False, setNames=["val"])

  out = str(tmp_path / "out")
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  result = subprocess.run(
      [sys.executable, TOOL, f"--cityscapes_root={root}", "--split=val",
       "--mode=panoptic", f"--output_dir={out}", "--num_shards=1",
       "--num_workers=1"], capture_output=True, text=True, env=env, cwd=REPO,
      timeout=300)
  assert result.returncode == 0, result.stderr
  shards = glob.glob(os.path.join(out, "val-*.tfrecord"))
  decoder = input_pipeline.Decoder("panoptic")
  records = [decoder.decode(r) for r in tf.data.TFRecordDataset(shards)]
  assert len(records) == 2
  for d in records:
    frame = d["source_id"].numpy().decode()
    image, inst = images[frame]
    np.testing.assert_array_equal(d["image"].numpy(), image)
    panoptic = d["panoptic"].numpy()
    np.testing.assert_array_equal(panoptic, expected_panoptic(inst))
    assert int(d["label_divisor"]) == DIVISOR
  first = expected_panoptic(frames[("frankfurt", "frankfurt_000000_000294")])
  cars = np.unique(first[first // DIVISOR == 13])
  assert len(cars) == 301  # 300 instances + the crowd group (instance 0).
  meta = metadata_lib.DatasetMetadata.load(out)
  assert meta.thing_class_ids == tuple(range(11, 19))
  assert meta.label_divisor == DIVISOR
