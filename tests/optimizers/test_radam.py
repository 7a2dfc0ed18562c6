"""RectifiedAdam against torch.optim.RAdam and a numpy RAdam."""

import math

import numpy as np
import pytest
import tensorflow as tf
import tf_keras
import torch

from axial_deeplab_tf.optimizers import RectifiedAdam
from official.modeling.optimization import lr_schedule
from tests.optimizers import optimizer_references as refs

SHAPES = [(), (5,), (3, 4), (2, 3, 2)]
# Keras keeps the learning rate in a float32 variable; torch gets the same
# float32 value so that float64 runs can be compared at round-off level.
LR = 1e-2
LR_F32 = float(np.float32(LR))


def _rho(t, beta_2):
  rho_inf = 2.0 / (1.0 - beta_2) - 1.0
  return rho_inf - 2.0 * t * beta_2**t / (1.0 - beta_2**t)


@pytest.mark.parametrize("weight_decay,decoupled", [(0.0, False),
                                                    (0.05, False),
                                                    (0.05, True)])
def test_matches_torch_radam_float64(weight_decay, decoupled):
  num_steps = 220
  # The run covers both branches: momentum steps while rho_t <= 5 (t <= 5),
  # then rectified steps.
  rhos = [_rho(t, 0.999) for t in range(1, num_steps + 1)]
  assert min(rhos) <= 5.0 < max(rhos)
  params = refs.initial_params(SHAPES, seed=1)
  reference = refs.TorchRAdam(
      params, lr=LR_F32, betas=(0.9, 0.999), eps=1e-8,
      weight_decay=weight_decay, decoupled_weight_decay=decoupled)
  opt = RectifiedAdam(LR, beta_1=0.9, beta_2=0.999, epsilon=1e-8,
                      weight_decay=weight_decay,
                      decoupled_weight_decay=decoupled)
  got = refs.tf_trajectory(opt, params, tf.float64, num_steps)
  want = refs.reference_trajectory(reference, num_steps)
  refs.assert_trajectories_close(got, want, rtol=1e-6, atol=1e-12)
  assert int(opt.iterations.numpy()) == num_steps


def test_first_steps_are_momentum_steps():
  # Before rectification the step is lr * m_hat; at t = 1, m_hat = g.
  params = refs.initial_params([(4,)], seed=2)
  opt = RectifiedAdam(0.5, epsilon=1e-8)
  runner = refs.TFRunner(opt, params, tf.float64)
  grads = refs.grad_fn(1, params)
  runner.step(1, grads)
  np.testing.assert_allclose(runner.get()[0],
                             params[0] - float(np.float32(0.5)) * grads[0],
                             rtol=1e-12)


@pytest.mark.parametrize("beta_2,decoupled", [(0.999, False),
                                              (0.9999, True)])
def test_matches_torch_radam_float32(beta_2, decoupled):
  # beta_2 = 0.9999 makes rho_t cancel badly in a naive float32 formula
  # (errors of ~1 around the switch); the optimizer must still track torch,
  # which forms these scalars in double precision.
  params = refs.initial_params(SHAPES, seed=3)
  reference = refs.TorchRAdam(
      params, dtype=torch.float32, lr=LR_F32, betas=(0.9, beta_2), eps=1e-8,
      weight_decay=0.01, decoupled_weight_decay=decoupled)
  opt = RectifiedAdam(LR, beta_2=beta_2, epsilon=1e-8, weight_decay=0.01,
                      decoupled_weight_decay=decoupled)
  got = refs.tf_trajectory(opt, params, tf.float32, 60)
  want = refs.reference_trajectory(reference, 60)
  refs.assert_trajectories_close(got, want, rtol=2e-5, atol=2e-6)


