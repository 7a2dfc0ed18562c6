"""evaluation.precision: a mixed-precision job evaluated by a float32 twin.

The twin shares the model's variables (built on them by a variable
creator), so the reference here is a float32 model built separately and
given copies of the weights: the twin's outputs, and the eval step's
losses, must be those of that model exactly, and a change to the model's
weights must show in the twin.
"""

import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from official.modeling import performance

from axial_deeplab_tf.tasks import experiment
from axial_deeplab_tf.tasks import segmentation

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
QUICKSTART = os.path.join(ROOT, "gin", "quickstart", "axial_deeplab.gin")


@pytest.fixture
def policy():
  """Sets a global dtype policy for the test and restores float32."""
  yield performance.set_mixed_precision_policy
  performance.set_mixed_precision_policy("float32")


def _params(tiny_experiment, precision, dtype="bfloat16"):
  return experiment.parse_experiment([QUICKSTART], tiny_experiment.bindings(
      extra={"runtime.mixed_precision_dtype": repr(dtype),
             "evaluation.precision": repr(precision),
             "evaluation.num_image_panels": "0"}))


def _flat(outputs):
  return np.concatenate([np.ravel(np.asarray(tf.cast(t, tf.float32)))
                         for t in tf.nest.flatten(outputs)])


def test_bfloat16_job_evaluates_a_float32_twin_on_the_same_variables(
    tiny_experiment, policy):
  params = _params(tiny_experiment, "float32")
  policy("bfloat16")
  tf_keras.utils.set_random_seed(0)
  task = segmentation.build_task(params)
  net = task.build_model()
  twin = task.evaluation_model(net)
  assert twin is not net
  assert net.dtype_policy.name == "mixed_bfloat16"
  assert twin.dtype_policy.name == "float32"
  underlying = lambda v: getattr(v, "_variable", v)  # AutoCastVariable.
  assert [id(underlying(v)) for v in twin.weights] == [
      id(underlying(v)) for v in net.weights]

  # Reference: a float32 build of the same model with copied weights.
  policy("float32")
  reference = segmentation.build_task(params)._build_zoo_model()  # pylint: disable=protected-access
  images = tf.random.stateless_uniform([2, 64, 64, 3], (1, 2), 0, 255)

  def compare():
    reference.set_weights([v.numpy() for v in net.weights])
    expected = _flat(reference(images, training=False))
    np.testing.assert_array_equal(_flat(twin(images, training=False)),
                                  expected)
    # The bfloat16 model itself computes something else.
    assert np.abs(_flat(net(images, training=False)) - expected).max() > 0

  compare()
  # Weights changed through the model (an update, an EMA swap) are the
  # twin's: its kernels and batch-norm statistics are the same variables.
  for v in net.weights:
    if "moving_mean" in v.name or "kernel" in v.name:
      v.assign(v * 0.9 + 0.01)
  compare()

  # The eval step runs the twin: its losses are the float32 model's.
  features, labels = next(iter(task.build_inputs(params.task.validation_data)))
  metrics = task.build_metrics(training=False)
  logs = task.validation_step((features, labels), net, metrics)
  expected = task.build_losses(labels, reference(features["image"],
                                                 training=False))
  np.testing.assert_allclose(float(logs[task.loss]),
                             float(expected["total_loss"]), rtol=1e-6)
  # Another model given to the step runs as it is.
  assert task.evaluation_model(reference) is reference


def test_training_precision_and_float32_jobs_build_no_twin(tiny_experiment,
                                                           policy):
  policy("bfloat16")
  task = segmentation.build_task(_params(tiny_experiment, "training"))
  net = task.build_model()
  assert task.evaluation_model(net) is net
  policy("float32")
  task = segmentation.build_task(_params(tiny_experiment, "float32",
                                         dtype="float32"))
  net = task.build_model()
  assert task.evaluation_model(net) is net


def test_bad_precision_and_lazily_built_models_are_named(tiny_experiment,
                                                         policy,
                                                         monkeypatch):
  with pytest.raises(ValueError, match="evaluation.precision must be one of"
                     r".*'bfloat16'"):
    segmentation.build_task(_params(tiny_experiment, "bfloat16"))

  policy("bfloat16")
  task = segmentation.build_task(_params(tiny_experiment, "float32"))
  builds = []

  def build_zoo_model():
    # The first build creates its variables; the second (the twin) leaves
    # them to its first call, which the twin cannot share.
    model = tf_keras.Sequential([tf_keras.layers.Dense(3)])
    if not builds:
      model.build((None, 4))
    builds.append(model)
    return model

  monkeypatch.setattr(task, "_build_zoo_model", build_zoo_model)
  with pytest.raises(ValueError, match="must create every variable when it "
                     "builds the model"):
    task.build_model()
