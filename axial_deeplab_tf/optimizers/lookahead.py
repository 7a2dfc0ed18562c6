"""Lookahead (Zhang et al., "Lookahead Optimizer: k steps forward, 1 step
back", NeurIPS 2019) around any tf_keras legacy optimizer.

The inner ("fast") optimizer updates the weights theta as usual. Lookahead
keeps slow weights phi, initialised to the weights when it first sees them,
and after every `sync_period`-th step moves them part of the way towards the
fast weights and restarts the fast weights from there:

  phi <- phi + slow_step_size * (theta - phi);  theta <- phi.

The step count is the inner optimizer's `iterations` (shared, not a second
counter), so a sync happens when `iterations % sync_period == 0` after the
inner step; steps skipped by a LossScaleOptimizer count as steps, as they do
for every Keras optimizer.
"""

import numbers
from typing import Any, Dict, Optional

import tensorflow as tf
import tf_keras

# The wrapper delegates to the inner optimizer's private OptimizerV2 hooks,
# as Keras' LossScaleOptimizer and Model Garden's EMA wrapper do.
# pylint: disable=protected-access


@tf_keras.utils.register_keras_serializable(package="AxialDeepLab")
class Lookahead(tf_keras.optimizers.legacy.Optimizer):
  """Slow/fast weights around an inner tf_keras legacy optimizer.

  `apply_gradients` runs the inner optimizer's own `apply_gradients` (so its
  gradient clipping, aggregation, transformers and any wrapper logic such as
  Model Garden's EMA apply unchanged), then the Lookahead step on each
  replica's copy of every variable with `strategy.extended.update`, which is
  how Keras optimizers update mirrored variables.

  Checkpoints hold the slow weights as this optimizer's slot "slow" and the
  inner optimizer (its slots and `iter`) under "inner_optimizer". Wrap with
  `tf_keras.mixed_precision.LossScaleOptimizer(Lookahead(...))` for loss
  scaling; put an EMA wrapper outside Lookahead, not inside, so the average
  follows the weights after the sync.
  """

  # apply_gradients takes experimental_aggregate_gradients (Keras checks).
  _HAS_AGGREGATE_GRAD = True

  def __init__(self,
               optimizer: tf_keras.optimizers.legacy.Optimizer,
               sync_period: int = 6,
               slow_step_size: float = 0.5,
               name: str = "Lookahead"):
    """Creates the wrapper.

    Args:
      optimizer: the inner tf_keras legacy optimizer (not a LossScaleOptimizer:
        wrap Lookahead with the loss-scale wrapper instead).
      sync_period: k >= 1, the number of inner steps between syncs.
      slow_step_size: alpha in (0, 1], how far the slow weights move towards
        the fast weights at a sync.
      name: name prefix of the slot variables.

    Raises:
      TypeError: if `optimizer` is not a tf_keras legacy optimizer or
        `sync_period` is not an integer.
      ValueError: if `sync_period` or `slow_step_size` is out of range.
    """
    if not isinstance(optimizer, tf_keras.optimizers.legacy.Optimizer):
      raise TypeError(
          "optimizer must be a tf_keras.optimizers.legacy.Optimizer, got "
          f"{optimizer!r} of type {type(optimizer).__name__}.")
    if isinstance(optimizer, tf_keras.mixed_precision.LossScaleOptimizer):
      raise TypeError(
          "optimizer must not be a LossScaleOptimizer: wrap the Lookahead "
          "optimizer with LossScaleOptimizer instead, got "
          f"{type(optimizer).__name__}.")
    if isinstance(sync_period, bool) or not isinstance(
        sync_period, numbers.Integral):
      raise TypeError(f"sync_period must be an integer, got {sync_period!r}.")
    if sync_period < 1:
      raise ValueError(f"sync_period must be >= 1, got {sync_period}.")
    if isinstance(slow_step_size, bool) or not isinstance(
        slow_step_size, numbers.Real):
      raise TypeError(
          f"slow_step_size must be a real number, got {slow_step_size!r}.")
    if not 0.0 < slow_step_size <= 1.0:
      raise ValueError(
          f"slow_step_size must be in (0, 1], got {slow_step_size}.")

    super().__init__(name)
    self._optimizer = optimizer
    self._track_trackable(optimizer, "inner_optimizer")
    self._sync_period = int(sync_period)
    self._slow_step_size = float(slow_step_size)

  @property
  def inner_optimizer(self) -> tf_keras.optimizers.legacy.Optimizer:
    """The wrapped (fast) optimizer."""
    return self._optimizer

  @property
  def sync_period(self) -> int:
    return self._sync_period

  @property
  def slow_step_size(self) -> float:
    return self._slow_step_size

  # The inner optimizer's step counter and hyperparameters are the wrapper's:
  # Model Garden's trainer reads `optimizer.iterations` as the global step
  # and `optimizer.learning_rate` for its summaries.

  @property
  def iterations(self):
    return self._optimizer.iterations

  @iterations.setter
  def iterations(self, variable):
    self._optimizer.iterations = variable

  @property
  def learning_rate(self):
    return self._optimizer._get_hyper("learning_rate")

  @learning_rate.setter
  def learning_rate(self, value):
    self._optimizer._set_hyper("learning_rate", value)

  @property
  def lr(self):
    return self.learning_rate

  @lr.setter
  def lr(self, value):
    self.learning_rate = value

  def _get_hyper(self, name, dtype=None):
    if name in self._hyper:
      return super()._get_hyper(name, dtype)
    return self._optimizer._get_hyper(name, dtype)

  def _set_hyper(self, name, value):
    if name in self._optimizer._hyper:
      self._optimizer._set_hyper(name, value)
    else:
      super()._set_hyper(name, value)

  def _decayed_lr(self, var_dtype):
    return self._optimizer._decayed_lr(var_dtype)

  def _create_hypers(self):
    self._optimizer._create_hypers()
    super()._create_hypers()

  def _prepare(self, var_list):
    return self._optimizer._prepare(var_list)

  def _create_slow_slots(self, var_list):
    for var in var_list:
      # Initialised from the current weights, read when the slot is created
      # (outside any tf.function, before the first step changes them).
      self.add_slot(var, "slow", initializer=var)

  def _create_slots(self, var_list):
    self._optimizer._create_slots(var_list)
    self._create_slow_slots(var_list)

  def _create_all_weights(self, var_list):
    self._optimizer._create_all_weights(var_list)
    self._create_slow_slots(var_list)
    self._create_slots_for_sharded_variables(var_list)

  # Gradient processing belongs to the inner optimizer; LossScaleOptimizer
  # calls these two on the optimizer it wraps before checking for NaNs.
  def _transform_unaggregated_gradients(self, grads_and_vars):
    return self._optimizer._transform_unaggregated_gradients(grads_and_vars)

  def _aggregate_gradients(self, grads_and_vars):
    return self._optimizer._aggregate_gradients(grads_and_vars)

  def _transform_gradients(self, grads_and_vars):
    return self._optimizer._transform_gradients(grads_and_vars)

  def apply_gradients(self,
                      grads_and_vars,
                      name: Optional[str] = None,
                      experimental_aggregate_gradients: bool = True):
    """Takes one inner step, then syncs if `iterations % sync_period == 0`.

    Args:
      grads_and_vars: (gradient, variable) pairs; `None` gradients are
        skipped.
      name: optional name of the returned operation.
      experimental_aggregate_gradients: passed to the inner optimizer.

    Returns:
      An operation that runs the step (None when executing eagerly).
    """
    grads_and_vars = [(g, v) for g, v in grads_and_vars if g is not None]
    var_list = [v for _, v in grads_and_vars]
    if tf.distribute.in_cross_replica_context():
      raise RuntimeError(
          "apply_gradients() cannot be called in cross-replica context; use "
          "tf.distribute.Strategy.run to enter replica context.")
    with tf.name_scope(self._name):
      # Before the inner step: the slow weights start at the current weights.
      with tf.init_scope():
        self._create_slow_slots(var_list)
    train_op = self._optimizer.apply_gradients(
        grads_and_vars,
        name=name,
        experimental_aggregate_gradients=experimental_aggregate_gradients)
    if not var_list:
      return train_op
    # The inner result goes through the merge call so that every replica gets
    # the same (single) operation back, as from any Keras optimizer; a
    # per-replica result would break LossScaleOptimizer's cond.
    with tf.name_scope(self._name):
      return tf.__internal__.distribute.interim.maybe_merge_call(
          self._sync, tf.distribute.get_strategy(), var_list, train_op)

  def _sync(self, strategy, var_list, train_op):
    """Runs the Lookahead step on every variable (every replica's copy)."""
    deps = [] if train_op is None else tf.nest.flatten(train_op)
    with tf.control_dependencies(deps):
      do_sync = tf.equal(
          tf.math.floormod(self.iterations, self._sync_period), 0)
      update_ops = []
      for var in var_list:
        slow = self.get_slot(var, "slow")
        with strategy.extended.colocate_vars_with(var):
          update = strategy.extended.update(
              var, self._sync_one, args=(slow, do_sync), group=False)
        update_ops.extend(tf.nest.flatten(update))
      return tf.group(update_ops)

  def _sync_one(self, var, slow, do_sync):
    alpha = tf.constant(self._slow_step_size, slow.dtype)

    def sync():
      new_slow = slow + alpha * (var - slow)
      slow_update = slow.assign(new_slow, use_locking=self._use_locking)
      var_update = var.assign(new_slow, use_locking=self._use_locking)
      return tf.group(slow_update, var_update)

    return tf.cond(do_sync, sync, tf.no_op)

  @property
  def weights(self):
    return self._optimizer.weights + self._weights

  def variables(self):
    return self._optimizer.variables() + self._weights

  def get_config(self) -> Dict[str, Any]:
    return {
        "name": self._name,
        "optimizer": tf_keras.optimizers.serialize(self._optimizer),
        "sync_period": self._sync_period,
        "slow_step_size": self._slow_step_size,
    }

  @classmethod
  def from_config(cls, config, custom_objects=None):
    config = dict(config)
    optimizer = config.pop("optimizer")
    if isinstance(optimizer, dict):
      optimizer = tf_keras.optimizers.deserialize(
          optimizer, custom_objects=custom_objects, use_legacy_optimizer=True)
    return cls(optimizer, **config)
