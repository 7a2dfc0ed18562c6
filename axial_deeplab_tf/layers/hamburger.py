"""Hamburger: global context by non-negative matrix factorisation (NMF).

From "Is Attention Better Than Matrix Decomposition?" (Geng et al., ICLR 2021)
and its use as the light decoder of SegNeXt (LightHamHead, now in
`modeling/heads/light_ham_head.py`; still importable from here).
"""

from typing import Any, Dict, Optional, Tuple

import tensorflow as tf
import tf_keras

from axial_deeplab_tf.layers import common
from axial_deeplab_tf.layers import msca


# NMF2D arguments that Hamburger and LightHamHead pass through.
_NMF_ARGUMENTS = ("rank", "num_channel_groups", "train_steps", "eval_steps",
                  "inv_t", "one_step_gradient", "seed")


def _check_positive_int(name: str, value: Any) -> int:
  if isinstance(value, bool) or not isinstance(value, int) or value < 1:
    raise ValueError(f"{name} must be a positive int, got {value!r}.")
  return value


@tf_keras.utils.register_keras_serializable(package="AxialDeepLab")
class NMF2D(common.RejectKeras3Tensors, tf_keras.layers.Layer):
  """Low-rank reconstruction of a non-negative feature map by NMF.

  The map is viewed as x [N = H*W, D] (per batch element and channel group)
  and factorised x ~ coef bases^T with coef [N, R] >= 0 and bases [D, R] >= 0
  by multiplicative updates (Lee & Seung), starting from random bases
  (U[0, 1), L2-normalised over D) and coef = softmax_R(inv_t * x bases):

    repeat steps times:
      coef  <- coef  * (x bases)    / (coef (bases^T bases) + eps)
      bases <- bases * (x^T coef)   / (bases (coef^T coef) + eps)
    coef <- coef * (x bases) / (coef (bases^T bases) + eps)
    output = coef bases^T

  steps = train_steps in training, eval_steps otherwise (training=None counts
  as inference). The inputs must be non-negative (Hamburger puts a ReLU
  before this layer); this is not checked at run time. Computation is in
  float32 under any mixed-precision policy (float64 for float64 inputs); the
  output has the input dtype.
  """

  def __init__(self,
               rank: int = 64,
               num_channel_groups: int = 1,
               train_steps: int = 6,
               eval_steps: int = 7,
               inv_t: float = 1.0,
               one_step_gradient: bool = True,
               seed: Optional[int] = None,
               epsilon: float = 1e-6,
               **kwargs):
    """Initializes the layer.

    Args:
      rank: R, the number of bases.
      num_channel_groups: S; channels are split into S groups of D = C / S
        channels, each factorised on its own (SegNeXt uses S = 1).
      train_steps: update iterations in training.
      eval_steps: update iterations at inference.
      inv_t: inverse temperature of the softmax initialising coef.
      one_step_gradient: if True, gradients flow only through the last coef
        update and the reconstruction (the iterations are treated as
        constants, O(1) memory in the number of steps), as in the original
        Hamburger; if False, through every iteration.
      seed: None draws new random bases in every call. An int makes the bases
        a fixed function of the seed (one draw of [S, D, R] shared by all
        batch elements), so outputs are reproducible and each image's output
        does not depend on the rest of the batch.
      epsilon: added to the denominators of the updates.
      **kwargs: keyword arguments of `tf_keras.layers.Layer`.
    """
    super().__init__(**kwargs)
    self._rank = _check_positive_int("rank", rank)
    self._num_channel_groups = _check_positive_int("num_channel_groups",
                                                   num_channel_groups)
    if isinstance(train_steps, bool) or not isinstance(
        train_steps, int) or train_steps < 0:
      raise ValueError(f"train_steps must be an int >= 0, got "
                       f"{train_steps!r}.")
    if isinstance(eval_steps, bool) or not isinstance(
        eval_steps, int) or eval_steps < 0:
      raise ValueError(f"eval_steps must be an int >= 0, got {eval_steps!r}.")
    self._train_steps = train_steps
    self._eval_steps = eval_steps
    if isinstance(inv_t, bool) or not isinstance(inv_t, (int, float)):
      raise TypeError(f"inv_t must be a number, got {inv_t!r}.")
    self._inv_t = float(inv_t)
    if not isinstance(one_step_gradient, bool):
      raise TypeError(f"one_step_gradient must be a bool, got "
                      f"{one_step_gradient!r}.")
    self._one_step_gradient = one_step_gradient
    if seed is not None and (isinstance(seed, bool) or
                             not isinstance(seed, int)):
      raise TypeError(f"seed must be None or an int, got {seed!r}.")
    self._seed = seed
    if not isinstance(epsilon, (int, float)) or epsilon <= 0:
      raise ValueError(f"epsilon must be a positive number, got {epsilon!r}.")
    self._epsilon = float(epsilon)

  def build(self, input_shape):
    channels = common.check_image_input_shape("NMF2D", input_shape)
    if channels % self._num_channel_groups:
      raise ValueError(f"channels ({channels}) must be divisible by "
                       f"num_channel_groups ({self._num_channel_groups}).")
    self._group_channels = channels // self._num_channel_groups
    super().build(input_shape)

  def sample_bases(self, batch_size) -> tf.Tensor:
    """Draws the initial bases.

    Args:
      batch_size: scalar int (Python or tensor), the batch size B.

    Returns:
      float32 [B * S, D, R], non-negative, unit L2 norm over D.
    """
    if not self.built:
      raise ValueError("NMF2D.sample_bases needs the channel count: call or "
                       "build the layer first.")
    shape = [self._num_channel_groups, self._group_channels, self._rank]
    if self._seed is None:
      bases = tf.random.uniform([batch_size] + shape, dtype=tf.float32)
    else:
      # Philox explicitly: the automatic choice differs under XLA, which
      # would make compiled and eager outputs disagree.
      bases = tf.random.stateless_uniform(shape, seed=[self._seed, 0],
                                          dtype=tf.float32, alg="philox")
      bases = tf.broadcast_to(bases[tf.newaxis], [batch_size] + shape)
    bases = tf.reshape(bases, [-1] + shape[1:])
    return tf.math.l2_normalize(bases, axis=1)

  def _coef_update(self, x, bases, coef):
    numerator = tf.matmul(x, bases)
    denominator = tf.matmul(coef, tf.matmul(bases, bases, transpose_a=True))
    return coef * numerator / (denominator + self._epsilon)

  def _bases_update(self, x, bases, coef):
    numerator = tf.matmul(x, coef, transpose_a=True)
    denominator = tf.matmul(bases, tf.matmul(coef, coef, transpose_a=True))
    return bases * numerator / (denominator + self._epsilon)

  def factorize(self, x: tf.Tensor, bases: tf.Tensor,
                steps: int) -> Tuple[tf.Tensor, tf.Tensor]:
    """Runs the multiplicative updates from given initial bases.

    Args:
      x: [G, N, D] non-negative data (G = batch * S), float32 or float64.
      bases: [G, D, R] initial bases, same dtype as x.
      steps: number of (coef, bases) update pairs before the final coef
        update.

    Returns:
      (coef [G, N, R], bases [G, D, R]) after the final coef update.
    """
    # One-step gradient: the iterations see a constant copy of x, so none of
    # them is recorded for backprop (memory independent of `steps`); only the
    # final coef update below carries a gradient to x.
    x_loop = tf.stop_gradient(x) if self._one_step_gradient else x
    bases = tf.stop_gradient(bases)
    coef = tf.nn.softmax(self._inv_t * tf.matmul(x_loop, bases), axis=-1)
    for _ in range(steps):
      coef = self._coef_update(x_loop, bases, coef)
      bases = self._bases_update(x_loop, bases, coef)
    coef = self._coef_update(x, bases, coef)
    return coef, bases

  def call(self, inputs, training=None, bases=None):
    """Reconstructs the inputs from their rank-R NMF.

    Args:
      inputs: [batch, height, width, channels], non-negative.
      training: selects train_steps (True) or eval_steps (False/None); a bool
        tensor selects with tf.cond.
      bases: optional [batch * S, D, R] initial bases instead of
        `sample_bases(batch)`.

    Returns:
      [batch, height, width, channels] in the dtype of `inputs`.
    """
    shape = tf.shape(inputs)
    batch, height, width = shape[0], shape[1], shape[2]
    groups, depth = self._num_channel_groups, self._group_channels
    # float32 at least: the multiplicative updates divide small numbers.
    compute_dtype = tf.float64 if inputs.dtype == tf.float64 else tf.float32
    x = tf.cast(inputs, compute_dtype)
    # [B, N, S, D] -> [B, S, N, D] -> [B*S, N, D]
    x = tf.reshape(x, [batch, height * width, groups, depth])
    if groups > 1:
      x = tf.transpose(x, [0, 2, 1, 3])
    x = tf.reshape(x, [-1, height * width, depth])
    if bases is None:
      bases = self.sample_bases(batch)
    bases = tf.cast(bases, compute_dtype)

    def run(steps):
      coef, final_bases = self.factorize(x, bases, steps)
      return tf.matmul(coef, final_bases, transpose_b=True)

    if training is None or isinstance(training, bool):
      y = run(self._train_steps if training else self._eval_steps)
    else:
      y = tf.cond(tf.cast(training, tf.bool),
                  lambda: run(self._train_steps),
                  lambda: run(self._eval_steps))
    y = tf.reshape(y, [batch, groups, height * width, depth])
    if groups > 1:
      y = tf.transpose(y, [0, 2, 1, 3])
    y = tf.reshape(y, [batch, height, width, groups * depth])
    return tf.cast(y, inputs.dtype)

  def get_config(self) -> Dict[str, Any]:
    config = super().get_config()
    config.update({
        "rank": self._rank,
        "num_channel_groups": self._num_channel_groups,
        "train_steps": self._train_steps,
        "eval_steps": self._eval_steps,
        "inv_t": self._inv_t,
        "one_step_gradient": self._one_step_gradient,
        "seed": self._seed,
        "epsilon": self._epsilon,
    })
    return config


