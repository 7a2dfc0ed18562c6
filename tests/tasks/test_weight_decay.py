"""losses.l2_weight_decay: L2 kernel regularizers in the training loss.

The reference is the sum of squared kernels read from the model's weights
before the step, times wd / 2 (Model Garden's l2_weight_decay convention),
not the model's own regularization losses.
"""

import numpy as np
import pytest
import tensorflow as tf

from axial_deeplab_tf.tasks import experiment
from axial_deeplab_tf.tasks import segmentation

from tests.tasks.run_utils import QUICKSTART_GIN


def _task(tiny_experiment, extra):
  params = experiment.parse_experiment(
      [QUICKSTART_GIN], tiny_experiment.bindings(extra=extra))
  return params, segmentation.build_task(params)


def test_l2_weight_decay_adds_half_wd_times_squared_kernels_to_the_loss(
    tiny_experiment):
  weight_decay = 0.01
  params, task = _task(tiny_experiment,
                       {"losses.l2_weight_decay": repr(weight_decay)})
  model = task.build_model()
  # Every convolution and attention projection kernel (depthwise too),
  # never a batch-norm parameter or a relative-position table.
  kernels = [v.numpy() for v in model.trainable_variables
             if v.name.endswith("kernel:0")]
  assert len(kernels) > 50
  l2 = weight_decay / 2.0 * sum(
      float(np.sum(np.square(k.astype(np.float64)))) for k in kernels)
  np.testing.assert_allclose(float(tf.add_n(model.losses)), l2, rtol=1e-5)

  features, labels = next(iter(task.build_inputs(params.task.train_data)))
  # The data loss of these weights, without any regularization.
  outputs = model(features["image"], training=True)
  data_loss = float(task.build_losses(labels, outputs)["total_loss"])
  optimizer = task.create_optimizer(params.trainer.optimizer_config,
                                    params.runtime)
  logs = task.train_step((features, labels), model, optimizer)
  np.testing.assert_allclose(float(logs[task.loss]) - data_loss, l2,
                             rtol=1e-4)


def test_l2_weight_decay_refuses_what_it_cannot_apply(tiny_experiment):
  _, task = _task(tiny_experiment, {
      "losses.l2_weight_decay": "0.01",
      "model.overrides": "{'kernel_regularizer': {'class_name': 'L2', "
                         "'config': {'l2': 0.1}}}"})
  with pytest.raises(ValueError, match="not both"):
    task.build_model()
  # The ResNet-50 baseline's builder drops unknown arguments.
  _, task = _task(tiny_experiment, {
      "losses.l2_weight_decay": "0.01", "model.name": "'resnet_50'",
      "model.overrides": "{'input_size': (32, 32)}"})
  with pytest.raises(ValueError, match="ignores kernel_regularizer"):
    task.build_model()
  _, task = _task(tiny_experiment, {"losses.l2_weight_decay": "-0.1"})
  with pytest.raises(ValueError, match="l2_weight_decay"):
    task.build_model()
