"""Axial-ResNet zoo: parameter counts against the paper's reference models."""

import numpy as np
import pytest
import tensorflow as tf

from axial_deeplab_tf import models

# Trainable parameters of the public reference models at 224x224 with
# global spans 56/28/14/7 and a 1000-way classifier: the README and
# BENCHMARKS.md state these exact figures ("equal to the reference models").
REFERENCE_PARAMS = {
    "axial_resnet_26s": 5_944_936,
    "axial_resnet_50s": 11_586_216,
    "axial_resnet_50m": 25_179_400,
    "axial_resnet_50l": 43_973_480,
}


def _trainable(model):
  return int(sum(np.prod(w.shape) for w in model.trainable_weights))


@pytest.mark.parametrize("name,expected", [
    pytest.param(name, expected,
                 marks=[] if name == "axial_resnet_26s" else pytest.mark.slow)
    for name, expected in sorted(REFERENCE_PARAMS.items())])
def test_parameter_counts_equal_the_reference(name, expected):
  count = _trainable(models.build(name))
  assert count == expected, (name, count, expected)


def test_zoo_lists_and_rejects_unknown():
  names = models.list_models()
  for name in ["axial_resnet_26s", "axial_resnet_50s", "axial_resnet_50m",
               "axial_resnet_50l", "axial_resnet_50xl", "full_axial_resnet_50s",
               "full_axial_resnet_50m", "full_axial_resnet_50l",
               "sasa_resnet_50", "ps_sasa_resnet_50", "resnet_50"]:
    assert name in names
  with pytest.raises(ValueError, match="Unknown model name"):
    models.build("axial_resnet_51")


def test_input_size_sets_global_spans_and_forward():
  model = models.build("axial_resnet_26s", num_classes=10, input_size=(64, 96))
  block = model.backbone.get_layer("res2_block1")
  height = block._attention.height_attention
  width = block._attention.width_attention
  assert height.table_rows == 2 * 16 - 1
  assert width.table_rows == 2 * 24 - 1
  out = model(tf.random.uniform([2, 64, 96, 3], 0, 255), training=False)
  assert out["logits"].shape == (2, 10)
  # Global attention cannot run past the size its tables cover.
  with pytest.raises(Exception, match="max_length|expected shape"):
    model(tf.zeros([1, 128, 96, 3]))


def test_global_span_needs_input_size():
  with pytest.raises(ValueError, match="input_size"):
    models.build("axial_resnet_26s", input_size=(None, None))


def test_full_axial_resnet_runs_any_size():
  # The 0.75 width: a 48-channel stem whose attention depth is rounded up to
  # a multiple of the 8 heads (48 // 4 = 12 -> 16).
  model = models.build("full_axial_resnet_50m", num_classes=5,
                       input_size=(None, None))
  stem = model.backbone.get_layer("stem_block1")
  assert stem._attention.height_attention.get_config()["key_depth"] == 16
  out = model(tf.random.uniform([1, 45, 37, 3], 0, 255), training=False)
  assert out["logits"].shape == (1, 5)
