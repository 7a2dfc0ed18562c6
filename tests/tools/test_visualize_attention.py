"""End-to-end: tools/visualize_attention.py on a tiny Axial-DeepLab."""

import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
TOOL = os.path.join(REPO, "tools", "visualize_attention.py")


def test_draws_both_axes_for_a_query(tmp_path):
  rng = np.random.default_rng(0)
  height, width = 70, 90
  image = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
  Image.fromarray(image).save(tmp_path / "image.png")
  output = tmp_path / "maps" / "attention.png"
  weights = tmp_path / "weights.npz"
  query = (50, 20)
  result = subprocess.run(
      [sys.executable, TOOL, "--model=axial_deeplab_s",
       "--set=width_multiplier=0.125", "--set=num_classes=3", "--set=depth=26",
       "--set=semantic_channels=16", "--set=instance_channels=16",
       "--set=context_channels=16", "--set=stem_channels=(8, 8, 16)",
       f"--image={tmp_path / 'image.png'}", "--block=-1", "--head=5",
       f"--query={query[0]},{query[1]}", f"--output={output}",
       f"--save_weights={weights}"],
      capture_output=True, text=True, cwd=REPO, timeout=900)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "no --checkpoint_path" in result.stderr
  summary = json.loads(result.stdout.strip().splitlines()[-1])
  assert summary["block"].startswith("backbone/")
  assert summary["block"].endswith("/attention")
  assert summary["head"] == 5
  figure = np.asarray(Image.open(output))
  assert figure.shape == (height + 28, 2 * width + 8, 3)
  maps = np.load(weights)
  fh, fw = maps["feature_size"]
  # The last stage runs at output stride 16 on the 70 x 90 input.
  assert (fh, fw) == (5, 6)
  np.testing.assert_array_equal(maps["query_feature"],
                                [query[0] * fh // height,
                                 query[1] * fw // width])
  assert maps["height_weights"].shape == (fh,)
  assert maps["width_weights"].shape == (fw,)
  for key in ("height_weights", "width_weights"):
    assert abs(maps[key].sum() - 1.0) < 1e-9
    assert np.all(maps[key] > 0)  # Span 65 covers these short axes.


def test_bad_query_exits_with_status_2(tmp_path):
  result = subprocess.run(
      [sys.executable, TOOL, "--model=axial_deeplab_s",
       f"--image={tmp_path / 'missing.png'}", "--query=1,2"],
      capture_output=True, text=True, cwd=REPO, timeout=300)
  assert result.returncode == 2
  assert "--output is required" in result.stderr
