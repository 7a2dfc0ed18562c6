"""End-to-end test of tools/scale_stress_test.py on small context-token data.

Both models are the stress-test convolutional Panoptic-DeepLab (the cheaper
of the two to build and trace): model A untrained, model B with its head
weights set so that it predicts
"ground" everywhere and no instance; its PQ at each resolution is then known
in closed form from the resized labels, which checks the checkpoint restore,
the resizing and the PQ of the tool from outside.
"""

import json
import math
import os
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from axial_deeplab_tf import tasks
from axial_deeplab_tf.data import context_synthetic
from axial_deeplab_tf.data.converters import coco_panoptic

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
TOOL = os.path.join(REPO, "tools", "scale_stress_test.py")
CONV_GIN = os.path.join(REPO, "gin", "stress", "panoptic_deeplab_conv.gin")
DIVISOR = 256
GROUND = 3  # train id: categories are warm, cool, banner, ground.

# The module fixture runs the tool once; with pytest-xdist's
# --dist=loadgroup its tests share one worker instead of each worker
# running the fixture again.
pytestmark = pytest.mark.xdist_group("scale_stress_tool")


def _write_data(root):
  raw = os.path.join(root, "raw")
  context_synthetic.generate_context_panoptic(
      raw, num_train=1, num_val=3, image_size=(40, 48), seed=5)
  out = os.path.join(root, "tfrecord")
  for split in ("train", "val"):
    coco_panoptic.convert_own_panoptic(
        image_dir=os.path.join(raw, split),
        panoptic_json=os.path.join(raw, "annotations",
                                   f"panoptic_{split}.json"),
        panoptic_dir=os.path.join(raw, "annotations", f"panoptic_{split}"),
        output_dir=out, split=split,
        categories_json=os.path.join(raw, "categories.json"),
        dataset_name="context_tokens", label_divisor=DIVISOR, num_shards=1,
        progress_stream=open(os.devnull, "w"))
  return raw, out


def _val_labels(raw):
  """Train-id panoptic labels of the val split, read from the COCO files."""
  with open(os.path.join(raw, "annotations", "panoptic_val.json")) as f:
    data = json.load(f)
  train_id = {c["id"]: i for i, c in enumerate(context_synthetic.CATEGORIES)}
  labels = []
  for ann in data["annotations"]:
    rgb = np.asarray(Image.open(os.path.join(
        raw, "annotations", "panoptic_val", ann["file_name"]))).astype(
            np.int64)
    ids = rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]
    label = np.zeros(ids.shape, np.int64)
    counts = {}
    for seg in ann["segments_info"]:
      cls = train_id[seg["category_id"]]
      thing = context_synthetic.CATEGORIES[cls]["isthing"]
      counts[cls] = counts.get(cls, 0) + 1
      label[ids == seg["id"]] = cls * DIVISOR + (counts[cls] if thing else 0)
    labels.append(label)
  return labels


def _save_checkpoint(gin_file, params, model_dir, all_ground=False):
  config = tasks.experiment.parse_experiment([gin_file], params)
  model = tasks.build_task(config).build_model()
  if all_ground:
    semantic = model.semantic_head._classifier  # pylint: disable=protected-access
    center = model.center_head._classifier  # pylint: disable=protected-access
    semantic.kernel.assign(tf.zeros_like(semantic.kernel))
    semantic.bias.assign(tf.one_hot(GROUND, semantic.bias.shape[0]) * 50.0)
    center.kernel.assign(tf.zeros_like(center.kernel))
    center.bias.assign([-50.0])
  tf.train.Checkpoint(model=model).save(os.path.join(model_dir, "ckpt"))


def _nearest(label, size):
  """Half-pixel nearest sampling written out per axis."""
  rows = [min(int((i + 0.5) * label.shape[0] / size[0]), label.shape[0] - 1)
          for i in range(size[0])]
  cols = [min(int((j + 0.5) * label.shape[1] / size[1]), label.shape[1] - 1)
          for j in range(size[1])]
  return label[np.ix_(rows, cols)]


