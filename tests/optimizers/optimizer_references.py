"""Independent references for the optimizer tests: torch.optim.RAdam and
plain numpy loops (Keras-style SGD and Adam, Lookahead, RAdam with any
rectification threshold), plus the gradient function the tests share.

Each reference holds its own parameters as float64 numpy arrays (or torch
tensors) and is stepped with gradients computed from its own parameters, so
a test compares two independent trajectories.
"""

import math
from typing import Callable, List, Optional, Sequence

import numpy as np
import torch


def grad_fn(step: int, params: Sequence[np.ndarray]) -> List[np.ndarray]:
  """Gradient of sum(sin(w) * s + c_t * w) for each parameter.

  The scale s and offset c_t differ per parameter and step so that moments
  and directions change along the run.

  Args:
    step: 1-based step number.
    params: the current parameters.

  Returns:
    One gradient per parameter, same shapes, float64.
  """
  grads = []
  for i, w in enumerate(params):
    w = np.asarray(w, np.float64)
    scale = 1.0 + 0.5 * i
    offset = 0.3 * math.sin(0.37 * step + i) + 0.05 * (i - 1)
    grads.append(scale * np.cos(w) + offset)
  return grads


def initial_params(shapes: Sequence[Sequence[int]],
                   seed: int = 0) -> List[np.ndarray]:
  rng = np.random.default_rng(seed)
  return [rng.normal(size=tuple(s)).astype(np.float64) for s in shapes]


class TorchRAdam:
  """torch.optim.RAdam over copies of the parameters."""

  def __init__(self, params: Sequence[np.ndarray], dtype=torch.float64,
               **kwargs):
    self.params = [torch.tensor(np.array(p), dtype=dtype, requires_grad=True)
                   for p in params]
    self.dtype = dtype
    self.optimizer = torch.optim.RAdam(self.params, **kwargs)

  def set_lr(self, lr: float) -> None:
    for group in self.optimizer.param_groups:
      group["lr"] = lr

  def get(self) -> List[np.ndarray]:
    return [p.detach().numpy().astype(np.float64) for p in self.params]

  def set(self, values: Sequence[np.ndarray]) -> None:
    with torch.no_grad():
      for p, v in zip(self.params, values):
        p.copy_(torch.tensor(np.array(v), dtype=self.dtype))

  def step(self, grads: Sequence[np.ndarray]) -> None:
    for p, g in zip(self.params, grads):
      p.grad = torch.tensor(np.array(g), dtype=self.dtype)
    self.optimizer.step()


class NumpyRAdam:
  """RAdam in float64 numpy with a configurable rectification threshold.

  Written from the paper's equations (torch's epsilon placement), for the
  thresholds torch cannot take.
  """

  def __init__(self, params, lr, beta_1, beta_2, eps, threshold):
    self.params = [np.array(p, np.float64) for p in params]
    self.m = [np.zeros_like(p) for p in self.params]
    self.v = [np.zeros_like(p) for p in self.params]
    self.lr, self.b1, self.b2, self.eps = lr, beta_1, beta_2, eps
    self.threshold = threshold
    self.t = 0

  def get(self):
    return [p.copy() for p in self.params]

  def set(self, values):
    self.params = [np.array(v, np.float64) for v in values]

  def rho(self, t: int) -> float:
    rho_inf = 2.0 / (1.0 - self.b2) - 1.0
    return rho_inf - 2.0 * t * self.b2**t / (1.0 - self.b2**t)

  def step(self, grads):
    self.t += 1
    t = self.t
    rho_inf = 2.0 / (1.0 - self.b2) - 1.0
    rho_t = self.rho(t)
    for i, g in enumerate(grads):
      self.m[i] = self.b1 * self.m[i] + (1.0 - self.b1) * g
      self.v[i] = self.b2 * self.v[i] + (1.0 - self.b2) * g * g
      m_hat = self.m[i] / (1.0 - self.b1**t)
      if rho_t > self.threshold:
        r = math.sqrt((rho_t - 4.0) * (rho_t - 2.0) * rho_inf /
                      ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t))
        denom = np.sqrt(self.v[i]) + self.eps
        self.params[i] = self.params[i] - self.lr * r * m_hat * math.sqrt(
            1.0 - self.b2**t) / denom
      else:
        self.params[i] = self.params[i] - self.lr * m_hat


class NumpySGD:
  """Keras' SGD: velocity = momentum * velocity - lr * g; w += velocity."""

  def __init__(self, params, lr, momentum=0.0):
    self.params = [np.array(p, np.float64) for p in params]
    self.velocity = [np.zeros_like(p) for p in self.params]
    self.lr, self.momentum = lr, momentum

  def get(self):
    return [p.copy() for p in self.params]

  def set(self, values):
    self.params = [np.array(v, np.float64) for v in values]

  def step(self, grads):
    for i, g in enumerate(grads):
      self.velocity[i] = self.momentum * self.velocity[i] - self.lr * g
      self.params[i] = self.params[i] + self.velocity[i]


