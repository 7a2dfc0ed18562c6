"""Checkpoints written before the variable-naming change still restore.

The fixtures (scripts/fixtures/make_legacy_checkpoints.py, run on commit
9ddbe19) are object-based TF checkpoints of a reduced AxialBlock and a
reduced conv-stem Axial-ResNet-26 classifier with the outputs that code
computed; input sizes are 1 mod 4, where the stem padding is unchanged.
"""

import os

import numpy as np
import tensorflow as tf

from scripts.fixtures import make_legacy_checkpoints as legacy

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(__file__)),
                        "fixtures", "legacy_checkpoints")


def _outputs():
  return np.load(os.path.join(FIXTURES, "outputs.npz"))


def test_axial_block_restores_with_identical_outputs():
  data = _outputs()
  block = legacy.build_block()
  block(tf.zeros(legacy.BLOCK_SHAPE), training=False)
  status = tf.train.Checkpoint(layer=block).read(
      os.path.join(FIXTURES, "axial_block", "ckpt"))
  status.assert_existing_objects_matched().assert_consumed()
  got = block(tf.constant(data["block_input"]), training=False).numpy()
  np.testing.assert_allclose(got, data["block_output"], rtol=1e-5, atol=1e-5)


def test_axial_resnet_restores_with_identical_outputs():
  data = _outputs()
  model = legacy.build_model()
  status = tf.train.Checkpoint(model=model).read(
      os.path.join(FIXTURES, "axial_resnet_26_tiny", "ckpt"))
  status.assert_existing_objects_matched()
  got = model(tf.constant(data["model_input"]),
              training=False)["logits"].numpy()
  np.testing.assert_allclose(got, data["model_output"], rtol=1e-5, atol=1e-5)