def test_jit_compiled_step_matches_torch():
  params = refs.initial_params([(3, 4), (5,)], seed=4)
  reference = refs.TorchRAdam(params, lr=LR_F32, eps=1e-8, weight_decay=0.02)
  opt = RectifiedAdam(LR, epsilon=1e-8, weight_decay=0.02)
  got = refs.tf_trajectory(opt, params, tf.float64, 30, jit_compile=True)
  want = refs.reference_trajectory(reference, 30)
  refs.assert_trajectories_close(got, want, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("threshold,beta_2", [(8.0, 0.99), (4.0, 0.999),
                                              (20.0, 0.95)])
def test_rectify_threshold_matches_numpy(threshold, beta_2):
  # torch fixes the threshold at 5; other thresholds against numpy. With
  # beta_2 = 0.95, rho_inf = 39 and rho_t passes 20 near step 25.
  num_steps = 40
  rhos = [_rho(t, beta_2) for t in range(1, num_steps + 1)]
  assert min(rhos) <= threshold < max(rhos)
  params = refs.initial_params([(3, 2), (4,)], seed=5)
  reference = refs.NumpyRAdam(params, lr=LR_F32, beta_1=0.9, beta_2=beta_2,
                              eps=1e-8, threshold=threshold)
  opt = RectifiedAdam(LR, beta_2=beta_2, epsilon=1e-8,
                      rectify_threshold=threshold)
  got = refs.tf_trajectory(opt, params, tf.float64, num_steps)
  want = refs.reference_trajectory(reference, num_steps)
  refs.assert_trajectories_close(got, want, rtol=1e-6, atol=1e-12)


def test_never_rectified_when_rho_inf_below_threshold():
  # beta_2 = 0.5: rho_inf = 3 < 5, every step is a momentum step.
  params = refs.initial_params([(3,)], seed=6)
  reference = refs.TorchRAdam(params, lr=LR_F32, betas=(0.8, 0.5), eps=1e-8)
  opt = RectifiedAdam(LR, beta_1=0.8, beta_2=0.5, epsilon=1e-8)
  got = refs.tf_trajectory(opt, params, tf.float64, 20)
  want = refs.reference_trajectory(reference, 20)
  refs.assert_trajectories_close(got, want, rtol=1e-6, atol=1e-12)


def test_learning_rate_schedule_matches_torch():
  warmup_steps, decay_steps, peak = 10, 60, 0.02

  def numpy_lr(step):  # Model Garden's LinearWarmup over PolynomialDecay.
    poly = lambda s: (peak - 0.001) * (1.0 - min(s, decay_steps) /
                                       decay_steps)**0.9 + 0.001
    if step < warmup_steps:
      return step / warmup_steps * poly(warmup_steps)
    return poly(step)

  schedule = lr_schedule.LinearWarmup(
      tf_keras.optimizers.schedules.PolynomialDecay(
          peak, decay_steps, end_learning_rate=0.001, power=0.9),
      warmup_steps=warmup_steps, warmup_learning_rate=0.0)
  params = refs.initial_params([(4, 3)], seed=7)
  reference = refs.TorchRAdam(params, lr=0.0, eps=1e-8)
  opt = RectifiedAdam(schedule, epsilon=1e-8)
  got = refs.tf_trajectory(opt, params, tf.float64, 70)
  # Step s uses the schedule at iterations = s - 1; TF evaluates it in
  # float32, hence the tolerance.
  want = refs.reference_trajectory(
      reference, 70, before_step=lambda s: reference.set_lr(numpy_lr(s - 1)))
  refs.assert_trajectories_close(got, want, rtol=1e-5, atol=1e-8)
  assert opt.learning_rate is schedule


@pytest.mark.parametrize("weight_decay,decoupled", [(0.0, False),
                                                    (0.1, False),
                                                    (0.1, True)])
def test_sparse_gradients_equal_dense_zero_filled(weight_decay, decoupled):
  shape = (6, 3)
  indices = np.array([0, 2, 2, 5])  # Row 2 twice: the rows add up.
  params = refs.initial_params([shape], seed=8)
  reference = refs.TorchRAdam(params, lr=LR_F32, eps=1e-8,
                              weight_decay=weight_decay,
                              decoupled_weight_decay=decoupled)
  opt = RectifiedAdam(LR, epsilon=1e-8, weight_decay=weight_decay,
                      decoupled_weight_decay=decoupled)
  var = tf.Variable(params[0], dtype=tf.float64)

  @tf.function
  def apply(values, idx):
    grad = tf.IndexedSlices(values, idx, tf.constant(shape, tf.int64))
    opt.apply_gradients([(grad, var)])

  def row_grads(step, w):
    return np.cos(w[indices]) + 0.2 * math.sin(step) + np.arange(4)[:, None]

  for step in range(1, 31):
    apply(tf.constant(row_grads(step, var.numpy())), tf.constant(indices))
    dense = np.zeros(shape)
    np.add.at(dense, indices, row_grads(step, reference.get()[0]))
    reference.step([dense])
    np.testing.assert_allclose(var.numpy(), reference.get()[0], rtol=1e-6,
                               atol=1e-12, err_msg=f"step {step}")


def test_checkpoint_resume_continues_identically(tmp_path):
  params = refs.initial_params([(3, 4), (2,)], seed=9)

  def make():
    opt = RectifiedAdam(LR, weight_decay=0.01)
    runner = refs.TFRunner(opt, params, tf.float32)
    ckpt = tf.train.Checkpoint(optimizer=opt, variables=runner.variables)
    return runner, ckpt

  uninterrupted, ckpt = make()
  path = None
  for step in range(1, 13):
    uninterrupted.step(step, refs.grad_fn(step, uninterrupted.get()))
    if step == 4:
      path = ckpt.write(str(tmp_path / "ckpt"))
  expected = uninterrupted.get()

  resumed, ckpt = make()
  status = ckpt.read(path)
  # Optimizer variables are created lazily and restored when created.
  assert int(resumed.optimizer.iterations.numpy()) == 4
  for step in range(5, 13):
    resumed.step(step, refs.grad_fn(step, resumed.get()))
  status.assert_consumed()
  for got, want in zip(resumed.get(), expected):
    np.testing.assert_array_equal(got, want)


def test_get_config_round_trip():
  schedule = tf_keras.optimizers.schedules.PolynomialDecay(1e-3, 100, 1e-5)
  opt = RectifiedAdam(schedule, beta_1=0.8, beta_2=0.99, epsilon=1e-6,
                      weight_decay=0.1, rectify_threshold=6.0, name="r",
                      decoupled_weight_decay=True, global_clipnorm=1.0)
  config = opt.get_config()
  assert config["beta_1"] == 0.8 and config["beta_2"] == 0.99
  assert config["epsilon"] == 1e-6 and config["weight_decay"] == 0.1
  assert config["rectify_threshold"] == 6.0
  assert config["decoupled_weight_decay"] is True
  assert config["global_clipnorm"] == 1.0 and config["name"] == "r"
  restored = tf_keras.optimizers.deserialize(
      tf_keras.optimizers.serialize(opt), use_legacy_optimizer=True)
  assert isinstance(restored, RectifiedAdam)
  assert restored.get_config() == config


def test_clipnorm_is_applied():
  # With clipnorm the first (momentum) step has length lr * clipnorm.
  var = tf.Variable([3.0, 4.0], dtype=tf.float64)
  opt = RectifiedAdam(0.5, clipnorm=1.0)
  opt.apply_gradients([(tf.constant([30.0, 40.0], tf.float64), var)])
  np.testing.assert_allclose(var.numpy(), [3.0 - 0.3, 4.0 - 0.4], rtol=1e-7)


@pytest.mark.parametrize("kwargs,name", [
    (dict(learning_rate=-1e-3), "learning_rate"),
    (dict(beta_1=1.0), "beta_1"),
    (dict(beta_1=-0.1), "beta_1"),
    (dict(beta_2=1.0), "beta_2"),
    (dict(beta_2=1.5), "beta_2"),
    (dict(epsilon=-1e-8), "epsilon"),
    (dict(weight_decay=-0.1), "weight_decay"),
    (dict(rectify_threshold=3.0), "rectify_threshold"),
    (dict(learning_rate=float("nan")), "learning_rate"),
])
def test_bad_arguments_raise_value_error(kwargs, name):
  with pytest.raises(ValueError, match=name):
    RectifiedAdam(**kwargs)


@pytest.mark.parametrize("kwargs,name", [
    (dict(beta_1="0.9"), "beta_1"),
    (dict(learning_rate="fast"), "learning_rate"),
    (dict(decoupled_weight_decay=1), "decoupled_weight_decay"),
])
def test_bad_argument_types_raise_type_error(kwargs, name):
  with pytest.raises(TypeError, match=name):
    RectifiedAdam(**kwargs)
