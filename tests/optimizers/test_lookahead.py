"""Lookahead against numpy slow/fast-weight references."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from axial_deeplab_tf.optimizers import Lookahead
from axial_deeplab_tf.optimizers import RectifiedAdam
from tests.optimizers import optimizer_references as refs

SHAPES = [(4,), (3, 2), (2, 2, 3)]
# Keras stores lr and betas in float32 variables: use values float32 holds
# exactly so float64 runs compare at round-off level.
LR = 0.0625


def test_inner_sgd_momentum_matches_numpy():
  params = refs.initial_params(SHAPES, seed=10)
  opt = Lookahead(tf_keras.optimizers.legacy.SGD(LR, momentum=0.75),
                  sync_period=5, slow_step_size=0.5)
  got = refs.tf_trajectory(opt, params, tf.float64, 40)
  reference = refs.NumpyLookahead(
      refs.NumpySGD(params, LR, momentum=0.75), sync_period=5,
      slow_step_size=0.5)
  want = refs.reference_trajectory(reference, 40)
  refs.assert_trajectories_close(got, want, rtol=1e-9, atol=1e-12)
  # After the last sync (step 40) the fast weights are the slow weights.
  for var_value, slow in zip([g[-1] for g in got], reference.slow):
    np.testing.assert_allclose(var_value, slow, rtol=1e-9)


def test_inner_adam_matches_numpy():
  params = refs.initial_params(SHAPES, seed=11)
  opt = Lookahead(
      tf_keras.optimizers.legacy.Adam(LR, beta_1=0.875, beta_2=0.9990234375,
                                      epsilon=1e-8),
      sync_period=6, slow_step_size=0.75)
  got = refs.tf_trajectory(opt, params, tf.float64, 45)
  reference = refs.NumpyLookahead(
      refs.NumpyAdam(params, LR, 0.875, 0.9990234375, 1e-8), sync_period=6,
      slow_step_size=0.75)
  want = refs.reference_trajectory(reference, 45)
  refs.assert_trajectories_close(got, want, rtol=1e-9, atol=1e-12)


def test_inner_radam_matches_torch_plus_numpy_lookahead():
  # The papers' recipe: RAdam inside Lookahead(k=6, alpha=0.5).
  params = refs.initial_params(SHAPES, seed=12)
  opt = Lookahead(RectifiedAdam(1e-3, epsilon=1e-8))
  got = refs.tf_trajectory(opt, params, tf.float64, 60)
  reference = refs.NumpyLookahead(
      refs.TorchRAdam(params, lr=float(np.float32(1e-3)), eps=1e-8),
      sync_period=6, slow_step_size=0.5)
  want = refs.reference_trajectory(reference, 60)
  refs.assert_trajectories_close(got, want, rtol=1e-6, atol=1e-12)


def test_jit_compiled_steps_match_reference():
  params = refs.initial_params([(3, 2), (4,)], seed=19)
  opt = Lookahead(RectifiedAdam(LR, epsilon=1e-8), sync_period=3,
                  slow_step_size=0.5)
  got = refs.tf_trajectory(opt, params, tf.float64, 20, jit_compile=True)
  reference = refs.NumpyLookahead(
      refs.TorchRAdam(params, lr=LR, eps=1e-8), sync_period=3,
      slow_step_size=0.5)
  want = refs.reference_trajectory(reference, 20)
  refs.assert_trajectories_close(got, want, rtol=1e-6, atol=1e-12)


def test_sync_every_step_with_full_step_is_the_inner_optimizer():
  params = refs.initial_params(SHAPES, seed=13)
  opt = Lookahead(tf_keras.optimizers.legacy.SGD(LR), sync_period=1,
                  slow_step_size=1.0)
  got = refs.tf_trajectory(opt, params, tf.float64, 10)
  want = refs.reference_trajectory(refs.NumpySGD(params, LR), 10)
  refs.assert_trajectories_close(got, want, rtol=1e-12, atol=1e-14)


def test_sparse_gradients():
  shape = (5, 2)
  indices = np.array([1, 3, 3])
  params = refs.initial_params([shape], seed=14)
  opt = Lookahead(tf_keras.optimizers.legacy.SGD(LR, momentum=0.5),
                  sync_period=3, slow_step_size=0.5)
  var = tf.Variable(params[0], dtype=tf.float64)
  reference = refs.NumpyLookahead(refs.NumpySGD(params, LR, momentum=0.5),
                                  sync_period=3, slow_step_size=0.5)

  @tf.function
  def apply(values):
    grad = tf.IndexedSlices(values, tf.constant(indices),
                            tf.constant(shape, tf.int64))
    opt.apply_gradients([(grad, var)])

  for step in range(1, 11):
    values = np.cos(var.numpy()[indices]) + 0.1 * step
    apply(tf.constant(values))
    dense = np.zeros(shape)
    np.add.at(dense, indices,
              np.cos(reference.get()[0][indices]) + 0.1 * step)
    reference.step([dense])
    np.testing.assert_allclose(var.numpy(), reference.get()[0], rtol=1e-12,
                               err_msg=f"step {step}")


def test_inner_gradient_clipping_applies():
  # The inner optimizer's clipnorm must not be bypassed by the wrapper.
  var = tf.Variable([3.0, 4.0], dtype=tf.float64)
  opt = Lookahead(tf_keras.optimizers.legacy.SGD(0.5, clipnorm=1.0),
                  sync_period=10)
  opt.apply_gradients([(tf.constant([30.0, 40.0], tf.float64), var)])
  np.testing.assert_allclose(var.numpy(), [3.0 - 0.3, 4.0 - 0.4], rtol=1e-7)


def test_eager_apply_matches_numpy():
  params = refs.initial_params([(3,)], seed=15)
  opt = Lookahead(tf_keras.optimizers.legacy.SGD(LR), sync_period=2,
                  slow_step_size=0.25)
  var = tf.Variable(params[0])
  reference = refs.NumpyLookahead(refs.NumpySGD(params, LR), 2, 0.25)
  for step in range(1, 8):
    opt.apply_gradients(zip(
        [tf.constant(g) for g in refs.grad_fn(step, [var.numpy()])], [var]))
    reference.step(refs.grad_fn(step, reference.get()))
    np.testing.assert_allclose(var.numpy(), reference.get()[0], rtol=1e-12)


def test_checkpoint_resume_continues_identically(tmp_path):
  params = refs.initial_params([(3, 4), (2,)], seed=16)

  def make():
    opt = Lookahead(RectifiedAdam(0.01), sync_period=5, slow_step_size=0.5)
    runner = refs.TFRunner(opt, params, tf.float32)
    ckpt = tf.train.Checkpoint(optimizer=opt, variables=runner.variables)
    return runner, ckpt

  uninterrupted, ckpt = make()
  path = None
  for step in range(1, 17):
    uninterrupted.step(step, refs.grad_fn(step, uninterrupted.get()))
    if step == 7:  # Between syncs: slow and fast weights differ.
      path = ckpt.write(str(tmp_path / "ckpt"))
  expected = uninterrupted.get()

  names = [name for name, _ in tf.train.list_variables(path)]
  assert any("/slow/" in n or n.endswith("slow/.ATTRIBUTES/VARIABLE_VALUE")
             for n in names), names
  assert any("inner_optimizer/iter" in n for n in names), names
  assert any(".OPTIMIZER_SLOT/optimizer/inner_optimizer/m/" in n
             for n in names), names

  resumed, ckpt = make()
  status = ckpt.read(path)
  assert int(resumed.optimizer.iterations.numpy()) == 7
  for step in range(8, 17):  # Syncs at steps 10 and 15 use restored slots.
    resumed.step(step, refs.grad_fn(step, resumed.get()))
  status.assert_consumed()
  for got, want in zip(resumed.get(), expected):
    np.testing.assert_array_equal(got, want)


def test_learning_rate_and_iterations_are_the_inner_ones():
  schedule = tf_keras.optimizers.schedules.PolynomialDecay(0.1, 10, 0.0)
  inner = RectifiedAdam(schedule)
  opt = Lookahead(inner)
  assert opt.learning_rate is schedule and opt.lr is schedule
  assert opt.iterations is inner.iterations
  opt.learning_rate = 0.25
  assert float(inner.learning_rate) == 0.25
  opt.lr = 0.5
  assert float(opt.learning_rate) == 0.5
  assert opt.inner_optimizer is inner
  var = tf.Variable([1.0, 2.0])
  opt.apply_gradients([(tf.constant([1.0, 1.0]), var)])
  assert int(inner.iterations.numpy()) == 1
  # iterations first, then the inner slots, then the slow weights.
  names = [w.name for w in opt.weights]
  assert names[0].endswith("iter:0") and names[-1].endswith("slow:0"), names
  assert len(opt.get_weights()) == len(names)


def test_loss_scale_optimizer_matches_reference_and_skips_nonfinite():
  params = refs.initial_params(SHAPES, seed=17)
  opt = tf_keras.mixed_precision.LossScaleOptimizer(
      Lookahead(RectifiedAdam(1e-2, epsilon=1e-8), sync_period=4,
                slow_step_size=0.5), dynamic=True, initial_scale=2.0**10)
  variables = [tf.Variable(p, dtype=tf.float64) for p in params]

  @tf.function
  def step_fn(step, poison):
    with tf.GradientTape() as tape:
      loss = tf.add_n([
          tf.reduce_sum(g * v) for g, v in zip(
              refs.tf_grad_fn(step, [tf.stop_gradient(v) for v in variables]),
              variables)]) * poison
      scaled = opt.get_scaled_loss(loss)
    grads = opt.get_unscaled_gradients(tape.gradient(scaled, variables))
    opt.apply_gradients(zip(grads, variables))

  reference = refs.NumpyLookahead(
      refs.TorchRAdam(params, lr=float(np.float32(1e-2)), eps=1e-8), 4, 0.5)
  for step in range(1, 13):
    step_fn(tf.constant(step), tf.constant(1.0, tf.float64))
    reference.step(refs.grad_fn(step, reference.get()))
    for got, want in zip(variables, reference.get()):
      np.testing.assert_allclose(got.numpy(), want, rtol=1e-6, atol=1e-12)

  # A non-finite gradient skips the step (weights and slow weights kept) and
  # halves the loss scale; Keras still counts the step.
  before = [v.numpy() for v in variables]
  slow_before = [opt.inner_optimizer.get_slot(v, "slow").numpy()
                 for v in variables]
  step_fn(tf.constant(13), tf.constant(np.inf, tf.float64))
  for v, b in zip(variables, before):
    np.testing.assert_array_equal(v.numpy(), b)
  for v, b in zip(variables, slow_before):
    np.testing.assert_array_equal(
        opt.inner_optimizer.get_slot(v, "slow").numpy(), b)
  assert float(opt.loss_scale) == 2.0**9
  assert int(opt.iterations.numpy()) == 13


def test_mixed_precision_keras_fit():
  # Keras wraps the optimizer in a LossScaleOptimizer under mixed_float16;
  # the float32 variables keep float32 slow weights, and with 8 steps and
  # sync_period 4 the last step is a sync: weights == slow weights.
  # A step whose scaled gradients overflow float16 is skipped by the loss
  # scaler but still counted in `iterations` (so a sync can be skipped with
  # it); small inputs, fixed weights and a fixed batch order keep every
  # scaled gradient finite, and the unchanged loss scale checks that.
  tf_keras.mixed_precision.set_global_policy("mixed_float16")
  try:
    tf_keras.utils.set_random_seed(18)
    model = tf_keras.Sequential([
        tf_keras.layers.Dense(3, input_shape=(4,)),
        tf_keras.layers.Dense(1, dtype="float32")])
    opt = Lookahead(RectifiedAdam(1e-2), sync_period=4)
    model.compile(optimizer=opt, loss="mse")
    assert isinstance(model.optimizer,
                      tf_keras.mixed_precision.LossScaleOptimizer)
    rng = np.random.default_rng(18)
    x = 0.1 * rng.normal(size=(16, 4)).astype(np.float32)
    y = 0.1 * rng.normal(size=(16, 1)).astype(np.float32)
    initial = [w.numpy() for w in model.trainable_weights]
    initial_scale = float(model.optimizer.loss_scale.numpy())
    model.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0)
  finally:
    tf_keras.mixed_precision.set_global_policy("float32")
  assert float(model.optimizer.loss_scale.numpy()) == initial_scale
  assert int(opt.iterations.numpy()) == 8
  for w, w0 in zip(model.trainable_weights, initial):
    slow = opt.get_slot(w, "slow")
    assert slow.dtype == tf.float32
    np.testing.assert_array_equal(w.numpy(), slow.numpy())
    assert not np.allclose(w.numpy(), w0)


def test_get_config_round_trip():
  opt = Lookahead(RectifiedAdam(0.01, beta_2=0.99), sync_period=5,
                  slow_step_size=0.8, name="la")
  config = opt.get_config()
  assert config["sync_period"] == 5 and config["slow_step_size"] == 0.8
  restored = tf_keras.optimizers.deserialize(
      tf_keras.optimizers.serialize(opt), use_legacy_optimizer=True)
  assert isinstance(restored, Lookahead)
  assert isinstance(restored.inner_optimizer, RectifiedAdam)
  assert restored.get_config() == config


@pytest.mark.parametrize("kwargs,name", [
    (dict(sync_period=0), "sync_period"),
    (dict(sync_period=-3), "sync_period"),
    (dict(slow_step_size=0.0), "slow_step_size"),
    (dict(slow_step_size=1.5), "slow_step_size"),
    (dict(slow_step_size=-0.5), "slow_step_size"),
])
def test_bad_arguments_raise_value_error(kwargs, name):
  with pytest.raises(ValueError, match=name):
    Lookahead(tf_keras.optimizers.legacy.SGD(0.1), **kwargs)


def test_bad_argument_types_raise_type_error():
  with pytest.raises(TypeError, match="sync_period"):
    Lookahead(tf_keras.optimizers.legacy.SGD(0.1), sync_period=2.5)
  with pytest.raises(TypeError, match="optimizer"):
    Lookahead(tf_keras.optimizers.Adam(0.1))  # Not a legacy optimizer.
  with pytest.raises(TypeError, match="LossScaleOptimizer"):
    Lookahead(tf_keras.mixed_precision.LossScaleOptimizer(
        tf_keras.optimizers.legacy.SGD(0.1)))
