"""Initialising a model from a checkpoint of another model, by name.

The references are the source models' own variables (looked up by name, and
cropped with explicit numpy slices), never the restore code's output.
"""

import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from axial_deeplab_tf import models
from axial_deeplab_tf.tasks import checkpoint_utils
from axial_deeplab_tf.tasks import experiment
from axial_deeplab_tf.tasks import segmentation

from tests.tasks.run_utils import QUICKSTART_GIN


class _Table(tf_keras.layers.Layer):
  """A layer with a relative table named like AxialAttention's."""

  def __init__(self, rows, **kwargs):
    super().__init__(**kwargs)
    self.rows = rows

  def build(self, input_shape):
    self.query_positional = self.add_weight(
        "query_positional", shape=[self.rows, 2],
        initializer=tf_keras.initializers.RandomNormal(seed=self.rows))
    self.value_positional = self.add_weight(
        "value_positional", shape=[self.rows, 3], initializer="ones")

  def call(self, inputs):
    return inputs + tf.reduce_sum(self.query_positional)


def _small_backbone(stem_filters, rows, value_rows, name):
  inputs = tf_keras.Input((8, 8, 3))
  x = tf_keras.layers.Conv2D(stem_filters, 3, name=f"stem_{name}")(inputs)
  x = tf_keras.layers.Conv2D(4, 1, name="res2_conv")(x)
  x = tf_keras.layers.BatchNormalization(name="res2_bn")(x)
  x = _Table(rows, name="res2_attention")(x)
  table = _Table(value_rows, name="res3_attention")
  x = table(x)
  return tf_keras.Model(inputs, {"res3": x}, name="backbone")


class _Classifier(tf_keras.Model):
  """Holds the backbone under `backbone`, like ImageClassifier."""

  def __init__(self, backbone, **kwargs):
    super().__init__(**kwargs)
    self.backbone = backbone
    self.fc = tf_keras.layers.Dense(2, name="fc")

  def call(self, images):
    return self.fc(tf.reduce_mean(self.backbone(images)["res3"], [1, 2]))


def _by_name(model):
  return {v.name[:-2]: v.numpy() for v in model.variables}


def test_restore_by_name_matches_names_crops_tables_and_reports(tmp_path):
  source = _Classifier(_small_backbone(5, rows=9, value_rows=5, name="a"))
  source(tf.zeros([1, 8, 8, 3]))
  for v in source.backbone.variables:  # Distinct, non-initial values.
    v.assign(tf.random.stateless_normal(v.shape, [1, len(v.name)]))
  path = tf.train.Checkpoint(model=source, step=tf.Variable(3)).save(
      str(tmp_path / "ckpt"))
  target = _small_backbone(5, rows=5, value_rows=7, name="b")
  before = _by_name(target)
  report = checkpoint_utils.restore_by_name(target, path)

  src, got = _by_name(source.backbone), _by_name(target)
  for name in ("res2_conv/kernel", "res2_conv/bias", "res2_bn/gamma",
               "res2_bn/beta", "res2_bn/moving_mean",
               "res2_bn/moving_variance"):
    np.testing.assert_array_equal(got[name], src[name])
  # A 9-row table (distances -4..4) into a 5-row one (-2..2): rows 2..6.
  np.testing.assert_array_equal(got["res2_attention/query_positional"],
                                src["res2_attention/query_positional"][2:7])
  # A smaller checkpoint table cannot fill a larger one: left as it was.
  np.testing.assert_array_equal(got["res3_attention/query_positional"],
                                before["res3_attention/query_positional"])
  np.testing.assert_array_equal(got["stem_b/kernel"], before["stem_b/kernel"])
  assert report.checkpoint_scope == "model/backbone"
  assert [c[0] for c in report.cropped] == [
      "res2_attention/query_positional", "res2_attention/value_positional"]
  assert sorted(m[0] for m in report.shape_mismatch) == [
      "res3_attention/query_positional", "res3_attention/value_positional"]
  assert sorted(report.missing) == ["stem_b/bias", "stem_b/kernel"]
  assert report.unused == ["stem_a/bias", "stem_a/kernel"]
  assert "fc/kernel" not in report.unused  # Only the backbone is searched.
  assert "restored 6 variables" in report.summary()


