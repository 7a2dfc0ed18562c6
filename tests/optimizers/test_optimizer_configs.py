"""Model Garden wiring: registration, configs, build_optimizer, trainer."""

import math

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from axial_deeplab_tf import optimizers
from axial_deeplab_tf.optimizers import configs
from axial_deeplab_tf.optimizers import Lookahead
from axial_deeplab_tf.optimizers import RectifiedAdam
from official.core import base_trainer
from official.core import config_definitions
from official.modeling.optimization import ema_optimizer
from official.modeling.optimization import optimizer_factory
from official.utils.testing import mock_task

# pylint: disable=protected-access


def _poly(step, peak, decay_steps, end, power):
  frac = min(step, decay_steps) / decay_steps
  return (peak - end) * (1.0 - frac)**power + end


def _cosine(step, peak, decay_steps, alpha):
  frac = min(step, decay_steps) / decay_steps
  return peak * ((1.0 - alpha) * 0.5 * (1.0 + math.cos(math.pi * frac)) +
                 alpha)


def _warmup(step, warmup_steps, warmup_lr, schedule):
  if step < warmup_steps:
    return warmup_lr + step / warmup_steps * (schedule(warmup_steps) -
                                              warmup_lr)
  return schedule(step)


def test_radam_is_registered_once():
  assert optimizer_factory.LEGACY_OPTIMIZERS_CLS["radam"] is RectifiedAdam
  configs._register()  # What a second import runs: harmless.
  assert optimizer_factory.LEGACY_OPTIMIZERS_CLS["radam"] is RectifiedAdam


def test_registration_after_reload_and_conflict():
  registry = optimizer_factory.LEGACY_OPTIMIZERS_CLS
  # A reloaded module leaves the old class object registered under "radam".
  stale = type("RectifiedAdam", (), {"__module__": RectifiedAdam.__module__})
  try:
    registry["radam"] = stale
    configs._register()
    assert registry["radam"] is RectifiedAdam
    registry["radam"] = tf_keras.optimizers.legacy.Adam
    with pytest.raises(ValueError, match="radam"):
      configs._register()
  finally:
    registry["radam"] = RectifiedAdam


@pytest.mark.parametrize("schedule", ["poly", "cosine", "constant"])
def test_built_optimizer_classes_and_warmup_learning_rates(schedule):
  peak, decay_steps, warmup_steps, warmup_lr = 1e-3, 100, 10, 1e-4
  config = optimizers.make_optimization_config(
      learning_rate=peak, schedule=schedule, decay_steps=decay_steps,
      warmup_steps=warmup_steps, warmup_learning_rate=warmup_lr,
      end_learning_rate=1e-5, power=0.9, cosine_alpha=0.1)
  opt = optimizers.build_optimizer(config)
  assert isinstance(opt, Lookahead)
  assert opt.sync_period == 6 and opt.slow_step_size == 0.5
  inner = opt.inner_optimizer
  assert isinstance(inner, RectifiedAdam)
  assert (inner.beta_1, inner.beta_2, inner.epsilon) == (0.9, 0.999, 1e-7)

  after = {
      "poly": lambda s: _poly(s, peak, decay_steps, 1e-5, 0.9),
      "cosine": lambda s: _cosine(s, peak, decay_steps, 0.1),
      "constant": lambda s: peak,
  }[schedule]
  for step in [0, 1, 5, 9, 10, 11, 50, 99, 100, 150]:
    want = _warmup(step, warmup_steps, warmup_lr, after)
    got = float(opt.learning_rate(step))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-9,
                               err_msg=f"{schedule} at step {step}")


def test_yaml_style_override_selects_radam_without_lookahead():
  config = optimizers.OptimizationConfig()
  config.override({
      "optimizer": {"type": "radam", "radam": {
          "beta_2": 0.99, "weight_decay": 1e-4,
          "decoupled_weight_decay": True, "rectify_threshold": 6.0,
          "clipnorm": 2.0}},
      "learning_rate": {"type": "constant", "constant": {
          "learning_rate": 0.05}},
  })
  opt = optimizers.build_optimizer(config)
  assert type(opt) is RectifiedAdam
  assert opt.beta_2 == 0.99 and opt.weight_decay == 1e-4
  assert opt.decoupled_weight_decay and opt.rectify_threshold == 6.0
  assert opt.clipnorm == 2.0
  assert float(opt.learning_rate) == pytest.approx(0.05)
  # Model Garden's own factory builds it too.
  factory = optimizer_factory.OptimizerFactory(config)
  assert isinstance(factory.build_optimizer(factory.build_learning_rate()),
                    RectifiedAdam)
  # The lookahead section turns Lookahead on.
  config.override({"lookahead": {"sync_period": 5, "slow_step_size": 0.8}})
  opt = optimizers.build_optimizer(config)
  assert isinstance(opt, Lookahead)
  assert (opt.sync_period, opt.slow_step_size) == (5, 0.8)


def test_wrapper_order_with_ema_and_loss_scale():
  config = optimizers.make_optimization_config(decay_steps=10)
  config.override({"ema": {"average_decay": 0.999}})
  runtime = config_definitions.RuntimeConfig(mixed_precision_dtype="float16")
  opt = optimizers.build_optimizer(runtime=runtime, optimization=config)
  assert isinstance(opt, tf_keras.mixed_precision.LossScaleOptimizer)
  ema = opt.inner_optimizer
  assert isinstance(ema, ema_optimizer.ExponentialMovingAverage)
  assert isinstance(ema._optimizer, Lookahead)
  assert isinstance(ema._optimizer.inner_optimizer, RectifiedAdam)

  fixed = optimizers.build_optimizer(
      config.replace(ema=None),
      config_definitions.RuntimeConfig(mixed_precision_dtype="float16",
                                       loss_scale=128.0))
  assert not fixed.dynamic and float(fixed.loss_scale) == 128.0
  # bfloat16 needs no loss scaling.
  plain = optimizers.build_optimizer(
      config.replace(ema=None),
      config_definitions.RuntimeConfig(mixed_precision_dtype="bfloat16"))
  assert isinstance(plain, Lookahead)