def _group_norm(groups, epsilon, name):
  # Group statistics of fp16/bf16 activations lose precision; GN layers run
  # in float32 whatever the global policy and their outputs are cast back.
  return tf_keras.layers.GroupNormalization(
      groups=groups, epsilon=epsilon, name=name, dtype="float32")


@tf_keras.utils.register_keras_serializable(package="AxialDeepLab")
class Hamburger(common.RejectKeras3Tensors,
                common.ConvLayerMixin, tf_keras.layers.Layer):
  """Hamburger module: ReLU(x + GN(conv(NMF(ReLU(conv(x)))))).

  Lower bread: 1x1 conv with bias, ReLU (makes the NMF input non-negative);
  ham: NMF2D; upper bread: 1x1 conv without bias, GroupNorm.
  """

  def __init__(self,
               rank: int = 64,
               num_channel_groups: int = 1,
               train_steps: int = 6,
               eval_steps: int = 7,
               inv_t: float = 1.0,
               one_step_gradient: bool = True,
               seed: Optional[int] = None,
               norm_groups: int = 32,
               norm_epsilon: float = 1e-5,
               kernel_initializer: Any = None,
               kernel_regularizer: Optional[
                   tf_keras.regularizers.Regularizer] = None,
               bias_regularizer: Optional[
                   tf_keras.regularizers.Regularizer] = None,
               **kwargs):
    """Initializes the layer.

    Args:
      rank: NMF rank R (SegNeXt's MD_R).
      num_channel_groups: NMF channel groups S.
      train_steps: NMF iterations in training.
      eval_steps: NMF iterations at inference.
      inv_t: NMF softmax inverse temperature.
      one_step_gradient: NMF gradient mode, see `NMF2D`.
      seed: NMF bases seed, see `NMF2D`.
      norm_groups: GroupNorm groups; must divide the channels.
      norm_epsilon: GroupNorm epsilon.
      kernel_initializer: conv kernel initializer; default
        N(0, sqrt(2 / fan_out)).
      kernel_regularizer: optional regularizer of the conv kernels.
      bias_regularizer: optional regularizer of the conv biases.
      **kwargs: keyword arguments of `tf_keras.layers.Layer`.
    """
    super().__init__(**kwargs)
    # Validates the NMF arguments now rather than at first call.
    self.nmf = NMF2D(rank=rank, num_channel_groups=num_channel_groups,
                     train_steps=train_steps, eval_steps=eval_steps,
                     inv_t=inv_t, one_step_gradient=one_step_gradient,
                     seed=seed, name="nmf")
    self._norm_groups = _check_positive_int("norm_groups", norm_groups)
    self._norm_epsilon = norm_epsilon
    self._set_conv_arguments(
        kernel_initializer or msca.he_fan_out_initializer(),
        kernel_regularizer, bias_regularizer)

  @property
  def nmf_config(self) -> Dict[str, Any]:
    """The NMF2D arguments (rank ... seed) this Hamburger was made with."""
    config = self.nmf.get_config()
    return {k: config[k] for k in _NMF_ARGUMENTS}

  def build(self, input_shape):
    channels = common.check_image_input_shape("Hamburger", input_shape)
    if channels % self._norm_groups:
      raise ValueError(f"norm_groups ({self._norm_groups}) must divide the "
                       f"channels ({channels}).")
    self.lower_bread = self._conv(channels, 1, "lower_bread")
    self.upper_bread = self._conv(channels, 1, "upper_bread", use_bias=False)
    self.upper_norm = _group_norm(self._norm_groups, self._norm_epsilon,
                                  "upper_norm")
    super().build(input_shape)

  def call(self, inputs, training=None):
    """Applies the Hamburger.

    Args:
      inputs: [batch, height, width, channels].
      training: bool; selects the NMF step count.

    Returns:
      [batch, height, width, channels].
    """
    y = tf.nn.relu(self.lower_bread(inputs))
    y = self.nmf(y, training=training)
    y = self.upper_norm(self.upper_bread(y))
    return tf.nn.relu(inputs + tf.cast(y, inputs.dtype))

  def get_config(self) -> Dict[str, Any]:
    config = super().get_config()
    config.update(self.nmf_config)
    config.update(self._conv_config())
    config.update({"norm_groups": self._norm_groups,
                   "norm_epsilon": self._norm_epsilon})
    return config


def __getattr__(name):
  # The old import path of LightHamHead (a decoder head, moved up to the
  # modeling layer); imported on first use so that this layer does not
  # import the modeling layer when it loads.
  if name == "LightHamHead":
    from axial_deeplab_tf.modeling.heads import light_ham_head  # pylint: disable=g-import-not-at-top
    return light_ham_head.LightHamHead
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
