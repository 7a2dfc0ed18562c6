"""Dense (non-local) 2D self-attention over all pixels.

Every pixel attends to all H * W pixels (Wang et al. 2018, "Non-local Neural
Networks", embedded-Gaussian form: softmax over keys of q . k), so cost and
memory grow as (H * W)^2. Used as the global 2D baseline against axial
attention (O(HW (H + W))) in benchmarks and ablations.
"""

from typing import Any, Dict, Optional, Sequence

import tensorflow as tf
import tf_keras

from axial_deeplab_tf.layers import common


@tf_keras.utils.register_keras_serializable(package="AxialDeepLab")
class GlobalSelfAttention2D(common.SelfAttention2DBase):
  """Multi-head self-attention of each pixel over the whole image."""

  def __init__(self,
               key_depth: int,
               value_depth: int,
               num_heads: int = 8,
               use_relative_position: bool = False,
               relative_span: Optional[Sequence[int]] = None,
               strides: int = 1,
               use_output_projection: bool = False,
               kernel_regularizer: Optional[
                   tf_keras.regularizers.Regularizer] = None,
               use_sync_bn: bool = False,
               norm_momentum: float = 0.99,
               norm_epsilon: float = 0.001,
               **kwargs):
    """Initialises the layer.

    Args:
      key_depth: total query/key depth over all heads; divisible by
        num_heads (per-head depth even when use_relative_position).
      value_depth: total value (= output) depth over all heads; divisible by
        num_heads.
      num_heads: number of attention heads.
      use_relative_position: add a query-dependent relative-position logit:
        half of each head's query channels meet an embedding of the row
        offset, half one of the column offset (tables shared by all heads).
      relative_span: (max_height, max_width), needed iff
        use_relative_position: the tables have 2 * max - 1 rows, and inputs
        larger than this are rejected (by a runtime assertion when the size
        is only known at run time; XLA drops such assertions).
      strides: output stride; > 1 average-pools (pool = stride, 'same'
        padding) after attention.
      use_output_projection: apply a 1x1 convolution (value_depth ->
        value_depth, with bias) to the attention output, like the output
        transform of a non-local block.
      kernel_regularizer: regulariser of the projection kernels.
      use_sync_bn: use synchronised batch norm across replicas.
      norm_momentum: batch-norm moving-average momentum.
      norm_epsilon: batch-norm epsilon.
      **kwargs: tf_keras.layers.Layer arguments.
    """
    super().__init__(key_depth, value_depth, num_heads, strides,
                     kernel_regularizer, use_sync_bn, norm_momentum,
                     norm_epsilon, **kwargs)
    if use_relative_position:
      if relative_span is None or len(relative_span) != 2:
        raise ValueError(f"relative_span must be (max_height, max_width) "
                         f"with use_relative_position=True, got "
                         f"{relative_span!r}.")
      for name, value in zip(("relative_span[0]", "relative_span[1]"),
                             relative_span):
        common.check_positive_int(name, value)
      common.check_even_head_depth("key_depth", key_depth, num_heads,
                                   "use_relative_position")
      relative_span = [int(v) for v in relative_span]
    elif relative_span is not None:
      raise ValueError(f"relative_span is only used with "
                       f"use_relative_position=True, got relative_span="
                       f"{relative_span!r} and use_relative_position=False.")
    self._use_relative_position = bool(use_relative_position)
    self._relative_span = relative_span
    self._use_output_projection = bool(use_output_projection)

  def build(self, input_shape):
    self._build_qkv_projection(input_shape)
    self._check_size(tf.TensorShape(input_shape))
    if self._use_relative_position:
      half = self._key_head_depth // 2
      self._query_positional = [
          self.add_weight(
              name=f"query_positional_{axis}", shape=[2 * span - 1, half],
              initializer=tf_keras.initializers.TruncatedNormal(stddev=1.0),
              trainable=True)
          for axis, span in zip(("height", "width"), self._relative_span)]
    if self._use_output_projection:
      self._output_conv = tf_keras.layers.Conv2D(
          self._value_depth, 1, use_bias=True,
          kernel_initializer=tf_keras.initializers.TruncatedNormal(
              stddev=self._value_depth ** -0.5),
          kernel_regularizer=self._kernel_regularizer,
          name="output_projection")
      common.build_in_scope(self._output_conv,
                            [None, None, None, self._value_depth])
    self._build_pool()
    super().build(input_shape)

  def _check_size(self, shape: tf.TensorShape) -> None:
    if not self._use_relative_position:
      return
    for axis, size, span in zip(("height", "width"), shape[1:3],
                                self._relative_span):
      if size is not None and size > span:
        raise ValueError(f"Input {axis} {size} exceeds relative_span "
                         f"{self._relative_span} of layer {self.name}.")

  def _relative_logits(self, q, height, width):
    """Query-dependent relative logits [B, N, H*W, H*W] (float32)."""
    half = self._key_head_depth // 2
    tables = []
    for size, span, table in zip((height, width), self._relative_span,
                                 self._query_positional):
      # Row [i, m] of the absolute table is the embedding of offset m - i.
      index = tf.range(size)[None, :] - tf.range(size)[:, None] + span - 1
      tables.append(tf.gather(tf.cast(table, self.compute_dtype), index))
    batch = common.static_or_dynamic_shape(q)[0]
    q = tf.reshape(q, [batch, height, width, self._num_heads,
                       self._key_head_depth])
    row = tf.einsum("bijnd,iad->bnija", q[..., :half], tables[0])
    col = tf.einsum("bijnd,jcd->bnijc", q[..., half:], tables[1])
    length = height * width
    logits = (tf.reshape(row, [-1, length, height, 1]) +
              tf.reshape(col, [-1, length, 1, width]))
    return tf.cast(
        tf.reshape(logits, [batch, self._num_heads, length, length]),
        tf.float32)

  def call(self, inputs, training=None):
    """Runs global self-attention.

    Args:
      inputs: [batch, height, width, channels].
      training: the q/k/v batch norm uses batch statistics when True.

    Returns:
      [batch, ceil(height / strides), ceil(width / strides), value_depth].
    """
    self._check_size(inputs.shape)
    batch, height, width, _ = common.static_or_dynamic_shape(inputs)
    if self._use_relative_position and (inputs.shape[1] is None or
                                        inputs.shape[2] is None):
      size = tf.shape(inputs)[1:3]
      tf.debugging.assert_less_equal(
          size, tf.constant(self._relative_span, size.dtype),
          message=f"Input height/width exceed relative_span "
                  f"{self._relative_span} of layer {self.name}.")
    n = self._num_heads
    q, k, v = self._project_qkv(inputs, training)
    length = height * width
    logits = tf.einsum(
        "bqnd,bknd->bnqk",
        tf.reshape(q, [batch, length, n, self._key_head_depth]),
        tf.reshape(k, [batch, length, n, self._key_head_depth]))
    logits = tf.cast(logits, tf.float32)
    if self._use_relative_position:
      logits += self._relative_logits(q, height, width)
    weights = tf.cast(tf.nn.softmax(logits, axis=-1), self.compute_dtype)
    out = tf.einsum("bnqk,bknd->bqnd", weights,
                    tf.reshape(v, [batch, length, n, self._value_head_depth]))
    out = tf.reshape(out, [batch, height, width, self._value_depth])
    if self._use_output_projection:
      out = self._output_conv(out)
    return self._pool_output(out)

  def get_config(self) -> Dict[str, Any]:
    config = super().get_config()
    config.update({
        "use_relative_position": self._use_relative_position,
        "relative_span": self._relative_span,
        "use_output_projection": self._use_output_projection,
    })
    return config
