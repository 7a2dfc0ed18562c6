"""Dense (non-local) 2D self-attention over all pixels.

Every pixel attends to all H * W pixels (Wang et al. 2018, "Non-local Neural
Networks", embedded-Gaussian form: softmax over keys of q . k), so cost and
memory grow as (H * W)^2. Used as the global 2D baseline against axial
attention (O(HW (H + W))) in benchmarks and ablations.
"""

import tensorflow as tf
import tf_keras

from axial_deeplab_tf import layer_specs
from axial_deeplab_tf.layers import common


@tf_keras.utils.register_keras_serializable(package="AxialDeepLab")
class GlobalSelfAttention2D(common.SelfAttention2DBase):
  """Multi-head self-attention of each pixel over the whole image."""

  _spec = layer_specs.global_self_attention_2d

  @common.takes(_spec)
  def __init__(self, arguments, **kwargs):
    """Arguments: `layer_specs.global_self_attention_2d`; kwargs: tf_keras
    Layer's."""
    super().__init__(arguments, **kwargs)

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
