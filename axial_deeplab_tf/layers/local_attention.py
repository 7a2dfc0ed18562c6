"""Stand-alone local 2D self-attention (SASA) and its position-sensitive form.

Ramachandran et al. 2019 ("Stand-Alone Self-Attention in Vision Models")
replace a k x k convolution by multi-head attention of every pixel over the
k x k window centred on it. The relative position embedding of a key at row
offset a and column offset b is the concatenation of a row-offset embedding
and a column-offset embedding, so the query-dependent positional logit is
`q[:d/2] . r_row[a] + q[d/2:] . r_col[b]`. With `position_sensitive=True`
the layer also adds the key-dependent logit and the value-dependent output
of Axial-DeepLab's position-sensitive attention, both split into row and
column halves in the same way, and batch-normalises every logit term and
both output terms like the axial layer does (the "PS-SASA" baseline).

Windows at the image border reach outside the image; those keys are zero
padding and are masked out of the softmax (and out of the batch-norm
statistics of the logits), so padding never receives attention.
"""

import tensorflow as tf
import tf_keras

from axial_deeplab_tf import attention_math
from axial_deeplab_tf import layer_specs
from axial_deeplab_tf.layers import common

# Added to masked logits before the float32 softmax; exp() of it is exactly 0
# while staying finite, so no inf - inf can appear under XLA.
_MASK_LOGIT = attention_math.MASK_LOGIT


_offset_tables = attention_math.offset_tables


