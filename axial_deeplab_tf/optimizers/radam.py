"""Rectified Adam (Liu et al., "On the Variance of the Adaptive Learning Rate
and Beyond", ICLR 2020) as a tf_keras legacy optimizer.

The update follows torch.optim.RAdam step for step:

  m_t = b1 m + (1 - b1) g            v_t = b2 v + (1 - b2) g^2
  rho_inf = 2 / (1 - b2) - 1         rho_t = rho_inf - 2 t b2^t / (1 - b2^t)
  if rho_t > rectify_threshold:
    w -= lr r_t (m_t / (1 - b1^t)) sqrt(1 - b2^t) / (sqrt(v_t) + eps)
    r_t = sqrt((rho_t - 4)(rho_t - 2) rho_inf
               / ((rho_inf - 4)(rho_inf - 2) rho_t))
  else:
    w -= lr m_t / (1 - b1^t)

Epsilon is added to sqrt(v_t) before the bias correction sqrt(1 - b2^t) is
applied, as torch.optim.RAdam and Keras' Adam do; adding it to the corrected
sqrt(v_t / (1 - b2^t)) instead (the original paper code, TF Addons) differs by
terms of the order of epsilon.

It is a `tf_keras.optimizers.legacy.Optimizer`, the kind Model Garden's
optimizer factory builds by default, that its EMA wrapper accepts and that
`tf_keras.mixed_precision.LossScaleOptimizer` wraps.
"""

import math
import numbers
from typing import Any, Dict, Union

import tensorflow as tf
import tf_keras

_LearningRate = Union[float,
                      tf_keras.optimizers.schedules.LearningRateSchedule]

# Below this value of z = t * -log(b2) the quantity 1 - z / expm1(z) is taken
# from its Taylor series: the closed form cancels catastrophically when z is
# small (early steps with b2 close to 1), which in float32 moves rho_t by up
# to 1e-2 around the rectification switch.
_SERIES_SWITCH = 0.25


def _check_real(name: str, value: Any) -> float:
  if isinstance(value, bool) or not isinstance(value, numbers.Real):
    raise TypeError(f"{name} must be a real number, got {value!r} of type "
                    f"{type(value).__name__}.")
  value = float(value)
  if math.isnan(value):
    raise ValueError(f"{name} must not be NaN, got {value}.")
  return value


def _one_minus_z_over_expm1(z: tf.Tensor) -> tf.Tensor:
  """Returns 1 - z / (exp(z) - 1) for z > 0 without cancellation.

  Args:
    z: a positive float scalar.

  Returns:
    A scalar of z's dtype.
  """
  # z / (e^z - 1) = sum_n B_n z^n / n! with Bernoulli numbers B_n, so
  # 1 - z / (e^z - 1) = z/2 - z^2/12 + z^4/720 - z^6/30240 + z^8/1209600
  #                     - z^10/47900160 + O(z^12); below the switch the
  # dropped tail is under 1e-15 relative.
  z2 = z * z
  series = z * 0.5 - z2 * (1.0 / 12.0 - z2 * (
      1.0 / 720.0 - z2 * (1.0 / 30240.0 - z2 * (
          1.0 / 1209600.0 - z2 * (1.0 / 47900160.0)))))
  closed = 1.0 - z / tf.math.expm1(z)
  return tf.where(z < _SERIES_SWITCH, series, closed)