class NumpyAdam:
  """Keras' Adam: w -= lr sqrt(1 - b2^t) / (1 - b1^t) m / (sqrt(v) + eps)."""

  def __init__(self, params, lr, beta_1, beta_2, eps):
    self.params = [np.array(p, np.float64) for p in params]
    self.m = [np.zeros_like(p) for p in self.params]
    self.v = [np.zeros_like(p) for p in self.params]
    self.lr, self.b1, self.b2, self.eps = lr, beta_1, beta_2, eps
    self.t = 0

  def get(self):
    return [p.copy() for p in self.params]

  def set(self, values):
    self.params = [np.array(v, np.float64) for v in values]

  def step(self, grads):
    self.t += 1
    alpha = self.lr * math.sqrt(1.0 - self.b2**self.t) / (1.0 - self.b1**self.t)
    for i, g in enumerate(grads):
      self.m[i] = self.b1 * self.m[i] + (1.0 - self.b1) * g
      self.v[i] = self.b2 * self.v[i] + (1.0 - self.b2) * g * g
      self.params[i] = self.params[i] - alpha * self.m[i] / (
          np.sqrt(self.v[i]) + self.eps)


class NumpyLookahead:
  """Slow/fast weights around any reference above (k steps, then sync)."""

  def __init__(self, inner, sync_period: int, slow_step_size: float):
    self.inner = inner
    self.k = sync_period
    self.alpha = slow_step_size
    self.slow = inner.get()
    self.t = 0

  def get(self):
    return self.inner.get()

  def step(self, grads):
    self.inner.step(grads)
    self.t += 1
    if self.t % self.k == 0:
      fast = self.inner.get()
      self.slow = [s + self.alpha * (f - s) for s, f in zip(self.slow, fast)]
      self.inner.set(self.slow)


class TFRunner:
  """TF variables plus a traced apply_gradients for dense numpy gradients."""

  def __init__(self, optimizer, params: Sequence[np.ndarray], dtype,
               jit_compile: bool = False):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    self._tf = tf
    self.dtype = dtype
    self.optimizer = optimizer
    self.variables = [tf.Variable(p, dtype=dtype) for p in params]

    @tf.function(jit_compile=jit_compile)
    def apply(grads):
      optimizer.apply_gradients(zip(grads, self.variables))

    self._apply = apply

  def step(self, step: int, grads: Sequence[np.ndarray]) -> None:
    del step
    self._apply([self._tf.constant(g, self.dtype) for g in grads])

  def get(self) -> List[np.ndarray]:
    return [v.numpy().astype(np.float64) for v in self.variables]


def tf_grad_fn(step, params):
  """grad_fn in TensorFlow ops (same formula, on the TF parameters)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  step = tf.cast(step, tf.float64)
  grads = []
  for i, w in enumerate(params):
    scale = 1.0 + 0.5 * i
    offset = 0.3 * tf.sin(0.37 * step + i) + 0.05 * (i - 1)
    grads.append(scale * tf.cos(w) + tf.cast(offset, w.dtype))
  return grads


def tf_trajectory(optimizer, params, dtype, num_steps: int,
                  jit_compile: bool = False) -> List[np.ndarray]:
  """Runs num_steps of optimizer on tf_grad_fn in one tf.function.

  Returns:
    Per parameter, its values after each step: [num_steps, *shape], float64.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  variables = [tf.Variable(p, dtype=dtype) for p in params]

  @tf.function(jit_compile=jit_compile)
  def run():
    arrays = [tf.TensorArray(dtype, size=num_steps) for _ in variables]
    for step in tf.range(1, num_steps + 1):
      optimizer.apply_gradients(zip(tf_grad_fn(step, variables), variables))
      arrays = [a.write(step - 1, tf.identity(v))
                for a, v in zip(arrays, variables)]
    return [a.stack() for a in arrays]

  return [t.numpy().astype(np.float64) for t in run()]


def reference_trajectory(reference, num_steps: int,
                         before_step: Optional[Callable[[int], None]] = None
                         ) -> List[np.ndarray]:
  """Steps a reference on grad_fn; same layout as tf_trajectory."""
  history = []
  for step in range(1, num_steps + 1):
    if before_step is not None:
      before_step(step)
    reference.step(grad_fn(step, reference.get()))
    history.append(reference.get())
  return [np.stack([h[i] for h in history]) for i in range(len(history[0]))]


def assert_trajectories_close(got, want, rtol: float, atol: float) -> None:
  """Compares step by step and names the first step that differs."""
  for i, (g, w) in enumerate(zip(got, want)):
    assert g.shape == w.shape, (i, g.shape, w.shape)
    for step in range(g.shape[0]):
      if not np.allclose(g[step], w[step], rtol=rtol, atol=atol):
        np.testing.assert_allclose(
            g[step], w[step], rtol=rtol, atol=atol,
            err_msg=f"parameter {i} differs first at step {step + 1}")
