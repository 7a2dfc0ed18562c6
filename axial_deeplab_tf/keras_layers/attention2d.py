"""Keras 3 local (SASA / PS-SASA) and global 2D self-attention.

Twins of `axial_deeplab_tf.layers.local_attention.LocalSelfAttention2D` and
`axial_deeplab_tf.layers.global_attention.GlobalSelfAttention2D` (same
arguments, sub-layers and variable names), written with `keras.ops` only.
The local layer gathers each pixel's k x k key window explicitly (k^2
shifted views of the padded keys) instead of the tf_keras layer's query
blocks with halos: simpler and backend-neutral, at k^2 times the memory of
the keys; keys outside the image are masked out of the softmax and of the
similarity batch-norm statistics (`attention_math.window_validity`).
"""

import math
from typing import Any, Dict

import keras
from keras import ops

from axial_deeplab_tf import attention_math as am
from axial_deeplab_tf import layer_specs
from axial_deeplab_tf.keras_layers import base


class SelfAttention2DBase(base.SpecConfig, keras.layers.Layer):
  """Shared arguments, q/k/v projection and pooling of the 2D baselines."""

  def __init__(self, arguments: Dict[str, Any], **kwargs):
    super().__init__(**kwargs)
    layer_specs.store(self, arguments)
    self._key_head_depth = self._key_depth // self._num_heads
    self._value_head_depth = self._value_depth // self._num_heads

  def _build_qkv_projection(self, input_shape) -> None:
    channels = base.check_image_shape(self.__class__.__name__, input_shape)
    total = 2 * self._key_depth + self._value_depth
    self.qkv_projection = keras.layers.Conv2D(
        total, 1, use_bias=False,
        kernel_initializer=keras.initializers.TruncatedNormal(
            stddev=channels ** -0.5),
        kernel_regularizer=self._kernel_regularizer, name="qkv_projection")
    self.qkv_batch_norm = base.batch_norm(
        self._norm_momentum, self._norm_epsilon, "qkv_batch_norm")
    self.qkv_projection.build(tuple(input_shape))
    self.qkv_batch_norm.build(tuple(input_shape[:-1]) + (total,))

  def _project_qkv(self, inputs, training):
    qkv = self.qkv_batch_norm(self.qkv_projection(inputs), training=training)
    kd = self._key_depth
    return qkv[..., :kd], qkv[..., kd:2 * kd], qkv[..., 2 * kd:]

  def _build_pool(self) -> None:
    self._pool = (keras.layers.AveragePooling2D(
        self._strides, self._strides, padding="same", name="pool")
                  if self._strides > 1 else None)

  def _pool_output(self, outputs):
    return self._pool(outputs) if self._pool is not None else outputs

  def compute_output_shape(self, input_shape):
    size = [None if d is None else int(math.ceil(d / self._strides))
            for d in input_shape[1:3]]
    return (input_shape[0], *size, self._value_depth)


@base.register
class LocalSelfAttention2D(SelfAttention2DBase):
  """Multi-head self-attention of each pixel over its k x k window (Keras 3).

  Arguments as the tf_keras layer; `block_size` is kept in the config for
  interchange and does not change this implementation.
  """

  _spec = layer_specs.local_self_attention_2d

  @base.takes(_spec)
  def __init__(self, arguments, **kwargs):
    super().__init__(arguments, **kwargs)

  def build(self, input_shape):
    self._build_qkv_projection(input_shape)
    k = self._kernel_size

    def table(name, depth):
      return self.add_weight(
          name=name, shape=(k, depth),
          initializer=keras.initializers.TruncatedNormal(stddev=1.0))

    half_k = self._key_head_depth // 2
    half_v = self._value_head_depth // 2
    if self._use_relative_position:
      self.query_positional = (table("query_positional_height", half_k),
                               table("query_positional_width", half_k))
    if self._position_sensitive:
      self.key_positional = (table("key_positional_height", half_k),
                             table("key_positional_width", half_k))
      self.value_positional = (table("value_positional_height", half_v),
                               table("value_positional_width", half_v))
      norm = dict(momentum=self._norm_momentum, epsilon=self._norm_epsilon)
      self.similarity_norms = [
          base.MomentNorm((self._num_heads,), name=f"{t}_similarity_batch_norm",
                          **norm) for t in am.AXIAL_SIMILARITY_TERMS]
      self.output_norms = [
          base.MomentNorm((self._value_depth,), name=f"{t}_output_batch_norm",
                          **norm) for t in am.LOCAL_OUTPUT_TERMS]
      for layer in self.similarity_norms + self.output_norms:
        layer.build()
    self._build_pool()

  def _windows(self, x, height, width):
    """[B, H, W, C] -> [B, H, W, k * k, C]: each pixel's key window."""
    k, r = self._kernel_size, (self._kernel_size - 1) // 2
    x = ops.pad(x, [[0, 0], [r, r], [r, r], [0, 0]])
    return ops.stack([x[:, a:a + height, c:c + width]
                      for a in range(k) for c in range(k)], axis=3)

  def call(self, inputs, training=None):
    training = bool(training)
    n, k = self._num_heads, self._kernel_size
    dq, dvh = self._key_head_depth, self._value_head_depth
    half = dq // 2
    height, width = base.static_dim(inputs, 1), base.static_dim(inputs, 2)
    q, key, v = self._project_qkv(inputs, training)
    q = ops.reshape(q, (-1, height, width, n, dq))
    kw = ops.reshape(self._windows(key, height, width),
                     (-1, height, width, k * k, n, dq))
    vw = ops.reshape(self._windows(v, height, width),
                     (-1, height, width, k * k, n, dvh))
    terms = [ops.einsum("byxnd,byxknd->byxnk", q, kw)]
    if self._use_relative_position:
      rh, rw = self.query_positional
      row = ops.einsum("byxnd,ad->byxna", q[..., :half], rh)
      col = ops.einsum("byxnd,cd->byxnc", q[..., half:], rw)
      terms.append(ops.reshape(row[..., :, None] + col[..., None, :],
                               (-1, height, width, n, k * k)))
    if self._position_sensitive:
      rh, rw = self.key_positional
      kw6 = ops.reshape(kw, (-1, height, width, k, k, n, dq))
      row = ops.einsum("byxacnd,ad->byxnac", kw6[..., :half], rh)
      col = ops.einsum("byxacnd,cd->byxnac", kw6[..., half:], rw)
      terms.append(ops.reshape(row + col, (-1, height, width, n, k * k)))
    static = isinstance(height, int) and isinstance(width, int)
    valid = am.window_validity(height, width, k, **({} if static else
                                                   {"xp": ops}))
    valid = ops.convert_to_tensor(valid)  # [H, W, k*k] bool
    terms = [ops.cast(t, "float32") for t in terms]
    if self._position_sensitive:
      mask = ops.cast(valid, "float32")[None, :, :, :, None]
      terms = [ops.transpose(
          norm(ops.transpose(t, (0, 1, 2, 4, 3)), training=training,
               valid=mask), (0, 1, 2, 4, 3))
               for norm, t in zip(self.similarity_norms, terms)]
    logits = terms[0]
    for t in terms[1:]:
      logits = logits + t
    logits = ops.where(valid[None, :, :, None, :], logits, am.MASK_LOGIT)
    weights = ops.cast(ops.softmax(logits, axis=-1), vw.dtype)
    out = ops.reshape(ops.einsum("byxnk,byxknd->byxnd", weights, vw),
                      (-1, height, width, self._value_depth))
    if self._position_sensitive:
      rh, rw = self.value_positional
      w6 = ops.reshape(weights, (-1, height, width, n, k, k))
      row = ops.einsum("byxnac,ad->byxnd", w6, rh)
      col = ops.einsum("byxnac,cd->byxnd", w6, rw)
      positional = ops.reshape(ops.concatenate([row, col], axis=-1),
                               (-1, height, width, self._value_depth))
      out = (self.output_norms[0](out, training=training) +
             self.output_norms[1](positional, training=training))
    return self._pool_output(out)


