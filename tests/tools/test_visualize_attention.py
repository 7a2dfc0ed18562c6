"""End-to-end: tools/visualize_attention.py on a tiny Axial-DeepLab."""

import json

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from axial_deeplab_tf import models
from axial_deeplab_tf.layers.axial_attention import AxialAttention
from tests.serving import serving_utils as su

OVERRIDES = dict(su.TINY_AXIAL_DEEPLAB_OVERRIDES, num_classes=3)
HEAD = 5


@pytest.mark.slow
def test_draws_both_axes_for_a_query_from_a_checkpoint(tmp_path):
  # A checkpoint in which head HEAD of every axial-attention layer has all
  # similarity norms at gamma = beta = 0: its logits are all 0, so it
  # attends uniformly over its span (65 covers these short axes). A random
  # initial model attends unevenly, so the maps show what was loaded.
  model = models.build(su.TINY_AXIAL_DEEPLAB, **OVERRIDES)
  layers = [l for l in model.submodules if isinstance(l, AxialAttention)]
  assert layers
  for layer in layers:
    for table in (layer.similarity_gamma, layer.similarity_beta):
      values = table.numpy()
      values[:, HEAD] = 0.0
      table.assign(values)
  prefix = tf.train.Checkpoint(model=model).write(str(tmp_path / "ckpt"))

  rng = np.random.default_rng(0)
  height, width = 70, 90
  image = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
  Image.fromarray(image).save(tmp_path / "image.png")
  output = tmp_path / "maps" / "attention.png"
  weights = tmp_path / "weights.npz"
  query = (50, 20)
  result = su.run_tool("visualize_attention", [
      f"--model={su.TINY_AXIAL_DEEPLAB}", f"--checkpoint_path={prefix}",
      f"--image={tmp_path / 'image.png'}", "--block=backbone/res5_block1",
      f"--head={HEAD}", f"--query={query[0]},{query[1]}",
      f"--output={output}", f"--save_weights={weights}"
  ] + su.set_flags(OVERRIDES))
  assert result.returncode == 0, result.stderr[-3000:]
  assert "no --checkpoint_path" not in result.stderr
  summary = json.loads(result.stdout.strip().splitlines()[-1])
  assert summary["block"] == "backbone/res5_block1/attention"
  assert summary["head"] == HEAD
  figure = np.asarray(Image.open(output))
  assert figure.shape == (height + 28, 2 * width + 8, 3)
  maps = np.load(weights)
  fh, fw = maps["feature_size"]
  # The last stage runs at output stride 16 on the 70 x 90 input.
  assert (fh, fw) == (5, 6)
  np.testing.assert_array_equal(maps["query_feature"],
                                [query[0] * fh // height,
                                 query[1] * fw // width])
  np.testing.assert_allclose(maps["height_weights"], np.full(fh, 1 / fh),
                             atol=1e-12)
  np.testing.assert_allclose(maps["width_weights"], np.full(fw, 1 / fw),
                             atol=1e-12)
  # Left panel: the query's feature column (image columns 15..29) painted
  # with one color (uniform weights), the rest of the image dimmed.
  left = figure[28:, :width].astype(int)
  band = left[:, 15:30].reshape(-1, 3)
  cross = np.zeros((height, 15), bool)  # The query's marker, 2 px arms.
  cross[query[0] - 2:query[0] + 3, query[1] - 15] = True
  cross[query[0], query[1] - 17:query[1] - 12] = True
  colors = {tuple(c) for c in band[~cross.ravel()]}
  assert len(colors) == 1, colors
  np.testing.assert_array_equal(left[:, :15],
                                np.round(image[:, :15] * 0.35))


def test_usage_errors_exit_with_status_2(tmp_path):
  su.assert_usage_error("visualize_attention", [
      "--model=axial_deeplab_s", f"--image={tmp_path / 'missing.png'}",
      "--query=1,2"], "--output is required")
  su.assert_usage_error("visualize_attention", [
      "--model=axial_deeplab_s", "--gin_file=x.gin", "--list_blocks"],
                        "either --model")