def test_bad_lookahead_config_names_the_argument():
  config = optimizers.make_optimization_config(decay_steps=10)
  config.override({"lookahead": {"sync_period": 0}})
  with pytest.raises(ValueError, match="sync_period"):
    optimizers.build_optimizer(config)
  config.override({"lookahead": {"sync_period": 2, "slow_step_size": 2.0}})
  with pytest.raises(ValueError, match="slow_step_size"):
    optimizers.build_optimizer(config)
  config = optimizers.make_optimization_config(decay_steps=10)
  config.override({"optimizer": {"radam": {"beta_1": 1.0}}})
  with pytest.raises(ValueError, match="beta_1"):
    optimizers.build_optimizer(config)


@pytest.mark.parametrize("kwargs,name", [
    (dict(schedule="step", decay_steps=10), "schedule"),
    (dict(schedule="poly", decay_steps=None), "decay_steps"),
    (dict(schedule="cosine", decay_steps=0), "decay_steps"),
    (dict(decay_steps=10, warmup_steps=-1), "warmup_steps"),
    (dict(decay_steps=10, learning_rate=0.0), "learning_rate"),
    (dict(decay_steps=10, warmup_learning_rate=-1.0), "warmup_learning_rate"),
])
def test_make_optimization_config_rejects_bad_arguments(kwargs, name):
  with pytest.raises(ValueError, match=name):
    optimizers.make_optimization_config(**kwargs)


def test_build_optimizer_rejects_other_configs():
  with pytest.raises(TypeError, match="OptimizationConfig"):
    optimizers.build_optimizer({"optimizer": {"type": "radam"}})


def test_model_garden_trainer_steps_and_learning_rate_summary():
  # Model Garden's trainer: global step == optimizer.iterations, and the
  # learning-rate summary reads the warm-up schedule through Lookahead and
  # EMA (the trainer makes the EMA shadow copy itself).
  experiment = mock_task.mock_experiment()
  experiment.trainer.train_tf_while_loop = False
  task = mock_task.MockTask(experiment.task)
  model = task.build_model()
  config = optimizers.make_optimization_config(
      learning_rate=0.01, decay_steps=20, warmup_steps=4, power=1.0,
      sync_period=2)
  config.override({"ema": {"average_decay": 0.9}})
  opt = optimizers.build_optimizer(config)
  trainer = base_trainer.Trainer(experiment, task, model=model, optimizer=opt,
                                 evaluate=False)
  logs = trainer.train(tf.convert_to_tensor(3, dtype=tf.int32))
  assert int(trainer.global_step.numpy()) == 3
  assert int(opt.iterations.numpy()) == 3
  want = _warmup(3, 4, 0.0, lambda s: _poly(s, 0.01, 20, 0.0, 1.0))
  np.testing.assert_allclose(float(logs["learning_rate"]), want, rtol=1e-6)
  assert np.isfinite(float(logs["training_loss"]))
  # The Lookahead slow weights exist for every trainable variable.
  lookahead = opt._optimizer
  for var in model.trainable_variables:
    assert lookahead.get_slot(var, "slow").shape == var.shape


def test_sgd_config_takes_a_nesterov_momentum_step():
  config = optimizers.make_optimization_config(
      optimizer="sgd", learning_rate=0.1, schedule="constant", momentum=0.9,
      nesterov=True, lookahead=False)
  opt = optimizers.build_optimizer(config)
  w = tf.Variable([1.0, -2.0])
  opt.apply_gradients([(tf.constant([0.5, 4.0]), w)])
  # Keras' Nesterov form from zero velocity: v = -lr g,
  # w <- w + momentum v - lr g = w - lr (1 + momentum) g.
  np.testing.assert_allclose(
      w.numpy(), [1.0 - 0.1 * 1.9 * 0.5, -2.0 - 0.1 * 1.9 * 4.0], rtol=1e-6)


def test_adamw_config_decays_kernels_but_not_norms_or_biases():
  config = optimizers.make_optimization_config(
      optimizer="adamw", learning_rate=0.1, schedule="constant",
      weight_decay=0.5, lookahead=False)
  opt = optimizers.build_optimizer(config)
  kernel = tf.Variable([2.0, -4.0], name="conv/kernel")
  bias = tf.Variable([2.0, -4.0], name="conv/bias")
  gamma = tf.Variable([2.0, -4.0], name="bn/gamma")
  # Zero gradients: Adam's own step is 0, only the decoupled decay
  # w <- w (1 - lr * weight_decay) is left.
  zeros = tf.zeros([2])
  opt.apply_gradients([(zeros, kernel), (zeros, bias), (zeros, gamma)])
  np.testing.assert_allclose(kernel.numpy(), [2.0 * 0.95, -4.0 * 0.95],
                             rtol=1e-6)
  np.testing.assert_array_equal(bias.numpy(), [2.0, -4.0])
  np.testing.assert_array_equal(gamma.numpy(), [2.0, -4.0])


@pytest.mark.parametrize("kwargs,name", [
    (dict(optimizer="adam"), "optimizer"),
    (dict(optimizer="sgd", weight_decay=1e-4), "weight_decay"),
])
def test_make_optimization_config_rejects_bad_optimizers(kwargs, name):
  with pytest.raises(ValueError, match=name):
    optimizers.make_optimization_config(decay_steps=10, **kwargs)