@base.register
class GlobalSelfAttention2D(SelfAttention2DBase):
  """Multi-head self-attention of each pixel over the whole image (Keras 3)."""

  _spec = layer_specs.global_self_attention_2d

  @base.takes(_spec)
  def __init__(self, arguments, **kwargs):
    super().__init__(arguments, **kwargs)

  def build(self, input_shape):
    self._build_qkv_projection(input_shape)
    self._check_size(input_shape)
    if self._use_relative_position:
      half = self._key_head_depth // 2
      self.query_positional = [
          self.add_weight(
              name=f"query_positional_{axis}", shape=(2 * span - 1, half),
              initializer=keras.initializers.TruncatedNormal(stddev=1.0))
          for axis, span in zip(("height", "width"), self._relative_span)]
    if self._use_output_projection:
      self.output_projection = keras.layers.Conv2D(
          self._value_depth, 1, use_bias=True,
          kernel_initializer=keras.initializers.TruncatedNormal(
              stddev=self._value_depth ** -0.5),
          kernel_regularizer=self._kernel_regularizer,
          name="output_projection")
      self.output_projection.build((None, None, None, self._value_depth))
    self._build_pool()

  def _check_size(self, shape) -> None:
    if not self._use_relative_position:
      return
    for axis, size, span in zip(("height", "width"), tuple(shape)[1:3],
                                self._relative_span):
      if size is not None and size > span:
        raise ValueError(f"Input {axis} {size} exceeds relative_span "
                         f"{self._relative_span} of layer {self.name}.")

  def call(self, inputs, training=None):
    self._check_size(inputs.shape)
    n, dq, dvh = self._num_heads, self._key_head_depth, self._value_head_depth
    height, width = base.static_dim(inputs, 1), base.static_dim(inputs, 2)
    length = height * width
    q, k, v = self._project_qkv(inputs, bool(training))
    logits = ops.einsum("bqnd,bknd->bnqk", ops.reshape(q, (-1, length, n, dq)),
                        ops.reshape(k, (-1, length, n, dq)))
    logits = ops.cast(logits, "float32")
    if self._use_relative_position:
      half = dq // 2
      tables = []
      for size, span, table in zip((height, width), self._relative_span,
                                   self.query_positional):
        static = isinstance(size, int)
        idx = am.relative_rows(size, size, span - 1, 2 * span - 1,
                               **({} if static else {"xp": ops}))
        tables.append(ops.take(ops.cast(table, q.dtype), idx, axis=0))
      q5 = ops.reshape(q, (-1, height, width, n, dq))
      row = ops.einsum("bijnd,iad->bnija", q5[..., :half], tables[0])
      col = ops.einsum("bijnd,jcd->bnijc", q5[..., half:], tables[1])
      rel = ops.reshape(row[..., :, None] + col[..., None, :],
                        (-1, n, length, length))
      logits = logits + ops.cast(rel, "float32")
    weights = ops.cast(ops.softmax(logits, axis=-1), v.dtype)
    out = ops.einsum("bnqk,bknd->bqnd", weights,
                     ops.reshape(v, (-1, length, n, dvh)))
    out = ops.reshape(out, (-1, height, width, self._value_depth))
    if self._use_output_projection:
      out = self.output_projection(out)
    return self._pool_output(out)
