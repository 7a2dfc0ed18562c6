"""End-to-end test of tools/build_imagenet_data.py on a class-folder fixture."""

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
TOOL = os.path.join(REPO, "tools", "build_imagenet_data.py")


def test_imagenet_round_trip(tmp_path):
  root = tmp_path / "train"
  synsets = ["n01443537", "n01440764", "n01484850"]  # Label order of the file.
  with open(tmp_path / "synsets.txt", "w") as f:
    f.write("n01443537 goldfish, Carassius auratus\n"
            "n01440764 tench, Tinca tinca\n"
            "n01484850 great white shark\n")
  rng = np.random.default_rng(4)
  truth = {}
  for label, synset in enumerate(synsets[:2]):
    os.makedirs(root / synset)
    for k in range(3):
      image = rng.integers(0, 256, (20 + k, 30, 3), dtype=np.uint8)
      name = f"{synset}_{k}.JPEG"
      Image.fromarray(image).save(root / synset / name, format="JPEG")
      truth[f"{synset}/{name}"] = (label, None)
  # A CMYK JPEG: converted to RGB and stated.
  cmyk = Image.fromarray(rng.integers(0, 256, (16, 16, 4), dtype=np.uint8),
                         mode="CMYK")
  cmyk.save(root / synsets[0] / "cmyk.JPEG", format="JPEG")
  truth[f"{synsets[0]}/cmyk.JPEG"] = (0, np.asarray(
      Image.open(root / synsets[0] / "cmyk.JPEG").convert("RGB")))
  # A PNG named .JPEG (as in real ImageNet): stored as PNG.
  png = rng.integers(0, 256, (12, 14, 3), dtype=np.uint8)
  Image.fromarray(png).save(root / synsets[1] / "png.JPEG", format="PNG")
  truth[f"{synsets[1]}/png.JPEG"] = (1, png)
  # Bad: corrupted file; and a class folder missing from the synset list.
  with open(root / synsets[1] / "broken.JPEG", "wb") as f:
    f.write(b"\xff\xd8\xff\xe0 not really a jpeg")
  os.makedirs(root / "n99999999")
  Image.fromarray(png).save(root / "n99999999" / "x.JPEG", format="JPEG")

  out = str(tmp_path / "out")
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  result = subprocess.run(
      [sys.executable, TOOL, f"--image_dir={root}",
       f"--synsets_file={tmp_path / 'synsets.txt'}", "--split=train",
       f"--output_dir={out}", "--num_shards=2", "--num_workers=1"],
      capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
  assert result.returncode == 0, result.stderr
  decoder = input_pipeline.Decoder("classification")
  shards = sorted(glob.glob(os.path.join(out, "train-*.tfrecord")))
  seen = set()
  for serialized in tf.data.TFRecordDataset(shards):
    d = decoder.decode(serialized)
    name = d["filename"].numpy().decode()
    label, pixels = truth[name]
    assert int(d["label"]) == label
    example = tf.train.Example.FromString(serialized.numpy())
    assert example.features.feature["image/class/text"].bytes_list.value[
        0].decode() == synsets[label]
    if pixels is None:
      with open(root / name, "rb") as f:
        pixels = tf.io.decode_jpeg(f.read()).numpy()
    np.testing.assert_array_equal(d["image"].numpy(), pixels)
    seen.add(name)
  assert seen == set(truth)
  summary = json.load(open(os.path.join(out, "summary_train.json")))
  kinds = {os.path.relpath(s["path"], root): s["kind"]
           for s in summary["skipped"]}
  assert kinds == {f"{synsets[1]}/broken.JPEG": "corrupted or truncated image",
                   "n99999999": "category id not in metadata"}
  assert [c["note"] for c in summary["converted"]] == [
      "CMYK image converted to RGB"]
  meta = metadata_lib.DatasetMetadata.load(out)
  assert meta.original_category_ids == tuple(synsets)
  assert meta.class_names[1] == "tench, Tinca tinca"