def test_restore_by_name_rejects_an_unrelated_checkpoint(tmp_path):
  other = tf_keras.Sequential([tf_keras.layers.Dense(3, name="other")])
  other(tf.zeros([1, 2]))
  path = tf.train.Checkpoint(model=other).save(str(tmp_path / "ckpt"))
  target = _small_backbone(5, rows=5, value_rows=5, name="a")
  with pytest.raises(ValueError, match="No variable of 'backbone' matches"):
    checkpoint_utils.restore_by_name(target, path)
  with pytest.raises(ValueError, match="none of the object paths"):
    checkpoint_utils.restore_by_name(target, path, scopes=[("nope",)])


def test_panoptic_task_initialises_its_backbone_from_an_axial_resnet(
    tmp_path, tiny_experiment):
  # Matching widths: stage widths from the same multiplier, and the
  # inception stem ending in the conv stem's 64 * 0.125 = 8 channels.
  classifier = models.build("axial_resnet_50s", num_classes=4,
                            width_multiplier=0.125, depth=26,
                            input_size=(224, 224))
  for v in classifier.variables:
    v.assign(tf.random.stateless_normal(v.shape, [2, len(v.name)]) * 0.1)
  path = tf.train.Checkpoint(global_step=tf.Variable(10), model=classifier
                            ).save(str(tmp_path / "classifier" / "ckpt"))
  bindings = tiny_experiment.bindings(extra={
      "model.overrides": (
          "{'width_multiplier': 0.125, 'semantic_channels': 16, "
          "'instance_channels': 16, 'context_channels': 16, "
          "'stem_channels': (8, 8, 8), 'depth': 26}"),
      "experiment.init_checkpoint": repr(os.path.dirname(path)),
      "experiment.init_checkpoint_modules": "'backbone'",
  })
  params = experiment.parse_experiment([QUICKSTART_GIN], bindings)
  task = segmentation.build_task(params)
  model = task.build_model()
  before = {l.name: [v.numpy() for v in l.variables]
            for l in model.backbone.layers}
  task.initialize(model)

  # Reference pairing: same layer name, then the layer's variables in
  # creation order (same layer class on both sides).
  source_layers = {l.name: l for l in classifier.backbone.layers}
  counts = {"restored": 0, "cropped": 0, "kept": 0, "stem": 0}
  for layer in model.backbone.layers:
    if layer.name not in source_layers:
      assert layer.name.startswith("stem_"), layer.name
      for value, old in zip(layer.variables, before[layer.name]):
        np.testing.assert_array_equal(value.numpy(), old)
        counts["stem"] += 1
      continue
    source = source_layers[layer.name].variables
    assert len(source) == len(layer.variables)
    for value, src, old in zip(layer.variables, source,
                               before[layer.name]):
      value, src = value.numpy(), src.numpy()
      if value.shape == src.shape:
        np.testing.assert_array_equal(value, src, err_msg=layer.name)
        counts["restored"] += 1
        continue
      # Only relative tables differ: the classifier's global spans at
      # 224x224 have the radius of the resolution a block attends at, 55
      # (56x56: res2 and the first res3 block, which downsamples after
      # attending), 27, 13 or 6; the panoptic span 65 has radius 32. Larger
      # tables give their centre rows.
      assert src.shape[1:] == value.shape[1:] and value.shape[0] == 65
      if src.shape[0] > 65:
        c = (src.shape[0] - 1) // 2
        np.testing.assert_array_equal(value, src[c - 32:c + 33])
        counts["cropped"] += 1
      else:
        np.testing.assert_array_equal(value, old)
        counts["kept"] += 1
  # The inception stem: 3 x (conv kernel + 4 batch-norm variables).
  assert counts["restored"] > 100 and counts["stem"] == 15
  # Depth 26 has blocks (1, 2, 4, 1), each with 2 axial layers x 3 tables;
  # res2_block1 and res3_block1 attend at 56x56.
  assert counts["cropped"] == 2 * 6 and counts["kept"] == 6 * 6

  report = checkpoint_utils.restore_by_name(model.backbone, path)
  assert len(report.restored) == counts["restored"]
  assert len(report.cropped) == counts["cropped"]
  assert len(report.shape_mismatch) == counts["kept"]
  assert len(report.missing) == counts["stem"]
  assert report.unused and all(n.startswith("stem_") for n in report.unused)
