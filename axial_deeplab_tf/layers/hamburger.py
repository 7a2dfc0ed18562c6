"""Hamburger: global context by non-negative matrix factorisation (NMF).

From "Is Attention Better Than Matrix Decomposition?" (Geng et al., ICLR 2021)
and its use as the light decoder of SegNeXt (LightHamHead, a decoder
head: `modeling/heads/light_ham_head.py`).
"""

from typing import Tuple

import tensorflow as tf
import tf_keras


from axial_deeplab_tf import layer_specs
from axial_deeplab_tf.layers import common
from axial_deeplab_tf.layers import msca


@tf_keras.utils.register_keras_serializable(package="AxialDeepLab")
class NMF2D(common.RejectKeras3Tensors, common.SpecConfig,
            tf_keras.layers.Layer):
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

  _spec = layer_specs.nmf_2d

  @common.takes(_spec)
  def __init__(self, arguments, **kwargs):
    """Arguments: `layer_specs.nmf_2d`; kwargs: tf_keras Layer's."""
    super().__init__(**kwargs)
    layer_specs.store(self, arguments)

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


@tf_keras.utils.register_keras_serializable(package="AxialDeepLab")
class Hamburger(common.RejectKeras3Tensors,
                common.ConvLayerMixin, common.SpecConfig,
                tf_keras.layers.Layer):
  """Hamburger module: ReLU(x + GN(conv(NMF(ReLU(conv(x)))))).

  Lower bread: 1x1 conv with bias, ReLU (makes the NMF input non-negative);
  ham: NMF2D; upper bread: 1x1 conv without bias, GroupNorm.
  """

  _spec = layer_specs.hamburger

  @msca.takes(_spec)
  def __init__(self, arguments, **kwargs):
    """Arguments: `layer_specs.hamburger`; kwargs: tf_keras Layer's."""
    super().__init__(**kwargs)
    layer_specs.set_up(self, arguments, layer_specs.hamburger_ham(arguments),
                       {"nmf": NMF2D})

  def build(self, input_shape):
    channels = common.check_image_input_shape("Hamburger", input_shape)
    layer_specs.make_sublayers(
        self, layer_specs.hamburger_sublayers(self._arguments, channels),
        dict(common.SUBLAYERS, conv=self._conv))
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