def _all_ground_pq(labels, size):
  """PQ (%) of predicting one ground segment covering every image."""
  iou_sum, tp, fp, fn = 0.0, 0, 0, 0
  seen_things = set()
  for label in labels:
    gt = _nearest(label, size)
    ground = gt // DIVISOR == GROUND
    seen_things |= {int(c) for c in np.unique(gt // DIVISOR) if c < 2}
    iou = ground.sum() / gt.size  # no void in this data
    if ground.any() and iou > 0.5:
      tp, iou_sum = tp + 1, iou_sum + iou
    else:
      fp, fn = fp + 1, fn + int(ground.any())
  pq_ground = iou_sum / (tp + fp / 2 + fn / 2)
  # Banner and every present token class: only false negatives (PQ 0).
  pq_st = 100 * (pq_ground + 0.0) / 2
  pq_all = 100 * pq_ground / (2 + len(seen_things))
  return pq_all, 0.0, pq_st


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("stress"))
  raw, records = _write_data(root)
  params = [f"train/data.input_path='{records}/train-*'",
            f"eval/data.input_path='{records}/val-*'"]
  _save_checkpoint(CONV_GIN, params, os.path.join(root, "plain"))
  _save_checkpoint(CONV_GIN, params, os.path.join(root, "conv"),
                   all_ground=True)
  return root, raw, params


def _run(args):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  return subprocess.run([sys.executable, TOOL] + args, capture_output=True,
                        text=True, env=env, cwd=REPO, timeout=300)


@pytest.mark.slow
def test_tool_writes_report_plot_and_section(setup):
  root, raw, params = setup
  markdown = os.path.join(root, "BENCHMARKS.md")
  with open(markdown, "w") as f:
    f.write("# Benchmarks\n\n## Layer speed\nkeep me\n")
  out_json = os.path.join(root, "out", "report.json")
  out_png = os.path.join(root, "out", "report.png")
  result = _run(
      [f"--gin_file={CONV_GIN}", f"--model_dir={root}/plain", "--name=A",
       f"--baseline_gin_file={CONV_GIN}", f"--baseline_model_dir={root}/conv",
       "--baseline_name=B", "--resolutions=24,40x48",
       f"--output_json={out_json}", f"--output_png={out_png}",
       f"--markdown_file={markdown}", "--command=bash run.sh"] +
      [f"--gin_param={p}" for p in params])
  assert result.returncode == 0, result.stderr[-3000:]
  with open(out_json) as f:
    report = json.load(f)
  assert report["resolutions"] == ["24", "40x48"]
  assert report["num_images"] == 3 and report["train_resolution"] == 128
  a, b = report["models"]
  assert (a["name"], b["name"]) == ("A", "B")
  assert a["checkpoint"].startswith(os.path.join(root, "plain", "ckpt"))
  assert a["num_params"] == b["num_params"] > 0
  sizes = [(20, 24), (40, 48)]
  for i, size in enumerate(sizes):
    assert b["results"][i]["sizes"] == [list(size)]
    pq, pq_th, pq_st = _all_ground_pq(_val_labels(raw), size)
    assert b["results"][i]["pq"] == pytest.approx(pq, abs=1e-6)
    assert b["results"][i]["pq_th"] == pytest.approx(pq_th, abs=1e-6)
    assert b["results"][i]["pq_st"] == pytest.approx(pq_st, abs=1e-6)
    change = report["relative_change"][i]
    for key in ("pq", "pq_th", "pq_st"):
      va, vb = a["results"][i][key], b["results"][i][key]
      assert va is None or 0.0 <= va <= 100.0
      if va is None or not vb:
        assert change[key] is None
      else:
        assert change[key] == pytest.approx(100 * (va - vb) / vb)
  image = Image.open(out_png)
  assert image.format == "PNG" and image.size[0] > 400 and image.size[1] > 200
  with open(markdown) as f:
    text = f.read()
  assert text.startswith("# Benchmarks\n\n## Layer speed\nkeep me\n")
  assert text.count("## Scale stress test") == 1
  assert "](out/report.png)" in text and "`bash run.sh`" in text
  rows = [l for l in text.splitlines() if l.startswith("| 24 |") or
          l.startswith("| 40x48 |")]
  assert len(rows) == 2
  assert f"{b['results'][0]['pq']:.1f}" in rows[0]
  assert not math.isnan(b["results"][0]["pq"])


@pytest.mark.slow
def test_tool_reports_missing_checkpoint(setup, tmp_path):
  _, _, params = setup
  empty = str(tmp_path / "empty")
  os.makedirs(empty)
  result = _run([f"--gin_file={CONV_GIN}", f"--model_dir={empty}",
                 f"--output_json={tmp_path}/r.json"] +
                [f"--gin_param={p}" for p in params])
  assert result.returncode == 2
  assert "holds no checkpoint" in result.stderr and empty in result.stderr
