"""Position-sensitive axial attention (Wang et al., Axial-DeepLab, ECCV 2020).

`AxialAttention` attends along one axis of a [batch, length, channels] tensor.
Its similarity has three terms per head, each batch-normalised on its own:
content (q_l . k_m), query-dependent position (q_l . r^q[m - l]) and
key-dependent position (k_m . r^k[m - l]); the retrieved output has two terms,
sum_m a_lm v_m and sum_m a_lm r^v[m - l], also batch-normalised separately.

How it is computed (measured choices; see BENCHMARKS.md):
  * Relative terms as matmuls batched over position. The rows of a relative
    table for every (query l, key m) pair form a small [L, L, depth] tensor
    that does not depend on the batch (a gather from the table, whose
    gradient is summed back densely). The query term is then one matmul
    batched over l, [L, batch*heads, depth] x [L, depth, L]; the key term is
    batched over m and the value term over l. One transpose brings each
    result to the [batch, heads, L, L] logits layout. No pads, slices or
    "skews" of the logits, whose gradients are slow strided scatters.
  * Batch norm of the similarity terms without passes over the logits. Each
    term's norm is an affine map per head, so its scale multiplies q or k
    (small tensors) before the matmul. In training, the batch statistics of
    the relative terms (and of the content term with a global span) come in
    closed form from depth x depth Gram matrices: sum_l,m (q_l . r_lm)^2 =
    sum_l q_l^T (sum_m r_lm r_lm^T) q_l.
  * Fused batch-norm kernels for the q/k/v projection and the two output
    terms; in inference the projection's norm, the content output's norm
    and both output offsets are folded into the projection kernel and bias.
  * AxialAttention2D runs the height pass on the [height, batch*width, C]
    layout, which is the NHWC input itself for batch 1 and is already the
    layout the position-batched matmuls want.
XLA (jit_compile) works but measured slower on CPU than these TF ops.

Inference (training=False) in float32 on a machine without GPU/TPU, outside
XLA, runs the fused CPU kernel of `ops/fused_attention.py` instead of the
graph above: one pass per query window computes the logits, the softmax
and both outputs without writing the [L, L] maps to memory (about 6x
faster at 257x257 with span 65). It gives the graph's results; training
always uses the graph.

Span:
  * span=None: global attention over the whole axis; the relative tables have
    2 * max_length - 1 rows (distances -(max_length-1)..max_length-1) and an
    input longer than max_length is an error.
  * span=odd int: a query at l attends to keys with |m - l| <= (span-1)/2.
    The tables have `span` rows (every row is used, none depends on the input
    size), so the layer runs on any length. Long inputs are split into query
    blocks that each attend to their block plus (span-1)/2 keys on each side,
    so the cost grows as length * span, not length^2. The similarity batch
    norm takes its statistics over valid (in-span) query/key pairs only.
"""

import tensorflow as tf
import tf_keras

from official.vision.modeling.layers import nn_layers
from axial_deeplab_tf import attention_math
from axial_deeplab_tf import layer_specs
from axial_deeplab_tf.layers import common
from axial_deeplab_tf.ops import fused_attention

_NEG_INF = attention_math.MASK_LOGIT


class _TF_INDEX_OPS:  # pylint: disable=invalid-name
  """The numpy names `attention_math.relative_rows` needs, for run-time sizes."""
  arange = staticmethod(tf.range)
  clip = staticmethod(tf.clip_by_value)


def _static_or_dynamic(x: tf.Tensor, axis: int):
  """Returns the static size of `axis` if known, else the dynamic one."""
  static = x.shape[axis]
  return static if static is not None else tf.shape(x)[axis]


def _relative_rows(query_length, key_length, offset, rows):
  """Table row of every (query l, key m) pair: m - l + offset, clipped.

  Pairs whose row falls outside [0, rows) are out of span; callers mask them
  (`attention_math.relative_rows`, shared with the Keras 3 layers).

  Returns:
    int32 [query_length, key_length]; a constant when the lengths are static.
  """
  if isinstance(query_length, int) and isinstance(key_length, int):
    return tf.constant(attention_math.relative_rows(query_length, key_length,
                                                    offset, rows))
  return attention_math.relative_rows(query_length, key_length, offset, rows,
                                      xp=_TF_INDEX_OPS)


def _expand_table(table, rows):
  """Rows `rows` ([P, P'] int32) of a small [rows, depth] table: [P, P', depth].

  A gather whose gradient is summed back into a dense [rows, depth] tensor
  (a plain gather's gradient is IndexedSlices, which optimizers and
  gradient checks handle less well for a table this small).
  """
  num_rows = table.shape[0]

  @tf.custom_gradient
  def expand(t):
    def grad(dy):
      flat = tf.reshape(dy, [-1, tf.shape(dy)[-1]])
      return tf.math.unsorted_segment_sum(flat, tf.reshape(rows, [-1]),
                                          num_rows)
    return tf.gather(t, rows), grad

  return expand(table)


