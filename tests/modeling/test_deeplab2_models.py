"""deeplab2 encoders and Panoptic-DeepLab: parameter counts and layer math.

Parameter counts are compared with those of deeplab2's own models built
from its source at the published configurations (recorded by
scripts/fixtures/make_deeplab2_fixtures.py); outputs against deeplab2's
code are in tests/importers/test_deeplab2.py.
"""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from axial_deeplab_tf.modeling import deeplab2_panoptic
from axial_deeplab_tf.modeling import registry
from axial_deeplab_tf.modeling.backbones import deeplab2_resnet

COUNTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))), "fixtures", "deeplab2", "parameter_counts.json")


def _published_counts():
  with open(COUNTS) as f:
    return json.load(f)


def test_every_published_configuration_has_a_reference_count():
  names = set(deeplab2_panoptic.PUBLISHED) | set(
      deeplab2_panoptic.PUBLISHED_ENCODERS)
  assert names == set(_published_counts())


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(
    set(deeplab2_panoptic.PUBLISHED) | set(
        deeplab2_panoptic.PUBLISHED_ENCODERS)))
def test_parameter_count_equals_deeplab2(name):
  model = registry.build(name)
  if name in deeplab2_panoptic.PUBLISHED_ENCODERS:
    count = model.backbone.count_params()  # deeplab2 has no classifier.
  else:
    count = model.count_params()
  assert count == _published_counts()[name]


def test_strided_conv_pads_symmetrically():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(1, 8, 9, 2)).astype(np.float32)
  layer = deeplab2_resnet.ConvBN(3, 3, strides=2, use_bn=False, name="c")
  out = layer(x).numpy()
  kernel = layer._conv.kernel.numpy()  # pylint: disable=protected-access
  padded = np.pad(x, [(0, 0), (1, 1), (1, 1), (0, 0)])
  expected = np.zeros((1, 4, 5, 3), np.float32)
  for i in range(4):
    for j in range(5):
      patch = padded[0, 2 * i:2 * i + 3, 2 * j:2 * j + 3]
      expected[0, i, j] = np.einsum("hwc,hwco->o", patch, kernel)
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_relative_embedding_rows_are_offsets_from_a_509_row_table():
  layer = deeplab2_resnet.RelativeEmbedding(4, name="rpe")
  table = layer(5).numpy()
  rows = layer._embeddings.numpy()  # pylint: disable=protected-access
  assert rows.shape == (509, 4)
  for l in range(5):
    for m in range(5):
      np.testing.assert_array_equal(table[l, m], rows[m - l + 254])


def test_axial_attention_matches_numpy_at_inference():
  rng = np.random.default_rng(1)
  layer = deeplab2_resnet.AxialAttention1D(8, 8, 2, name="a")
  x = rng.normal(size=(2, 6, 5)).astype(np.float32)
  layer(x)
  for v in layer.variables:
    value = rng.uniform(0.5, 1.5, v.shape) if "variance" in v.name or (
        "gamma" in v.name) else rng.normal(0, 0.5, v.shape)
    v.assign(value.astype(np.float32))
  out = layer(x, training=False).numpy()

  def bn(t, norm):
    return ((t - norm.moving_mean.numpy()) /
            np.sqrt(norm.moving_variance.numpy() + 1e-3) *
            norm.gamma.numpy() + norm.beta.numpy())
  # pylint: disable=protected-access
  qkv = bn(x @ layer.qkv_kernel.numpy(), layer._batch_norm_qkv)
  q, k, v = qkv[..., :8], qkv[..., 8:16], qkv[..., 16:]
  table = lambda rpe: rpe._embeddings.numpy()
  expected = np.zeros((2, 6, 8), np.float32)
  sim = layer._batch_norm_similarity
  ret = layer._batch_norm_retrieved_output
  for b in range(2):
    for h in range(2):
      sl = slice(4 * h, 4 * h + 4)
      logits = np.zeros((3, 6, 6))
      for l in range(6):
        for m in range(6):
          logits[0, l, m] = q[b, l, sl] @ k[b, m, sl]
          logits[1, l, m] = q[b, l, sl] @ table(layer._query_rpe)[m - l + 254]
          logits[2, l, m] = k[b, m, sl] @ table(layer._key_rpe)[m - l + 254]
      for t in range(3):
        logits[t] = ((logits[t] - sim.moving_mean.numpy()[t, 0, h, 0, 0]) /
                     np.sqrt(sim.moving_variance.numpy()[t, 0, h, 0, 0] +
                             1e-3) * sim.gamma.numpy()[t, 0, h, 0, 0] +
                     sim.beta.numpy()[t, 0, h, 0, 0])
      a = np.exp(logits.sum(0) - logits.sum(0).max(-1, keepdims=True))
      a /= a.sum(-1, keepdims=True)
      content = a @ v[b, :, sl]
      positional = np.stack([
          sum(a[l, m] * table(layer._value_rpe)[m - l + 254]
              for m in range(6)) for l in range(6)])
      for t, term in enumerate((content, positional)):
        p = lambda w: w.numpy()[t, 0, h, 0, :]  # pylint: disable=cell-var-from-loop
        expected[b, :, sl] += ((term - p(ret.moving_mean)) /
                               np.sqrt(p(ret.moving_variance) + 1e-3) *
                               p(ret.gamma) + p(ret.beta))
  np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)


def test_drop_path_keep_probabilities_follow_the_linear_schedule():
  encoder = deeplab2_resnet.build_deeplab2_encoder(
      "wide_resnet41", output_stride=16, drop_path_keep_prob=0.8,
      drop_path_schedule="linear", width_multiplier=0.0625,
      stem_width_multiplier=0.0625)
  # pylint: disable=protected-access
  probs = {i: getattr(encoder, f"_stage{i}").block_keep_probs
           for i in range(1, 6)}
  # A block at stride s (before its stage strides) is in stage log2(s) - 1
  # of 4; keep = 1 - 0.2 * stage / 4 from stride 4 on.
  assert probs[1] == [1.0] * 3
  assert probs[2] == [1.0] + [1.0 - 0.2 * 1 / 4] * 2
  assert probs[3] == pytest.approx([0.95] + [0.9] * 5)
  assert probs[5] == pytest.approx([0.85] + [0.8] * 2)


def test_bad_arguments_name_the_argument():
  with pytest.raises(ValueError, match="backbone_type"):
    deeplab2_resnet.DeepLab2ResNet(backbone_type="vgg")
  with pytest.raises(ValueError, match="output_stride"):
    deeplab2_resnet.DeepLab2ResNet(output_stride=12)
  with pytest.raises(ValueError, match="encoder"):
    deeplab2_resnet.build_deeplab2_encoder("resnet101")
  with pytest.raises(ValueError, match="num_classes"):
    deeplab2_panoptic.build_deeplab2_panoptic(num_classes=0)
