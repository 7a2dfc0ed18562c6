"""Axial-DeepLab / Panoptic-DeepLab models: sizes, outputs, any input size."""

import numpy as np
import pytest
import tensorflow as tf

from axial_deeplab_tf import models

# Paper Table 2 (COCO, 133 classes), rounded to 0.1M.
PAPER_PARAMS = {"axial_deeplab_s": 12.1e6, "axial_deeplab_m": 25.9e6,
                "axial_deeplab_l": 44.9e6}
# Our exact counts at 133 classes, as the README and BENCHMARKS.md state them
# (a local-span relative table has `span` rows, not the paper's
# `2 * span - 1`, hence 2.8-3.7% below the paper's figures).
EXACT_PARAMS = {"axial_deeplab_s": 11_646_936, "axial_deeplab_m": 25_052_744,
                "axial_deeplab_l": 43_639_736}
# Narrow and shallow: the Axial-ResNet-26 block layout (1, 2, 4, 1).
TINY = dict(width_multiplier=0.125, depth=26, semantic_channels=16,
            instance_channels=16, context_channels=16, stem_channels=(8, 8, 16))


def _trainable(model):
  return int(sum(np.prod(w.shape) for w in model.trainable_weights))


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PAPER_PARAMS))
def test_parameter_counts_equal_the_stated_counts(name):
  count = _trainable(models.build(name, num_classes=133))
  assert count == EXACT_PARAMS[name], (name, count)
  # The README gives the paper's rounded figure beside ours.
  assert abs(count - PAPER_PARAMS[name]) / PAPER_PARAMS[name] <= 0.04, count


@pytest.mark.parametrize("size", [(65, 97), (33, 40)])
def test_outputs_at_input_resolution_for_any_size(size):
  model = models.build("axial_deeplab_s", num_classes=7, **TINY)
  images = tf.random.uniform((2,) + size + (3,), 0, 255)
  out = model(images, training=False)
  assert set(out) == {"semantic_logits", "center_heatmap", "offset_map"}
  assert out["semantic_logits"].shape == (2,) + size + (7,)
  assert out["center_heatmap"].shape == (2,) + size + (1,)
  assert out["offset_map"].shape == (2,) + size + (2,)
  fn = tf.function(lambda x: model(x, training=False),
                   input_signature=[tf.TensorSpec([None, None, None, 3])])
  again = fn(images)
  np.testing.assert_allclose(again["semantic_logits"].numpy(),
                             out["semantic_logits"].numpy(), atol=1e-4)


def test_offsets_are_rescaled_to_input_pixels():
  model = models.build("axial_deeplab_s", num_classes=3, **TINY)
  images = tf.random.uniform((1, 64, 96, 3), 0, 255)
  # Make the offset head output a constant (1, 1) at stride 4.
  head = model.offset_head._classifier
  head.kernel.assign(tf.zeros_like(head.kernel))
  head.bias.assign(tf.ones_like(head.bias))
  offsets = model(images, training=False)["offset_map"].numpy()
  np.testing.assert_allclose(offsets[..., 0], 4.0, atol=1e-5)
  np.testing.assert_allclose(offsets[..., 1], 4.0, atol=1e-5)


def test_axial_decoder_variant_and_conv_baseline_run():
  with pytest.raises(ValueError, match="axial fusion needs channels"):
    models.build("axial_deeplab_l_axial_decoder", num_classes=4, **TINY)
  for name, kwargs in [("axial_deeplab_l_axial_decoder",
                        dict(TINY, semantic_channels=32)),
                       ("panoptic_deeplab_r50", {})]:
    model = models.build(name, num_classes=4, **kwargs)
    out = model(tf.random.uniform((1, 49, 51, 3), 0, 255), training=False)
    assert out["semantic_logits"].shape == (1, 49, 51, 4)


def test_training_step_reaches_every_weight():
  model = models.build("axial_deeplab_s", num_classes=3, **TINY)
  images = tf.random.uniform((2, 40, 40, 3), 0, 255)
  with tf.GradientTape() as tape:
    out = model(images, training=True)
    loss = sum(tf.reduce_mean(tf.square(v)) for v in out.values())
  grads = tape.gradient(loss, model.trainable_weights)
  missing = [w.name for g, w in zip(grads, model.trainable_weights)
             if g is None]
  assert not missing


def test_bad_arguments():
  with pytest.raises(ValueError, match="num_classes"):
    models.build("axial_deeplab_s", num_classes=0, **TINY)
  with pytest.raises(ValueError, match="stem_channels"):
    models.build("axial_deeplab_s", num_classes=3, stem_channels=(8, 8))
  model = models.build("axial_deeplab_s", num_classes=3, **TINY)
  with pytest.raises(ValueError, match="images"):
    model(tf.zeros([8, 8, 3]))