def _relative_moments(x, table, mask, batch, heads):
  """Sum and sum of squares per head of a relative term, without the logits.

  The term is t[p, b, g, n, p'] = x[p, (b, g, n)] . table[p, p'] (p the
  position the matmul is batched over, p' the other one). Over the pairs
  that count, sum t = sum_p x_p . (sum_p' table) and
  sum t^2 = sum_p x_p^T (sum_p' table table^T) x_p, so both come from
  [P, depth, depth] matrices of the small table: O(positions * depth^2)
  instead of a pass over the logits and its gradient.

  Args:
    x: float32 [P, batch * blocks * heads, depth].
    table: float32 [P, P', depth].
    mask: None (every pair counts) or float32 [blocks, P, P'].
    batch: batch size.
    heads: number of heads.

  Returns:
    Two float32 [heads] tensors: the sum and the sum of squares.
  """
  depth = x.shape[-1]
  p_len = tf.shape(x)[0]
  if mask is None:
    linear = tf.reduce_sum(table, axis=1)[:, None, :]  # [P, 1, d]
    gram = tf.matmul(table, table, transpose_a=True)  # [P, d, d]
    x_gram = tf.matmul(x, gram)
  else:
    # Per block g: [P, g, d] and [P, g, d, d] over the valid pairs only.
    x = tf.reshape(x, [p_len, batch, -1, heads, depth])
    linear = tf.einsum("gpq,pqd->pgd", mask, table)[:, None, :, None, :]
    gram = tf.einsum("gpq,pqd,pqe->pgde", mask, table, table)
    x_gram = tf.einsum("pbgnd,pgde->pbgne", x, gram)
  sums = tf.reshape(tf.reduce_sum(x * linear, axis=-1), [p_len, batch, -1,
                                                          heads])
  squares = tf.reshape(tf.reduce_sum(x_gram * x, axis=-1),
                       [p_len, batch, -1, heads])
  return (tf.reduce_sum(sums, axis=[0, 1, 2]),
          tf.reduce_sum(squares, axis=[0, 1, 2]))