@tf_keras.utils.register_keras_serializable(package="AxialDeepLab")
class LocalSelfAttention2D(common.SelfAttention2DBase):
  """Multi-head self-attention of each pixel over its k x k neighbourhood.

  Implementation: the image is cut into non-overlapping query blocks of
  `block_size` x `block_size` pixels; each block attends to its halo, the
  (block_size + k - 1)^2 region covering all its queries' windows, with one
  batched matmul, and a mask keeps for every query exactly its own k x k
  window (inside the image). On this project's 2-core CPU this measured
  faster than materialising the k^2 windows of every pixel (strided slices
  or `tf.image.extract_patches`), whose backward passes dominated, with
  XLA on and off; relative-position terms become small matmuls against
  one-hot offset tables instead of gathers.
  """

  _spec = layer_specs.local_self_attention_2d

  @common.takes(_spec)
  def __init__(self, arguments, **kwargs):
    """Arguments: `layer_specs.local_self_attention_2d`; kwargs: tf_keras
    Layer's.

    `block_size` is the query block side: it changes speed, memory and
    executed multiply-adds, never the result. Each query block computes
    logits for its (block_size + kernel_size - 1)^2 halo, so small blocks
    waste less; 4 measured fastest for kernel_size 7 at 28x28 and 56x56 on
    CPU (fewer wasted logits than 7 or 8, larger matmuls than 3), with XLA
    on and off.
    """
    super().__init__(arguments, **kwargs)
    self._radius = (self._kernel_size - 1) // 2
    self._block = self._block_size
    self._halo = self._block + 2 * self._radius
    self._offsets = _offset_tables(self._block, self._kernel_size)

  def build(self, input_shape):
    self._build_qkv_projection(input_shape)
    k = self._kernel_size

    def table(name, depth):
      return self.add_weight(
          name=name, shape=[k, depth], trainable=True,
          initializer=tf_keras.initializers.TruncatedNormal(stddev=1.0))

    half_k = self._key_head_depth // 2
    half_v = self._value_head_depth // 2
    if self._use_relative_position:
      self._query_positional = (table("query_positional_height", half_k),
                                table("query_positional_width", half_k))
    if self._position_sensitive:
      self._key_positional = (table("key_positional_height", half_k),
                              table("key_positional_width", half_k))
      self._value_positional = (table("value_positional_height", half_v),
                                table("value_positional_width", half_v))

      def norm(name, dtype=None):
        # Logit norms run in float32 (they feed the softmax); statistics
        # skip masked pairs via the mask argument, hence not fused.
        return common.batch_norm(
            self._norm_momentum, self._norm_epsilon, self._use_sync_bn, name,
            axis=-1, fused=False, dtype=dtype)

      self._similarity_norms = [
          norm(f"{t}_similarity_batch_norm", "float32")
          for t in ("content", "query_positional", "key_positional")]
      self._output_norms = [norm(f"{t}_output_batch_norm")
                            for t in ("content", "value_positional")]
      # Built here (not on first call) so that all weights exist right
      # after build, e.g. for set_weights or checkpoint restore.
      for layer in self._similarity_norms:
        common.build_in_scope(layer, [None, None, None, None,
                                      self._num_heads])
      for layer in self._output_norms:
        common.build_in_scope(layer, [None, None, None, self._value_depth])
    self._build_pool()
    super().build(input_shape)

  def _query_blocks(self, x, nh, nw):
    """[B, H, W, N*d] -> [B, nh*nw, N, bs, bs, d] non-overlapping blocks."""
    s = common.static_or_dynamic_shape(x)
    bs = self._block
    depth = x.shape[-1] // self._num_heads
    x = tf.pad(x, [[0, 0], [0, nh * bs - s[1]], [0, nw * bs - s[2]], [0, 0]])
    x = tf.reshape(x, [s[0], nh, bs, nw, bs, self._num_heads, depth])
    x = tf.transpose(x, [0, 1, 3, 5, 2, 4, 6])
    return tf.reshape(x, [s[0], nh * nw, self._num_heads, bs, bs, depth])

  def _halo_blocks(self, x, nh, nw):
    """[B, H, W, N*d] -> [B, nh*nw, N, hs, hs, d] overlapping halo blocks.

    Halo block (i, j) covers rows i*bs - r ... i*bs + bs + r - 1 (same for
    columns) with zeros outside the image. Built from a few reshaped
    strided slices per axis (each a block grid shifted by a whole block), so
    both passes are plain copies, with no gather or scatter.
    """
    s = common.static_or_dynamic_shape(x)
    bs, hs, r = self._block, self._halo, self._radius
    parts = -(-hs // bs)  # Block-shifted grids needed to cover a halo.
    channels = x.shape[-1]
    x = tf.pad(x, [[0, 0], [r, (nh + parts - 1) * bs - s[1] + r],
                   [r, (nw + parts - 1) * bs - s[2] + r], [0, 0]])
    width = common.static_or_dynamic_shape(x)[2]
    rows = []
    for p in range(parts):
      grid = tf.reshape(x[:, p * bs:p * bs + nh * bs],
                        [s[0], nh, bs, width, channels])
      rows.append(grid[:, :, :min(bs, hs - p * bs)])
    x = tf.concat(rows, axis=2)  # [B, nh, hs, Wp, C]
    cols = []
    for p in range(parts):
      grid = tf.reshape(x[:, :, :, p * bs:p * bs + nw * bs],
                        [s[0], nh, hs, nw, bs, channels])
      cols.append(grid[:, :, :, :, :min(bs, hs - p * bs)])
    x = tf.concat(cols, axis=4)  # [B, nh, hs, nw, hs, C]
    depth = channels // self._num_heads
    x = tf.reshape(x, [s[0], nh, hs, nw, hs, self._num_heads, depth])
    x = tf.transpose(x, [0, 1, 3, 5, 2, 4, 6])
    return tf.reshape(x, [s[0], nh * nw, self._num_heads, hs, hs, depth])

  def _unblock(self, x, nh, nw, height, width):
    """[B, nh*nw, N, bs, bs, d] -> [B, H, W, N*d] (head-major channels)."""
    bs = self._block
    depth = x.shape[-1]
    batch = common.static_or_dynamic_shape(x)[0]
    x = tf.reshape(x, [batch, nh, nw, self._num_heads, bs, bs, depth])
    x = tf.transpose(x, [0, 1, 4, 2, 5, 3, 6])
    x = tf.reshape(x, [batch, nh * bs, nw * bs, self._num_heads * depth])
    return x[:, :height, :width]

  def _masks(self, height, width, nh, nw):
    """Validity of (query, key) pairs and of queries, per block.

    Returns:
      pair_mask: bool [nh*nw, bs*bs, hs*hs]; key inside the query's window
        and inside the image.
      query_mask: bool [nh*nw, bs*bs]; query inside the image.
    """
    bs, hs, r = self._block, self._halo, self._radius
    # Which halo pixels fall in which query's window is the same for every
    # block: a constant [bs*bs, hs*hs] pattern.
    in_row = self._offsets.sum(axis=-1) > 0  # [bs, hs]
    in_window = tf.constant(
        (in_row[:, None, :, None] & in_row[None, :, None, :]).reshape(
            [bs * bs, hs * hs]))

    def inside(blocks, span, offset, size):
      pos = tf.range(blocks)[:, None] * bs + tf.range(span)[None, :] - offset
      return (pos >= 0) & (pos < size)  # [blocks, span]

    key_rows, key_cols = inside(nh, hs, r, height), inside(nw, hs, r, width)
    key_ok = tf.reshape(key_rows[:, None, :, None] & key_cols[None, :, None, :],
                        [nh * nw, 1, hs * hs])
    query_rows, query_cols = inside(nh, bs, 0, height), inside(nw, bs, 0, width)
    query = tf.reshape(
        query_rows[:, None, :, None] & query_cols[None, :, None, :],
        [nh * nw, bs * bs])
    return in_window[None] & key_ok, query

  def _normalise_similarity(self, index, logits, mask, training):
    """Batch norm of one logit term, per head, over valid (query, key) pairs."""
    # [B, nb, N, Q, K] -> [B, nb, Q, K, N]: the norm's channel axis (heads)
    # must be last for the masked statistics.
    logits = tf.transpose(logits, [0, 1, 3, 4, 2])
    logits = self._similarity_norms[index](logits, training=training,
                                           mask=mask[None])
    return tf.transpose(logits, [0, 1, 4, 2, 3])

  def call(self, inputs, training=None):
    """Runs local self-attention.

    Args:
      inputs: [batch, height, width, channels].
      training: batch norms use batch statistics when True.

    Returns:
      [batch, ceil(height / strides), ceil(width / strides), value_depth].
    """
    bs, hs, n = self._block, self._halo, self._num_heads
    dq = self._key_head_depth
    q, k, v = self._project_qkv(inputs, training)
    # Static sizes where known keep shapes static for shape inference and
    # the M-Adds counter; unknown ones stay tensors.
    batch, height, width, _ = common.static_or_dynamic_shape(inputs)
    nh = (height + bs - 1) // bs
    nw = (width + bs - 1) // bs
    nb = nh * nw

    q = self._query_blocks(q, nh, nw)  # [B, nb, N, bs, bs, dq]
    k = self._halo_blocks(k, nh, nw)  # [B, nb, N, hs, hs, dq]
    v = self._halo_blocks(v, nh, nw)  # [B, nb, N, hs, hs, dv]
    logit_shape = [batch, nb, n, bs * bs, hs * hs]
    content = tf.einsum("bpnqd,bpnkd->bpnqk",
                        tf.reshape(q, [batch, nb, n, bs * bs, dq]),
                        tf.reshape(k, [batch, nb, n, hs * hs, dq]))
    terms = [tf.cast(content, tf.float32)]
    offsets = tf.constant(self._offsets, dtype=self.compute_dtype)
    half = dq // 2
    if self._use_relative_position:
      # Per-query-row embedding tables [bs, hs, d/2]: offset Y - y's
      # embedding at halo row Y, zero outside the window (masked anyway).
      row_table = tf.einsum("yYa,ad->yYd", offsets,
                            tf.cast(self._query_positional[0],
                                    self.compute_dtype))
      col_table = tf.einsum("xXa,ad->xXd", offsets,
                            tf.cast(self._query_positional[1],
                                    self.compute_dtype))
      row = tf.einsum("bpnyxd,yYd->bpnyxY", q[..., :half], row_table)
      col = tf.einsum("bpnyxd,xXd->bpnyxX", q[..., half:], col_table)
      # Rank <= 5 broadcasting (CPU kernels support no more).
      query_term = (tf.reshape(row, [-1, bs * bs, hs, 1]) +
                    tf.reshape(col, [-1, bs * bs, 1, hs]))
      terms.append(tf.cast(tf.reshape(query_term, logit_shape), tf.float32))
    if self._position_sensitive:
      row_table = tf.einsum("yYa,ad->yYd", offsets,
                            tf.cast(self._key_positional[0],
                                    self.compute_dtype))
      col_table = tf.einsum("xXa,ad->xXd", offsets,
                            tf.cast(self._key_positional[1],
                                    self.compute_dtype))
      # The key term depends on the query only through its row (for the
      # row half) or its column (column half): bs x fewer products than
      # the content term.
      row = tf.einsum("bpnYXd,yYd->bpnyYX", k[..., :half], row_table)
      col = tf.einsum("bpnYXd,xXd->bpnxYX", k[..., half:], col_table)
      key_term = (tf.reshape(row, [-1, bs, 1, hs * hs]) +
                  tf.reshape(col, [-1, 1, bs, hs * hs]))
      terms.append(tf.cast(tf.reshape(key_term, logit_shape), tf.float32))

    pair_mask, query_mask = self._masks(height, width, nh, nw)
    if self._position_sensitive:
      valid = pair_mask & query_mask[:, :, None]
      terms = [self._normalise_similarity(i, t, valid, training)
               for i, t in enumerate(terms)]
    logits = tf.add_n(terms) if len(terms) > 1 else terms[0]
    logits = tf.where(pair_mask[None, :, None], logits, _MASK_LOGIT)
    weights = tf.cast(tf.nn.softmax(logits, axis=-1), self.compute_dtype)

    dvh = self._value_head_depth
    out = tf.einsum("bpnqk,bpnkd->bpnqd", weights,
                    tf.reshape(v, [batch, nb, n, hs * hs, dvh]))
    out = tf.reshape(out, [batch, nb, n, bs, bs, dvh])
    out = self._unblock(out, nh, nw, height, width)
    if self._position_sensitive:
      weights = tf.reshape(weights, [batch, nb, n, bs, bs, hs, hs])
      row_table = tf.einsum("yYa,ad->yYd", offsets,
                            tf.cast(self._value_positional[0],
                                    self.compute_dtype))
      col_table = tf.einsum("xXa,ad->xXd", offsets,
                            tf.cast(self._value_positional[1],
                                    self.compute_dtype))
      row = tf.einsum("bpnyxY,yYd->bpnyxd", tf.reduce_sum(weights, axis=-1),
                      row_table)
      col = tf.einsum("bpnyxX,xXd->bpnyxd", tf.reduce_sum(weights, axis=-2),
                      col_table)
      positional = self._unblock(tf.concat([row, col], axis=-1), nh, nw,
                                 height, width)
      out = (self._output_norms[0](out, training=training) +
             self._output_norms[1](positional, training=training))
    return self._pool_output(out)