@tf_keras.utils.register_keras_serializable(package="AxialDeepLab")
class RectifiedAdam(tf_keras.optimizers.legacy.Optimizer):
  """Rectified Adam with optional L2 or decoupled weight decay.

  Weight decay (torch.optim.RAdam's two forms):
    * `decoupled_weight_decay=False` (default, torch's default): L2, the
      gradient becomes g + weight_decay * w before the moments are updated.
    * `decoupled_weight_decay=True`: the weights shrink first,
      w <- w (1 - lr * weight_decay), then take the RAdam step (AdamW style;
      this is also what TF Addons' RectifiedAdam did with `weight_decay`).

  Sparse gradients (`tf.IndexedSlices`) give exactly the update of the dense
  gradient that is zero outside the given rows (duplicate rows summed): the
  moments decay on every row, as in Keras' Adam.

  The per-step scalars (bias corrections, rho_t, r_t) are computed in float64
  for float64 variables and in float32 otherwise (TPUs have no float64), with
  a cancellation-free form of rho_t.
  """

  _HAS_AGGREGATE_GRAD = True

  def __init__(self,
               learning_rate: _LearningRate = 1e-3,
               beta_1: float = 0.9,
               beta_2: float = 0.999,
               epsilon: float = 1e-7,
               weight_decay: float = 0.0,
               rectify_threshold: float = 5.0,
               name: str = "RectifiedAdam",
               *,
               decoupled_weight_decay: bool = False,
               **kwargs):
    """Creates the optimizer.

    Args:
      learning_rate: a float >= 0, a
        `tf_keras.optimizers.schedules.LearningRateSchedule` (e.g. Model
        Garden's LinearWarmup) evaluated at `iterations`, or a callable
        without arguments.
      beta_1: decay of the first moment, in [0, 1).
      beta_2: decay of the second moment, in [0, 1).
      epsilon: >= 0, added to sqrt(v_t) (see the module docstring).
      weight_decay: >= 0; L2 or decoupled, see `decoupled_weight_decay`.
      rectify_threshold: the adaptive (rectified) step is taken when
        rho_t > rectify_threshold, otherwise the momentum step. torch uses 5.
        Must be >= 4, where r_t is real.
      name: name prefix of the slot variables.
      decoupled_weight_decay: False for L2 added to the gradient, True for
        w <- w (1 - lr * weight_decay) before the step.
      **kwargs: `clipnorm`, `clipvalue`, `global_clipnorm`, `decay` (Keras'
        time-based learning-rate decay), `gradient_aggregator`,
        `gradient_transformers`, as for every tf_keras legacy optimizer.

    Raises:
      ValueError: if an argument is out of range.
      TypeError: if an argument has the wrong type.
    """
    learning_rate = kwargs.pop("lr", learning_rate)
    if isinstance(learning_rate, numbers.Real):
      lr_value = _check_real("learning_rate", learning_rate)
      if lr_value < 0.0:
        raise ValueError(
            f"learning_rate must be >= 0, got {learning_rate}.")
    elif not (callable(learning_rate) or tf.is_tensor(learning_rate)):
      raise TypeError(
          "learning_rate must be a float, a LearningRateSchedule or a "
          f"callable, got {learning_rate!r}.")
    for arg_name, value in (("beta_1", beta_1), ("beta_2", beta_2)):
      value = _check_real(arg_name, value)
      if not 0.0 <= value < 1.0:
        raise ValueError(f"{arg_name} must be in [0, 1), got {value}.")
    epsilon = _check_real("epsilon", epsilon)
    if epsilon < 0.0:
      raise ValueError(f"epsilon must be >= 0, got {epsilon}.")
    weight_decay = _check_real("weight_decay", weight_decay)
    if weight_decay < 0.0:
      raise ValueError(f"weight_decay must be >= 0, got {weight_decay}.")
    rectify_threshold = _check_real("rectify_threshold", rectify_threshold)
    if rectify_threshold < 4.0:
      raise ValueError(
          "rectify_threshold must be >= 4 (r_t is not real for rho_t in "
          f"(2, 4)), got {rectify_threshold}.")
    if not isinstance(decoupled_weight_decay, bool):
      raise TypeError("decoupled_weight_decay must be a bool, got "
                      f"{decoupled_weight_decay!r}.")

    super().__init__(name, **kwargs)
    self._set_hyper("learning_rate", learning_rate)
    self._set_hyper("decay", self._initial_decay)
    # The betas stay Python floats (not hyper variables): a float32 variable
    # holding 0.999 would shift rho_inf by 1e-5 relative for float64 weights.
    self.beta_1 = float(beta_1)
    self.beta_2 = float(beta_2)
    self.epsilon = epsilon
    self.weight_decay = weight_decay
    self.rectify_threshold = rectify_threshold
    self.decoupled_weight_decay = decoupled_weight_decay

    self._rho_inf = 2.0 / (1.0 - self.beta_2) - 1.0
    # rho_t < rho_inf for every t, so if rho_inf does not clear the threshold
    # no step is ever rectified and rho_t need not be computed at all.
    self._can_rectify = self._rho_inf > rectify_threshold
    self._log_beta_1 = (math.log(self.beta_1) if self.beta_1 > 0.0
                        else -math.inf)
    self._log_beta_2 = (math.log(self.beta_2) if self.beta_2 > 0.0
                        else -math.inf)
    if self._can_rectify:
      # rho_t = rho_inf - (2 / y) z / expm1(z) with y = -log(b2), z = t y,
      #       = [rho_inf - 2 / y] + (2 / y) (1 - z / expm1(z)).
      # The bracket is a small constant, formed here in double precision.
      neg_log_b2 = -self._log_beta_2
      self._rho_offset = self._rho_inf - 2.0 / neg_log_b2
      self._rho_scale = 2.0 / neg_log_b2
      self._rect_scale = self._rho_inf / (
          (self._rho_inf - 4.0) * (self._rho_inf - 2.0))

  def _create_slots(self, var_list):
    for var in var_list:
      self.add_slot(var, "m")
    for var in var_list:
      self.add_slot(var, "v")

  def _prepare_local(self, var_device, var_dtype, apply_state):
    super()._prepare_local(var_device, var_dtype, apply_state)
    compute_dtype = tf.float64 if var_dtype == tf.float64 else tf.float32
    lr = self._decayed_lr(compute_dtype)
    step = tf.cast(self.iterations + 1, compute_dtype)

    bias_correction_1 = -tf.math.expm1(step * self._log_beta_1)
    bias_correction_2 = -tf.math.expm1(step * self._log_beta_2)
    if self._can_rectify:
      z = step * (-self._log_beta_2)
      rho_t = self._rho_offset + self._rho_scale * _one_minus_z_over_expm1(z)
      rectified = rho_t > self.rectify_threshold
      # Keep the unused branch finite: r_t is not real for rho_t in (2, 4).
      safe_rho = tf.where(rectified, rho_t, tf.constant(5.0, compute_dtype))
      rect = tf.sqrt(self._rect_scale * (safe_rho - 4.0) * (safe_rho - 2.0) /
                     safe_rho)
      zero = tf.zeros([], compute_dtype)
      adaptive_coef = tf.where(
          rectified,
          lr * rect * tf.sqrt(bias_correction_2) / bias_correction_1, zero)
      momentum_coef = tf.where(rectified, zero, lr / bias_correction_1)
    else:
      adaptive_coef = tf.zeros([], compute_dtype)
      momentum_coef = lr / bias_correction_1

    apply_state[(var_device, var_dtype)].update(
        dict(
            adaptive_coef=tf.cast(adaptive_coef, var_dtype),
            momentum_coef=tf.cast(momentum_coef, var_dtype),
            decoupled_decay=tf.cast(lr * self.weight_decay, var_dtype),
            epsilon=tf.constant(self.epsilon, var_dtype),
            beta_1=tf.constant(self.beta_1, var_dtype),
            one_minus_beta_1=tf.constant(1.0 - self.beta_1, var_dtype),
            beta_2=tf.constant(self.beta_2, var_dtype),
            one_minus_beta_2=tf.constant(1.0 - self.beta_2, var_dtype),
            weight_decay=tf.constant(self.weight_decay, var_dtype),
        ))

  def _coefficients(self, var, apply_state):
    var_device, var_dtype = var.device, var.dtype.base_dtype
    return ((apply_state or {}).get((var_device, var_dtype)) or
            self._fallback_apply_state(var_device, var_dtype))

  def _apply_step(self, var, m_t, v_t, coefficients):
    """Writes the weight update given the new moments."""
    step = m_t * (coefficients["adaptive_coef"] /
                  (tf.sqrt(v_t) + coefficients["epsilon"]) +
                  coefficients["momentum_coef"])
    if self.decoupled_weight_decay and self.weight_decay > 0.0:
      step = step + coefficients["decoupled_decay"] * var
    return var.assign_sub(step, use_locking=self._use_locking)

  def _resource_apply_dense(self, grad, var, apply_state=None):
    coefficients = self._coefficients(var, apply_state)
    if not self.decoupled_weight_decay and self.weight_decay > 0.0:
      grad = grad + coefficients["weight_decay"] * var
    m = self.get_slot(var, "m")
    v = self.get_slot(var, "v")
    m_t = m.assign(coefficients["beta_1"] * m +
                   coefficients["one_minus_beta_1"] * grad,
                   use_locking=self._use_locking)
    v_t = v.assign(coefficients["beta_2"] * v +
                   coefficients["one_minus_beta_2"] * tf.square(grad),
                   use_locking=self._use_locking)
    var_update = self._apply_step(var, m_t, v_t, coefficients)
    return tf.group(var_update, m_t, v_t)

  def _resource_apply_sparse(self, grad, var, indices, apply_state=None):
    # The base class has summed duplicate indices, so rows are unique here.
    coefficients = self._coefficients(var, apply_state)
    m = self.get_slot(var, "m")
    v = self.get_slot(var, "v")
    l2 = not self.decoupled_weight_decay and self.weight_decay > 0.0
    if l2:
      # With L2 the full gradient is g + wd w on every row: decay the moments
      # with the wd w part everywhere, then add what the sparse rows change:
      # (g + a)^2 - a^2 = g (g + 2 a) with a = wd w.
      decay_term = coefficients["weight_decay"] * var
      gathered_decay = tf.gather(decay_term, indices)
      m_base = (coefficients["beta_1"] * m +
                coefficients["one_minus_beta_1"] * decay_term)
      v_base = (coefficients["beta_2"] * v +
                coefficients["one_minus_beta_2"] * tf.square(decay_term))
      v_rows = grad * (grad + 2.0 * gathered_decay)
    else:
      m_base = coefficients["beta_1"] * m
      v_base = coefficients["beta_2"] * v
      v_rows = tf.square(grad)
    m_t = m.assign(m_base, use_locking=self._use_locking)
    with tf.control_dependencies([m_t]):
      m_t = self._resource_scatter_add(
          m, indices, coefficients["one_minus_beta_1"] * grad)
    v_t = v.assign(v_base, use_locking=self._use_locking)
    with tf.control_dependencies([v_t]):
      v_t = self._resource_scatter_add(
          v, indices, coefficients["one_minus_beta_2"] * v_rows)
    var_update = self._apply_step(var, m_t, v_t, coefficients)
    return tf.group(var_update, m_t, v_t)

  def get_config(self) -> Dict[str, Any]:
    config = super().get_config()
    config.update({
        "learning_rate": self._serialize_hyperparameter("learning_rate"),
        "decay": self._initial_decay,
        "beta_1": self.beta_1,
        "beta_2": self.beta_2,
        "epsilon": self.epsilon,
        "weight_decay": self.weight_decay,
        "rectify_threshold": self.rectify_threshold,
        "decoupled_weight_decay": self.decoupled_weight_decay,
    })
    return config