def _key_windows(x, num_blocks, block, window, radius, length):
  """Key windows of query blocks: window i holds positions from i*block - radius.

  Args:
    x: [batch, length, heads, depth].
    num_blocks: number of query blocks.
    block: query block length.
    window: keys per window (block + 2 * radius).
    radius: keys on each side of a block.
    length: the (static or dynamic) length of x.

  Returns:
    [batch, num_blocks, window, heads, depth]; positions outside the input
    are zeros.
  """
  pieces = -(-window // block)  # Blocks a window overlaps.
  total = (num_blocks + pieces - 1) * block
  x = tf.pad(x, [[0, 0], [radius, total - radius - length], [0, 0], [0, 0]])
  heads, depth = x.shape[2], x.shape[3]
  batch = tf.shape(x)[0]
  xb = tf.reshape(x, [batch, num_blocks + pieces - 1, block, heads, depth])
  parts = [
      tf.slice(xb, [0, p, 0, 0, 0], [-1, num_blocks, -1, -1, -1])
      for p in range(pieces)
  ]
  out = tf.concat(parts, axis=2) if pieces > 1 else parts[0]
  if pieces * block != window:
    out = tf.slice(out, [0, 0, 0, 0, 0], [-1, -1, window, -1, -1])
  # Slices of dynamic size lose the static dimensions; restore them.
  return tf.reshape(out, [batch, num_blocks, window, heads, depth])


def _local_mask(num_blocks, block, window, radius, length):
  """Which (query, window key) pairs of the query blocks count.

  Returns:
    float32 [num_blocks, 1, block, window]: 1 for an in-span pair of a real
    query and a real key (not padding), else 0.
  """
  query_pos = tf.range(num_blocks)[:, None, None] * block + tf.range(
      block)[None, :, None]
  key_pos = tf.range(num_blocks)[:, None, None] * block - radius + tf.range(
      window)[None, None, :]
  mask = ((tf.abs(key_pos - query_pos) <= radius) & (key_pos >= 0) &
          (key_pos < length) & (query_pos < length))
  return tf.cast(mask, tf.float32)[:, None]


def _band_mask(length: int, radius: int) -> tf.Tensor:
  """float32 [1, 1, length, length]: 1 where |m - l| <= radius, else 0."""
  return tf.constant(attention_math.band_mask(length, radius)[None, None])


@tf_keras.utils.register_keras_serializable(package="AxialDeepLab")
class AxialAttention(common.RejectKeras3Tensors, common.SpecConfig,
                     layer_specs.AxialAttentionSizes, tf_keras.layers.Layer):
  """Position-sensitive self-attention along one axis.

  Input [batch, length, channels] -> output [batch, length, value_depth].
  """

  _spec = layer_specs.axial_attention

  @common.takes(_spec)
  def __init__(self, arguments, **kwargs):
    """Arguments: `layer_specs.axial_attention`; kwargs: tf_keras Layer's."""
    super().__init__(**kwargs)
    layer_specs.store(self, arguments,
                      **layer_specs.axial_attention_sizes(arguments))

  def build(self, input_shape):
    input_shape = tf.TensorShape(input_shape)
    if input_shape.rank != 3:
      raise ValueError(f"AxialAttention expects inputs of rank 3 [batch, "
                       f"length, channels], got shape {input_shape}.")
    channels = input_shape[-1]
    if channels is None:
      raise ValueError("The channel dimension of the input must be known.")
    kernel_init = self._kernel_initializer or (
        tf_keras.initializers.TruncatedNormal(stddev=channels**-0.5))
    self._qkv = tf_keras.layers.Dense(
        2 * self._key_depth + self._value_depth,
        use_bias=False,
        kernel_initializer=kernel_init,
        kernel_regularizer=self._kernel_regularizer,
        name="qkv")
    # Sub-layers built here (not on a first call) get their own name scope,
    # so their variables read e.g. ".../height_attention/qkv/kernel".
    common.build_in_scope(self._qkv, input_shape)
    self._qkv_bn = common.batch_norm(
        self._norm_momentum, self._norm_epsilon, self._use_sync_bn, "qkv_bn",
        axis=-1)
    # Built (and called) on [batch, length, 1, channels]: rank 4 lets it use
    # the fused kernel; its weights are the same per-channel vectors.
    common.build_in_scope(self._qkv_bn, tf.TensorShape(
        [None, None, 1, 2 * self._key_depth + self._value_depth]))
    def pos_init():
      # A fresh initializer per table: one shared unseeded instance would
      # give the three tables identical values.
      if self._positional_initializer is None:
        return tf_keras.initializers.TruncatedNormal(stddev=1.0)
      init = tf_keras.initializers.get(self._positional_initializer)
      return init.__class__.from_config(init.get_config())
    head_key = self._key_depth // self._num_heads
    head_value = self._value_depth // self._num_heads
    rows = self.table_rows
    self.query_positional = self.key_positional = self.value_positional = None
    if self._use_query_positional:
      self.query_positional = self.add_weight(
          "query_positional", shape=[rows, head_key], initializer=pos_init())
    if self._use_key_positional:
      self.key_positional = self.add_weight(
          "key_positional", shape=[rows, head_key], initializer=pos_init())
    if self._use_value_positional:
      self.value_positional = self.add_weight(
          "value_positional", shape=[rows, head_value], initializer=pos_init())
    terms = self._num_similarity_terms
    heads = self._num_heads
    self.similarity_gamma = self.add_weight(
        "similarity_gamma", shape=[terms, heads], initializer="ones",
        dtype=tf.float32, experimental_autocast=False)
    self.similarity_beta = self.add_weight(
        "similarity_beta", shape=[terms, heads], initializer="zeros",
        dtype=tf.float32, experimental_autocast=False)
    on_read = dict(
        trainable=False,
        dtype=tf.float32,
        synchronization=tf.VariableSynchronization.ON_READ,
        aggregation=tf.VariableAggregation.MEAN,
        experimental_autocast=False)
    self.similarity_moving_mean = self.add_weight(
        "similarity_moving_mean", shape=[terms, heads], initializer="zeros",
        **on_read)
    self.similarity_moving_variance = self.add_weight(
        "similarity_moving_variance", shape=[terms, heads], initializer="ones",
        **on_read)
    self._output_bn = common.batch_norm(
        self._norm_momentum, self._norm_epsilon, self._use_sync_bn,
        "output_bn", axis=[-2, -1])
    common.build_in_scope(self._output_bn, input_shape[:-1].concatenate(
        [self._num_output_terms, self._value_depth]))
    super().build(input_shape)

  def _block_length_for(self) -> int:
    if self._block_length is not None:
      return self._block_length
    return max(self._radius, 8)

  # ---------------------------------------------------------------- moments
  def _reduce_moments(self, sums, sq_sums, count):
    """Turns per-head sums into mean/variance, across replicas if asked."""
    if self._use_sync_bn:
      ctx = tf.distribute.get_replica_context()
      if ctx is not None and ctx.num_replicas_in_sync > 1:
        sums, sq_sums, count = ctx.all_reduce(
            tf.distribute.ReduceOp.SUM, [sums, sq_sums, count])
    mean = sums / count
    var = tf.maximum(sq_sums / count - tf.square(mean), 0.0)
    return mean, var

  # --------------------------------------------------------------- the core
  def _is_global(self, length) -> bool:
    """Whether every key of an axis of `length` is in span."""
    return self._span is None or (isinstance(length, int) and
                                  length <= self._radius + 1)

  def _single_block(self, length) -> bool:
    """Whether all queries of `length` are computed as one block.

    True for global attention, and for a local span whenever the full
    [L, L] logits with a band mask are no larger than the query blocks with
    their halos (e.g. length 65 with span 65: 65^2 against 3 x 32 x 96).
    """
    if self._is_global(length):
      return True
    if not isinstance(length, int):
      return False
    block = self._block_length_for()
    blocks = -(-length // block)
    return length * length <= blocks * block * (block + 2 * self._radius)

  def _attend(self, q, k, v, rq, rk, rv, gamma, beta, moving_mean,
              moving_var, training, sequence_major=False):
    """Attention on [batch, length, heads, depth] q, k, v.

    With `sequence_major` q, k, v (and the outputs) are [length, batch, ...]:
    the relative terms are batched over positions anyway, so this layout
    saves their transposes (AxialAttention2D's height pass has it for free).

    Layout: queries are cut into `blocks` of Q positions, each attending to a
    window of K keys ([B, blocks, N, Q, K] logits; one block of Q = K = L
    for global attention). The content logits are a matmul batched over
    (batch, block, head). A relative term, e.g. q_l . r^q[m - l], is a matmul
    batched over the query position l instead: [Q, B*blocks*N, depth] x
    [Q, depth, K], where [Q, K, depth] holds the table rows of every (l, m)
    pair, gathered from the small table (it does not depend on the batch).
    One transpose then brings the result to the logits layout; the key term
    is batched over the key position, and the value term over l. Every large
    tensor moves through matmuls and plain transposes only (no pads, slices
    or skews of the logits, whose gradients are scatters).

    The batch norm of each similarity term is an affine map per head, so its
    scale is applied to q or k (small tensors) before the matmuls, and the
    batch statistics of the relative terms (and of the content term of global
    attention) come in closed form from depth x depth Gram matrices, so no
    elementwise pass over the logits is needed besides their sum and softmax.

    Returns:
      Retrieved content [B, L, N * dvh], retrieved positional [B, L, N * dvh]
      (or None), and the similarity batch mean and variance (or None).
    """
    length = _static_or_dynamic(q, 0 if sequence_major else 1)
    radius = self._radius
    heads = self._num_heads
    dvh = v.shape[-1]
    batch = tf.shape(q)[1 if sequence_major else 0]
    compute_dtype = q.dtype
    if not training and fused_attention.usable(compute_dtype):
      return self._attend_fused(q, k, v, rq, rk, rv, gamma, moving_var,
                                sequence_major)
    if sequence_major and not self._single_block(length):
      # Query blocks need the batch-major layout.
      q, k, v = [tf.transpose(t, [1, 0, 2, 3]) for t in (q, k, v)]
      out, out_pos, mean, var = self._attend(
          q, k, v, rq, rk, rv, gamma, beta, moving_mean, moving_var,
          training)
      out = tf.transpose(out, [1, 0, 2])
      if out_pos is not None:
        out_pos = tf.transpose(out_pos, [1, 0, 2])
      return out, out_pos, mean, var
    if self._single_block(length):
      # One block of all queries and keys; rows m - l + radius of the table;
      # a band mask unless every key is in span.
      num_blocks, q_len, k_len = 1, length, length
      padded = length
      if not sequence_major:
        qb = tf.expand_dims(q, 1)
        kw = tf.expand_dims(k, 1)
        vw = tf.expand_dims(v, 1)
      rows = _relative_rows(length, length, radius, self.table_rows)
      mask = None if self._is_global(length) else _band_mask(length, radius)
    else:
      q_len = self._block_length_for()
      k_len = q_len + 2 * radius
      num_blocks = (length + q_len - 1) // q_len
      padded = num_blocks * q_len
      qb = tf.pad(q, [[0, 0], [0, padded - length], [0, 0], [0, 0]])
      qb = tf.reshape(qb, [batch, num_blocks, q_len, heads, q.shape[-1]])
      kw = _key_windows(k, num_blocks, q_len, k_len, radius, length)
      vw = _key_windows(v, num_blocks, q_len, k_len, radius, length)
      # Window key j of a block is at distance j - radius - i from its query
      # i: table row j - i.
      rows = _relative_rows(q_len, k_len, 0, self.table_rows)
      mask = _local_mask(num_blocks, q_len, k_len, radius, length)

    def to_query_major(x):
      # [B, blocks, P, N, d] -> [P, B * blocks * N, d].
      x = tf.transpose(x, [2, 0, 1, 3, 4])
      return tf.reshape(x, [tf.shape(x)[0], -1, x.shape[-1]])

    def from_query_major(t, perm):
      # [P, B * blocks * N, P'] -> [B, blocks, N, Q, K] by `perm`.
      t = tf.reshape(t, [tf.shape(t)[0], batch, num_blocks, heads,
                         tf.shape(t)[-1]])
      return tf.transpose(t, perm)

    def scaled(x, s):
      # [B, blocks, N, P, d] times a per-head scale s [N].
      return x * tf.cast(tf.reshape(s, [heads, 1, 1]), compute_dtype)

    def scaled_rows(x, s):
      # [P, B * blocks * N, d] times a per-head scale s [N].
      p_len, depth = tf.shape(x)[0], x.shape[-1]
      x = tf.reshape(x, [p_len, -1, heads, depth])
      x = x * tf.cast(tf.reshape(s, [heads, 1]), compute_dtype)
      return tf.reshape(x, [p_len, -1, depth])

    if sequence_major:
      # [L, B, N, d] -> [B, 1, N, L, d]; the query-major form is a reshape.
      qc = tf.expand_dims(tf.transpose(q, [1, 2, 0, 3]), 1)
      kc = tf.expand_dims(tf.transpose(k, [1, 2, 0, 3]), 1)
      vc = tf.expand_dims(tf.transpose(v, [1, 2, 0, 3]), 1)
      to_rows = lambda x: tf.reshape(x, [length, -1, x.shape[-1]])
      qr = to_rows(q) if rq is not None else None
      kr = to_rows(k) if rk is not None else None
    else:
      qc = tf.transpose(qb, [0, 1, 3, 2, 4])  # [B, blocks, N, Q, d]
      kc = tf.transpose(kw, [0, 1, 3, 2, 4])
      vc = tf.transpose(vw, [0, 1, 3, 2, 4])
      qr = to_query_major(qb) if rq is not None else None
      kr = to_query_major(kw) if rk is not None else None
    table_q = _expand_table(rq, rows) if rq is not None else None  # [Q, K, d]
    table_k = (_expand_table(rk, tf.transpose(rows))  # [K, Q, d]
               if rk is not None else None)
    content = None
    mean = var = None
    if training:
      f32 = lambda x: tf.cast(x, tf.float32)
      sums, squares = [], []
      if mask is None:
        # sum_lm q_l.k_m = (sum q).(sum k); sum (q_l.k_m)^2 = <Q'Q, K'K>.
        qc32, kc32 = f32(qc), f32(kc)
        sums.append(tf.reduce_sum(
            tf.reduce_sum(qc32, axis=3) * tf.reduce_sum(kc32, axis=3),
            axis=[0, 1, 3]))
        squares.append(tf.reduce_sum(
            tf.matmul(qc32, qc32, transpose_a=True) *
            tf.matmul(kc32, kc32, transpose_a=True), axis=[0, 1, 3, 4]))
        count = tf.cast(batch, tf.float32) * tf.cast(q_len * k_len,
                                                     tf.float32)
      else:
        # A windowed Gram sum would cost more than one pass over the logits.
        content = f32(tf.matmul(qc, kc, transpose_b=True))
        masked = content * mask
        sums.append(tf.reduce_sum(masked, axis=[0, 1, 3, 4]))
        squares.append(tf.reduce_sum(masked * content, axis=[0, 1, 3, 4]))
        count = tf.cast(batch, tf.float32) * tf.reduce_sum(mask)
      pair_mask = None if mask is None else mask[:, 0]
      if rq is not None:
        s, sq = _relative_moments(f32(qr), f32(table_q), pair_mask, batch,
                                  heads)
        sums.append(s)
        squares.append(sq)
      if rk is not None:
        key_mask = (None if pair_mask is None else
                    tf.transpose(pair_mask, [0, 2, 1]))
        s, sq = _relative_moments(f32(kr), f32(table_k), key_mask, batch,
                                  heads)
        sums.append(s)
        squares.append(sq)
      mean, var = self._reduce_moments(tf.stack(sums), tf.stack(squares),
                                       count)
      scale = gamma * tf.math.rsqrt(var + self._norm_epsilon)
      shift = tf.reduce_sum(beta - mean * scale, axis=0)
    else:
      scale = gamma * tf.math.rsqrt(moving_var + self._norm_epsilon)
      shift = None  # Constant along the softmax axis: no effect (below).
    term = 0
    logits = []
    if content is not None:
      logits.append(content * tf.reshape(scale[term], [heads, 1, 1]))
    else:
      logits.append(tf.cast(
          tf.matmul(scaled(qc, scale[term]), kc, transpose_b=True),
          tf.float32))
    term += 1
    if rq is not None:
      t = tf.matmul(scaled_rows(qr, scale[term]),
                    table_q, transpose_b=True)
      logits.append(tf.cast(from_query_major(t, [1, 2, 3, 0, 4]), tf.float32))
      term += 1
    if rk is not None:
      t = tf.matmul(scaled_rows(kr, scale[term]), table_k, transpose_b=True)
      logits.append(tf.cast(from_query_major(t, [1, 2, 3, 4, 0]), tf.float32))
    sim = tf.add_n(logits) if len(logits) > 1 else logits[0]
    # The shift is constant along the softmax axis, so it does not change the
    # output; in training it is added so that the graph (and the gradient of
    # the batch-norm offset) is the batch norm's; in inference it is skipped.
    # (Carrying it as an extra depth channel of a matmul measured slower.)
    bias = tf.reshape(shift, [heads, 1, 1]) if shift is not None else None
    if mask is not None:
      mask_bias = (1.0 - mask) * _NEG_INF
      bias = mask_bias if bias is None else bias + mask_bias
    if bias is not None:
      sim = sim + bias
    weights = tf.cast(tf.nn.softmax(sim, axis=-1), compute_dtype)

    def to_sequence(x):
      # [B, blocks, Q, N, dvh] -> [B, L, N * dvh].
      x = tf.reshape(x, [batch, padded, heads * dvh])
      if mask is not None:
        x = tf.slice(x, [0, 0, 0], [-1, length, -1])
      return x

    out = tf.matmul(weights, vc)  # [B, blocks, N, Q, dvh]
    if sequence_major:
      out = tf.transpose(out, [3, 0, 1, 2, 4])
      out = tf.reshape(out, [length, batch, heads * dvh])
    else:
      out = to_sequence(tf.transpose(out, [0, 1, 3, 2, 4]))
    out_pos = None
    if rv is not None:
      wr = tf.transpose(weights, [3, 0, 1, 2, 4])
      wr = tf.reshape(wr, [q_len, -1, k_len])
      out_pos = tf.matmul(wr, _expand_table(rv, rows))  # [Q, B*blocks*N, dvh]
      if sequence_major:
        out_pos = tf.reshape(out_pos, [length, batch, heads * dvh])
      else:
        out_pos = tf.reshape(out_pos, [q_len, batch, num_blocks, heads, dvh])
        out_pos = to_sequence(tf.transpose(out_pos, [1, 2, 0, 3, 4]))
    return out, out_pos, mean, var

  def _attend_fused(self, q, k, v, rq, rk, rv, gamma, moving_var,
                    sequence_major):
    """Inference through the fused CPU kernel (ops/fused_attention.py)."""
    scale = gamma * tf.math.rsqrt(moving_var + self._norm_epsilon)
    zeros = tf.zeros([self._num_heads])
    terms = [scale[0]]
    term = 1
    for table in (rq, rk):
      if table is None:
        terms.append(zeros)
      else:
        terms.append(scale[term])
        term += 1
    out, out_pos = fused_attention.span_attention(
        q, k, v, rq, rk, rv, tf.stack(terms), radius=self._radius,
        sequence_major=sequence_major)
    return out, (out_pos if rv is not None else None), None, None

  # ------------------------------------------------------------------ call
  def _project(self, inputs, training, value_scale=None, value_shift=None):
    """Returns q, k, v [B, L, depth]: batch norm of the 1x1 projection.

    In inference the batch norm is folded into the kernel and a bias (or,
    for few rows, applied by the fused kernel); `value_scale` / `value_shift`
    ([value_depth] float32, or None) are folded into the value channels too
    (an affine map of v passes through attention unchanged, since each
    query's weights sum to one).
    """
    sizes = [self._key_depth, self._key_depth, self._value_depth]
    shape = tf.shape(inputs)
    if training:
      qkv = self._qkv(inputs)
      # Rank 4 lets the batch norm use the fused kernel.
      qkv = tf.reshape(qkv, [shape[0], shape[1], 1, qkv.shape[-1]])
      qkv = self._qkv_bn(qkv, training=training)
      qkv = tf.reshape(qkv, [shape[0], shape[1], qkv.shape[-1]])
      return tf.split(qkv, sizes, axis=-1)
    bn = self._qkv_bn
    f32 = lambda x: tf.cast(x, tf.float32)
    value_scale = (tf.ones([self._value_depth]) if value_scale is None else
                   value_scale)
    value_shift = (tf.zeros([self._value_depth]) if value_shift is None else
                   value_shift)
    ones = tf.ones([2 * self._key_depth])
    zeros = tf.zeros([2 * self._key_depth])
    out_scale = tf.concat([ones, value_scale], axis=0)
    out_shift = tf.concat([zeros, value_shift], axis=0)
    gamma = f32(bn.gamma) * out_scale
    beta = f32(bn.beta) * out_scale + out_shift
    channels = inputs.shape[-1]
    flat = tf.reshape(inputs, [-1, channels])
    rows = (None if inputs.shape[0] is None or inputs.shape[1] is None else
            inputs.shape[0] * inputs.shape[1])
    # (fused_batch_norm raises an epsilon below 1.001e-5 to that value, e.g.
    # the 1e-5 of imported PyTorch weights: those take the folded path.)
    if (rows is not None and 2 * rows < 3 * channels and
        inputs.dtype != tf.float64 and bn.epsilon > 1.001e-5):
      # Few rows: one batch-norm pass over the projection (and the split)
      # costs less than scaling and splitting the [channels, 2 * key +
      # value] kernel.
      qkv = tf.matmul(flat, tf.cast(self._qkv.kernel, inputs.dtype))
      qkv = tf.reshape(qkv, [shape[0], shape[1], 1, qkv.shape[-1]])
      qkv, _, _ = tf.compat.v1.nn.fused_batch_norm(
          qkv, gamma, beta, mean=f32(bn.moving_mean),
          variance=f32(bn.moving_variance), epsilon=bn.epsilon,
          is_training=False)
      qkv = tf.reshape(qkv, [shape[0], shape[1], qkv.shape[-1]])
      return tf.split(qkv, sizes, axis=-1)
    scale = gamma * tf.math.rsqrt(f32(bn.moving_variance) + bn.epsilon)
    shift = beta - f32(bn.moving_mean) * scale
    kernel = f32(self._qkv.kernel) * scale
    outputs = []
    for w, b in zip(tf.split(kernel, sizes, axis=1), tf.split(shift, sizes)):
      y = tf.nn.bias_add(tf.matmul(flat, tf.cast(w, inputs.dtype)),
                         tf.cast(b, inputs.dtype))
      outputs.append(tf.reshape(y, [shape[0], shape[1], w.shape[-1]]))
    return outputs

  def _output_affine(self):
    """Inference batch norm of the output terms: scale, shift [terms, C]."""
    bn = self._output_bn
    terms = self._num_output_terms
    f32 = lambda x: tf.reshape(tf.cast(x, tf.float32),
                               [terms, self._value_depth])
    scale = f32(bn.gamma) * tf.math.rsqrt(f32(bn.moving_variance) +
                                          bn.epsilon)
    shift = f32(bn.beta) - f32(bn.moving_mean) * scale
    return scale, shift

  def _normalize_outputs(self, terms):
    """Training batch norm of each retrieved term ([B, L, C]), summed."""
    bn = self._output_bn
    if (self._use_sync_bn or bn.epsilon <= 1.001e-5 or
        terms[0].dtype == tf.float64):
      # The fused kernel has neither cross-replica statistics, nor tiny eps,
      # nor float64.
      stacked = tf.stack(terms, axis=2)
      return tf.reduce_sum(bn(stacked, training=True), axis=2)
    count = len(terms)
    depth = self._value_depth
    f32 = lambda x: tf.reshape(tf.cast(x, tf.float32), [count, depth])
    gamma, beta = f32(bn.gamma), f32(bn.beta)
    shape = tf.shape(terms[0])
    outputs, means, variances = [], [], []
    for i, t in enumerate(terms):
      x = tf.reshape(tf.cast(t, tf.float32), [shape[0], shape[1], 1, depth])
      y, mean, var = tf.compat.v1.nn.fused_batch_norm(
          x, gamma[i], beta[i], epsilon=bn.epsilon, is_training=True)
      outputs.append(y)
      means.append(mean)
      variances.append(var)
    # The fused kernel returns the unbiased variance; the moving average
    # (as tf_keras' own batch norm does) tracks the biased one.
    n = tf.cast(shape[0] * shape[1], tf.float32)
    var = tf.stack(variances) * (n - 1.0) / n
    mean = tf.stack(means)
    for moving, value in ((bn.moving_mean, mean), (bn.moving_variance, var)):
      value = tf.cast(tf.reshape(tf.stop_gradient(value), moving.shape),
                      moving.dtype)
      moving.assign_sub((moving - value) * (1.0 - bn.momentum))
    out = tf.add_n(outputs) if count > 1 else outputs[0]
    return tf.cast(tf.reshape(out, shape), terms[0].dtype)

  # Only Python-level branches: skipping autograph's conversion of this
  # code makes building and tracing models several times faster.
  @tf.autograph.experimental.do_not_convert
  def call(self, inputs, training=None, sequence_major=False):
    """Attends along the length axis.

    Args:
      inputs: [batch, length, channels] ([length, batch, channels] if
        sequence_major).
      training: Python bool or None (Keras learning phase).
      sequence_major: the layout of inputs and outputs; AxialAttention2D
        uses it to skip transposes.

    Returns:
      [batch, length, value_depth] ([length, batch, value_depth] if
      sequence_major).
    """
    if inputs.shape.rank != 3:
      raise ValueError(f"AxialAttention expects inputs of rank 3 [batch, "
                       f"length, channels], got shape {inputs.shape}.")
    if training is None:
      training = tf_keras.backend.learning_phase()
    training = bool(tf.get_static_value(training)) if not isinstance(
        training, bool) else training
    sequence_major = bool(sequence_major)
    length = _static_or_dynamic(inputs, 0 if sequence_major else 1)
    if self._span is None:
      if isinstance(length, int):
        if length > self._max_length:
          raise ValueError(
              f"Global AxialAttention {self.name!r} was built for at most "
              f"max_length={self._max_length} positions, got {length}; use a "
              f"local span for longer inputs.")
      else:
        tf.debugging.assert_less_equal(
            length, self._max_length,
            message=f"Global AxialAttention {self.name}: input longer than "
            f"max_length={self._max_length}")
    out_scale = None
    if training:
      q, k, v = self._project(inputs, training)
    else:
      out_scale, out_shift = self._output_affine()
      q, k, v = self._project(inputs, training, value_scale=out_scale[0],
                              value_shift=tf.reduce_sum(out_shift, axis=0))
    heads = self._num_heads
    dk = self._key_depth // heads
    dv = self._value_depth // heads
    batch = tf.shape(inputs)[1 if sequence_major else 0]
    lead = [length, batch] if sequence_major else [batch, length]
    q = tf.reshape(q, lead + [heads, dk])
    k = tf.reshape(k, lead + [heads, dk])
    v = tf.reshape(v, lead + [heads, dv])
    tables = [
        None if t is None else tf.cast(t, q.dtype)
        for t in (self.query_positional, self.key_positional,
                  self.value_positional)
    ]
    gamma = tf.convert_to_tensor(self.similarity_gamma)
    beta = tf.convert_to_tensor(self.similarity_beta)
    moving_mean = tf.convert_to_tensor(self.similarity_moving_mean)
    moving_var = tf.convert_to_tensor(self.similarity_moving_variance)
    present = [i for i, t in enumerate(tables) if t is not None]

    def core(q, k, v, gamma, beta, *present_tables):
      full = [None, None, None]
      for i, t in zip(present, present_tables):
        full[i] = t
      out, out_pos, mean, var = self._attend(q, k, v, *full, gamma, beta,
                                             moving_mean, moving_var,
                                             training, sequence_major)
      results = [out] + ([out_pos] if out_pos is not None else [])
      if training:
        results += [mean, var]
      return tuple(results)

    args = [q, k, v, gamma, beta] + [tables[i] for i in present]
    if self._recompute_grad and training:
      results = tf.recompute_grad(core)(*args)
    else:
      results = core(*args)
    results = list(results)
    if training:
      var = results.pop()
      mean = results.pop()
      momentum = self._norm_momentum
      self.similarity_moving_mean.assign(
          self.similarity_moving_mean * momentum + tf.stop_gradient(mean) *
          (1.0 - momentum))
      self.similarity_moving_variance.assign(
          self.similarity_moving_variance * momentum + tf.stop_gradient(var) *
          (1.0 - momentum))
      return self._normalize_outputs(results)
    # Inference: the content term's scale and both shifts are in v already.
    out = results[0]
    if len(results) > 1:
      out = out + results[1] * tf.cast(out_scale[1], out.dtype)
    return out

  def compute_output_shape(self, input_shape):
    input_shape = tf.TensorShape(input_shape)
    return input_shape[:-1].concatenate([self._value_depth])


@tf_keras.utils.register_keras_serializable(package="AxialDeepLab")
class AxialAttention2D(common.RejectKeras3Tensors, common.SpecConfig,
                       tf_keras.layers.Layer):
  """Height-axis then width-axis AxialAttention on [batch, h, w, channels].

  The width layer takes the height layer's value_depth channels. With
  strides > 1 the output is average-pooled by `strides` after the width layer
  (as in the public PyTorch reference), so both attention layers attend at
  the input resolution, which is what the spans of the paper's models assume.
  """

  _spec = layer_specs.axial_attention_2d

  @common.takes(_spec)
  def __init__(self, arguments, **kwargs):
    """Arguments: `layer_specs.axial_attention_2d`; kwargs: tf_keras Layer's."""
    super().__init__(**kwargs)
    layer_specs.set_up(
        self, arguments, layer_specs.axial_attention_2d_sublayers(arguments),
        dict(common.SUBLAYERS, axial_attention=AxialAttention))

  def build(self, input_shape):
    input_shape = tf.TensorShape(input_shape)
    if input_shape.rank != 4:
      raise ValueError(f"AxialAttention2D expects inputs of rank 4 [batch, "
                       f"height, width, channels], got shape {input_shape}.")
    channels = input_shape[-1]
    common.build_in_scope(self.height_attention, [None, None, channels])
    common.build_in_scope(self.width_attention,
                          [None, None, self._value_depth])
    super().build(input_shape)

  # Only Python-level branches: skipping autograph's conversion of this
  # code makes building and tracing models several times faster.
  @tf.autograph.experimental.do_not_convert
  def call(self, inputs, training=None):
    if inputs.shape.rank != 4:
      raise ValueError(f"AxialAttention2D expects inputs of rank 4 [batch, "
                       f"height, width, channels], got shape {inputs.shape}.")
    shape = tf.shape(inputs)
    # Static sizes where known, so the sub-layers see static shapes.
    batch = inputs.shape[0] if inputs.shape[0] is not None else shape[0]
    height, width = shape[1], shape[2]
    static_h, static_w = inputs.shape[1], inputs.shape[2]
    h = static_h if static_h is not None else height
    w = static_w if static_w is not None else width
    channels = inputs.shape[-1]
    dv = self._value_depth
    # Height pass: a batch of batch*width columns.
    if self.height_attention._single_block(h):  # pylint: disable=protected-access
      # Height-major [h, batch*w, C] is the input itself for batch 1.
      batch_one = isinstance(batch, int) and batch == 1
      if batch_one:
        x = tf.reshape(inputs, [h, w, channels])
      else:
        x = tf.reshape(tf.transpose(inputs, [1, 0, 2, 3]),
                       [h, batch * w, channels])
      x = self.height_attention(x, training=training, sequence_major=True)
      if not batch_one:
        x = tf.transpose(tf.reshape(x, [h, batch, w, dv]), [1, 0, 2, 3])
    else:
      x = tf.transpose(inputs, [0, 2, 1, 3])
      x = tf.reshape(x, [batch * w, h, channels])
      x = self.height_attention(x, training=training)
      x = tf.reshape(x, [batch, w, h, dv])
      x = tf.transpose(x, [0, 2, 1, 3])
    # Width pass: a batch of batch*height rows.
    x = tf.reshape(x, [batch * h, w, dv])
    x = self.width_attention(x, training=training)
    x = tf.reshape(x, [batch, h, w, dv])
    if self._pool is not None:
      x = self._pool(x)
    return x


@tf_keras.utils.register_keras_serializable(package="AxialDeepLab")
class AxialBlock(common.RejectKeras3Tensors, common.SpecConfig,
                 tf_keras.layers.Layer):
  """Bottleneck residual block whose 3x3 conv is replaced by 2D attention.

  1x1 conv (C -> 2f) + BN + ReLU; attention (axial: AxialAttention2D with
  key_depth f and value_depth 2f) + ReLU; 1x1 conv (2f -> 4f) + BN with gamma
  initialised to zero; shortcut (1x1 conv + BN when the channels or stride
  change); optional drop path on the residual branch; ReLU.
  Input [batch, h, w, C] -> [batch, h / strides, w / strides, 4f].
  """

  _spec = layer_specs.axial_block

  @common.takes(_spec)
  def __init__(self, arguments, **kwargs):
    """Arguments: `layer_specs.axial_block`; kwargs: tf_keras Layer's."""
    super().__init__(**kwargs)
    layer_specs.store(self, arguments)

  def build(self, input_shape):
    input_shape = tf.TensorShape(input_shape)
    if input_shape.rank != 4:
      raise ValueError(f"AxialBlock expects inputs of rank 4, got shape "
                       f"{input_shape}.")
    c = self._arguments
    f = c["filters"]
    bn = dict(momentum=c["norm_momentum"], epsilon=c["norm_epsilon"],
              use_sync_bn=c["use_sync_bn"])
    conv = dict(use_bias=False, kernel_initializer=c["kernel_initializer"],
                kernel_regularizer=c["kernel_regularizer"])
    out_channels = c["expansion"] * f
    self._shortcut = None
    if input_shape[-1] != out_channels or c["strides"] > 1:
      self._shortcut_conv = tf_keras.layers.Conv2D(
          out_channels, 1, strides=c["strides"], name="shortcut_conv", **conv)
      self._shortcut_bn = common.batch_norm(name="shortcut_bn", **bn)
      self._shortcut = True
    self._conv_down = tf_keras.layers.Conv2D(2 * f, 1, name="conv_down",
                                             **conv)
    self._bn_down = common.batch_norm(name="bn_down", **bn)
    attention_type, attention_args = layer_specs.axial_block_attention(c)
    if attention_type == "axial":
      self._attention = AxialAttention2D(**attention_args)
    elif attention_type == "local":
      from axial_deeplab_tf.layers.local_attention import LocalSelfAttention2D  # pylint: disable=g-import-not-at-top
      self._attention = LocalSelfAttention2D(**attention_args)
    else:
      from axial_deeplab_tf.layers.global_attention import GlobalSelfAttention2D  # pylint: disable=g-import-not-at-top
      self._attention = GlobalSelfAttention2D(**attention_args)
      self._attention_pool = (
          tf_keras.layers.AveragePooling2D(c["strides"], c["strides"],
                                           padding="same")
          if c["strides"] > 1 else None)
    self._conv_up = tf_keras.layers.Conv2D(out_channels, 1, name="conv_up",
                                           **conv)
    self._bn_up = common.batch_norm(name="bn_up", gamma_initializer="zeros",
                                    **bn)
    self._drop_path = (
        nn_layers.StochasticDepth(c["drop_path_rate"])
        if c["drop_path_rate"] > 0 else None)
    super().build(input_shape)

  # Only Python-level branches: skipping autograph's conversion of this
  # code makes building and tracing models several times faster.
  @tf.autograph.experimental.do_not_convert
  def call(self, inputs, training=None):
    shortcut = inputs
    if self._shortcut:
      shortcut = self._shortcut_bn(self._shortcut_conv(shortcut),
                                   training=training)
    x = tf.nn.relu(self._bn_down(self._conv_down(inputs), training=training))
    x = self._attention(x, training=training)
    if getattr(self, "_attention_pool", None) is not None:
      x = self._attention_pool(x)
    x = tf.nn.relu(x)
    x = self._bn_up(self._conv_up(x), training=training)
    if self._drop_path is not None:
      x = self._drop_path(x, training=training)
    return tf.nn.relu(x + tf.cast(shortcut, x.dtype))
