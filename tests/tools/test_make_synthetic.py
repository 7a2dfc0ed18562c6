"""End-to-end test of tools/make_synthetic_panoptic.py (COCO panoptic files)."""

import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
TOOL = os.path.join(REPO, "tools", "make_synthetic_panoptic.py")


def _run(out, seed):
  result = subprocess.run(
      [sys.executable, TOOL, f"--output_dir={out}", "--num_train=6",
       "--num_val=2", "--image_size=64", "--image_width=80", f"--seed={seed}",
       "--image_format=jpeg"], capture_output=True, text=True, cwd=REPO,
      timeout=300)
  assert result.returncode == 0, result.stderr


def test_writes_coco_panoptic_format_deterministically(tmp_path):
  out = str(tmp_path / "a")
  _run(out, seed=5)
  for split, count in (("train", 6), ("val", 2)):
    data = json.load(open(os.path.join(out, "annotations",
                                       f"panoptic_{split}.json")))
    assert len(data["images"]) == len(data["annotations"]) == count
    cats = {c["id"]: c for c in data["categories"]}
    assert {c["isthing"] for c in cats.values()} == {0, 1}
    for image, ann in zip(data["images"], data["annotations"]):
      assert image["id"] == ann["image_id"]
      pixels = np.asarray(Image.open(os.path.join(out, split,
                                                  image["file_name"])))
      assert pixels.shape == (64, 80, 3)
      rgb = np.asarray(Image.open(os.path.join(
          out, "annotations", f"panoptic_{split}", ann["file_name"])))
      rgb = rgb.astype(np.int64)
      ids = rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]
      listed = {s["id"] for s in ann["segments_info"]}
      assert set(np.unique(ids)) == listed  # Every pixel labelled, no extras.
      for s in ann["segments_info"]:
        assert s["category_id"] in cats
        assert s["iscrowd"] in (0, 1)
        assert s["area"] == int((ids == s["id"]).sum())
        x, y, w, h = s["bbox"]
        rows, cols = np.nonzero(ids == s["id"])
        assert (x, y, w, h) == (cols.min(), rows.min(),
                                cols.max() - cols.min() + 1,
                                rows.max() - rows.min() + 1)
  with open(os.path.join(out, "categories.json")) as f:
    assert json.load(f) == data["categories"]
  # Same seed, same bytes; another seed, other images.
  again = str(tmp_path / "b")
  _run(again, seed=5)
  other = str(tmp_path / "c")
  _run(other, seed=6)
  name = os.path.join("annotations", "panoptic_train", "000003.png")
  with open(os.path.join(out, name), "rb") as f1, \
      open(os.path.join(again, name), "rb") as f2, \
      open(os.path.join(other, name), "rb") as f3:
    a, b, c = f1.read(), f2.read(), f3.read()
  assert a == b and a != c
