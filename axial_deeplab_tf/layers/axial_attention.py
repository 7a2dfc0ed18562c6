"""Position-sensitive axial attention (Wang et al., Axial-DeepLab, ECCV 2020).

`AxialAttention` attends along one axis of a [batch, length, channels] tensor.
Its similarity has three terms per head, each batch-normalised on its own:
content (q_l . k_m), query-dependent position (q_l . r^q[m - l]) and
key-dependent position (k_m . r^k[m - l]); the retrieved output has two terms,
sum_m a_lm v_m and sum_m a_lm r^v[m - l], also batch-normalised separately.

How the relative terms are computed: instead of materialising an
[L, L, depth] embedding per call (an einsum over L small matrices), the
queries (keys) are multiplied with the relative table in one large matmul
([batch * heads * L, depth] x [depth, rows]) and the result is moved from
relative to absolute key coordinates with a pad-flatten-reshape "skew",
which is pure data movement. The value term uses the inverse skew followed by
one matmul with the table.

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

import math
from typing import Optional, Sequence, Tuple, Union

import tensorflow as tf
import tf_keras

from official.vision.modeling.layers import nn_layers

_NEG_INF = -1e9


def _static_or_dynamic(x: tf.Tensor, axis: int):
  """Returns the static size of `axis` if known, else the dynamic one."""
  static = x.shape[axis]
  return static if static is not None else tf.shape(x)[axis]


def _maximum(a, b):
  if isinstance(a, tf.Tensor) or isinstance(b, tf.Tensor):
    return tf.maximum(a, b)
  return max(a, b)


def _flatten_last_two(x):
  shape = tf.shape(x)
  return tf.reshape(x, tf.concat([shape[:-2], [-1]], axis=0))


def _pad_last(x, before, after):
  rank = x.shape.rank
  return tf.pad(x, [[0, 0]] * (rank - 1) + [[before, after]])


def relative_to_absolute(x: tf.Tensor, offset, out_length) -> tf.Tensor:
  """Moves logits from relative to absolute key coordinates.

  out[..., a, b] = x[..., a, b - a + offset] wherever 0 <= b - a + offset <
  rows(x); other entries hold unspecified values (callers mask them).

  Args:
    x: [..., query_length, relative_rows].
    offset: the relative row of key 0 for query 0.
    out_length: number of absolute key positions.

  Returns:
    [..., query_length, out_length].
  """
  rows = _static_or_dynamic(x, -1)
  q_len = _static_or_dynamic(x, -2)
  width = _maximum(rows, out_length + 1)
  x = _pad_last(x, 0, width - rows)
  flat = _flatten_last_two(x)
  # One extra row of padding keeps the shifted slice inside the buffer.
  flat = _pad_last(flat, 0, width)
  flat = flat[..., offset:offset + q_len * (width - 1)]
  lead = tf.shape(x)[:-2]
  out = tf.reshape(flat, tf.concat([lead, [q_len, width - 1]], axis=0))
  return out[..., :out_length]


def absolute_to_relative(y: tf.Tensor, offset, rows) -> tf.Tensor:
  """Moves attention weights from absolute to relative key coordinates.

  out[..., a, j] = y[..., a, j + a - offset] when that key exists, else 0.

  Args:
    y: [..., query_length, key_length].
    offset: the relative row of key 0 for query 0.
    rows: number of relative rows of the output.

  Returns:
    [..., query_length, rows].
  """
  k_len = _static_or_dynamic(y, -1)
  q_len = _static_or_dynamic(y, -2)
  width = _maximum(offset + k_len, q_len - 1 + rows)
  y = _pad_last(y, offset, width - offset - k_len)
  flat = _flatten_last_two(y)
  flat = _pad_last(flat, 0, q_len)
  lead = tf.shape(y)[:-2]
  out = tf.reshape(flat, tf.concat([lead, [q_len, width + 1]], axis=0))
  return out[..., :rows]


def _check_positive_int(name, value):
  if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
    raise ValueError(f"{name} must be a positive int, got {value!r}.")


@tf_keras.utils.register_keras_serializable(package="AxialDeepLab")
class AxialAttention(tf_keras.layers.Layer):
  """Position-sensitive self-attention along one axis.

  Input [batch, length, channels] -> output [batch, length, value_depth].
  """

  def __init__(self,
               num_heads: int = 8,
               key_depth: int = 64,
               value_depth: int = 128,
               span: Optional[int] = None,
               max_length: Optional[int] = None,
               use_query_positional: bool = True,
               use_key_positional: bool = True,
               use_value_positional: bool = True,
               kernel_initializer=None,
               positional_initializer=None,
               kernel_regularizer=None,
               norm_momentum: float = 0.99,
               norm_epsilon: float = 1e-3,
               use_sync_bn: bool = False,
               block_length: Optional[int] = None,
               recompute_grad: bool = False,
               **kwargs):
    """Creates the layer.

    Args:
      num_heads: number of attention heads.
      key_depth: total query/key depth (split over heads).
      value_depth: total value depth (split over heads) = output channels.
      span: None for global attention, or an odd positive int: keys within
        (span - 1) / 2 positions of the query.
      max_length: for global attention, the longest axis the relative tables
        cover (the paper's "global span", e.g. 56). Ignored for local span.
      use_query_positional: add q_l . r^q[m - l] to the similarity.
      use_key_positional: add k_m . r^k[m - l] to the similarity.
      use_value_positional: add sum_m a_lm r^v[m - l] to the output.
      kernel_initializer: for the q/k/v projection; default truncated normal
        with stddev channels^-0.5.
      positional_initializer: for the relative tables; default truncated
        normal with stddev 1.0.
      kernel_regularizer: for the q/k/v projection.
      norm_momentum: batch-norm moving-average momentum.
      norm_epsilon: batch-norm epsilon.
      use_sync_bn: synchronise batch-norm statistics across replicas.
      block_length: query block length of the local (span) computation;
        default (span - 1) / 2, at least 8.
      recompute_grad: recompute the attention maps in the backward pass
        instead of keeping them (saves memory, same results).
      **kwargs: tf_keras.layers.Layer arguments.
    """
    super().__init__(**kwargs)
    _check_positive_int("num_heads", num_heads)
    _check_positive_int("key_depth", key_depth)
    _check_positive_int("value_depth", value_depth)
    if key_depth % num_heads:
      raise ValueError(f"key_depth must be divisible by num_heads={num_heads}, "
                       f"got key_depth={key_depth}.")
    if value_depth % num_heads:
      raise ValueError(f"value_depth must be divisible by "
                       f"num_heads={num_heads}, got value_depth={value_depth}.")
    if span is not None:
      if isinstance(span, bool) or not isinstance(span, int) or span <= 0 or (
          span % 2 == 0):
        raise ValueError(f"span must be None (global) or an odd positive int, "
                         f"got span={span!r}.")
    else:
      if max_length is None:
        raise ValueError("max_length (the longest axis of global attention) "
                         "is required when span is None.")
      _check_positive_int("max_length", max_length)
    if block_length is not None:
      _check_positive_int("block_length", block_length)
    self._num_heads = num_heads
    self._key_depth = key_depth
    self._value_depth = value_depth
    self._span = span
    self._max_length = max_length if span is None else None
    self._use_query_positional = use_query_positional
    self._use_key_positional = use_key_positional
    self._use_value_positional = use_value_positional
    self._kernel_initializer = kernel_initializer
    self._positional_initializer = positional_initializer
    self._kernel_regularizer = kernel_regularizer
    self._norm_momentum = norm_momentum
    self._norm_epsilon = norm_epsilon
    self._use_sync_bn = use_sync_bn
    self._block_length = block_length
    self._recompute_grad = recompute_grad
    if span is None:
      self._radius = max_length - 1
    else:
      self._radius = (span - 1) // 2
    self._num_similarity_terms = 1 + int(use_query_positional) + int(
        use_key_positional)
    self._num_output_terms = 1 + int(use_value_positional)

  @property
  def span(self):
    return self._span

  @property
  def table_rows(self) -> int:
    """Rows of each relative table (2 * radius + 1)."""
    return 2 * self._radius + 1

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
    self._qkv.build(input_shape)
    self._qkv_bn = tf_keras.layers.BatchNormalization(
        axis=-1, momentum=self._norm_momentum, epsilon=self._norm_epsilon,
        synchronized=self._use_sync_bn, name="qkv_bn")
    self._qkv_bn.build(input_shape[:-1].concatenate(
        [2 * self._key_depth + self._value_depth]))
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
    self._output_bn = tf_keras.layers.BatchNormalization(
        axis=[-2, -1], momentum=self._norm_momentum,
        epsilon=self._norm_epsilon, synchronized=self._use_sync_bn,
        name="output_bn")
    self._output_bn.build(input_shape[:-1].concatenate(
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

  def _similarity(self, logits, mask, training, moving_mean, moving_var,
                  gamma, beta):
    """Batch-normalises each similarity term per head and sums them.

    Args:
      logits: list of float32 [batch, heads, ..., queries, keys] tensors.
      mask: None or a float32 {0, 1} tensor broadcastable to the logits
        without the batch and head axes.
      training: Python bool.
      moving_mean, moving_var, gamma, beta: [terms, heads] float32.

    Returns:
      The summed similarity and the [terms, heads] batch mean and variance
      (None when not training).
    """
    rank = logits[0].shape.rank
    axes = [0] + list(range(2, rank))
    if training:
      sums, sq_sums = [], []
      if mask is None:
        count = tf.cast(tf.reduce_prod(tf.shape(logits[0])), tf.float32) / (
            self._num_heads)
        for t in logits:
          sums.append(tf.reduce_sum(t, axis=axes))
          sq_sums.append(tf.reduce_sum(tf.square(t), axis=axes))
      else:
        batch = tf.cast(tf.shape(logits[0])[0], tf.float32)
        count = batch * tf.reduce_sum(mask)
        for t in logits:
          masked = t * mask
          sums.append(tf.reduce_sum(masked, axis=axes))
          sq_sums.append(tf.reduce_sum(masked * t, axis=axes))
      mean, var = self._reduce_moments(tf.stack(sums), tf.stack(sq_sums),
                                       count)
    else:
      mean, var = moving_mean, moving_var
    scale = gamma * tf.math.rsqrt(var + self._norm_epsilon)
    shift = beta - mean * scale
    bshape = [1, self._num_heads] + [1] * (rank - 2)
    total = tf.reshape(tf.reduce_sum(shift, axis=0), bshape)
    for i, t in enumerate(logits):
      total = total + t * tf.reshape(scale[i], bshape)
    if training:
      return total, mean, var
    return total, None, None

  # --------------------------------------------------------------- the core
  def _attend(self, q, k, v, rq, rk, rv, gamma, beta, moving_mean,
              moving_var, training):
    """Attention on [batch, heads, length, depth] q, k, v.

    Returns:
      retrieved content [B, N, L, dvh], retrieved positional [B, N, L, dvh]
      (or None), and the similarity batch moments (or None).
    """
    length = _static_or_dynamic(q, 2)
    compute_dtype = q.dtype
    if self._span is None:
      return self._attend_global(q, k, v, rq, rk, rv, gamma, beta,
                                 moving_mean, moving_var, training, length,
                                 compute_dtype)
    radius = self._radius
    if isinstance(length, int) and length <= radius + 1:
      # Every key is in range: the global computation on the central rows.
      return self._attend_global(q, k, v, rq, rk, rv, gamma, beta,
                                 moving_mean, moving_var, training, length,
                                 compute_dtype)
    return self._attend_local(q, k, v, rq, rk, rv, gamma, beta, moving_mean,
                              moving_var, training, length, compute_dtype)

  def _attend_global(self, q, k, v, rq, rk, rv, gamma, beta, moving_mean,
                     moving_var, training, length, compute_dtype):
    radius = self._radius
    # Central 2L-1 rows of the tables: distances -(L-1)..(L-1).
    start = radius - (length - 1)
    rows = 2 * length - 1
    logits = [tf.matmul(q, k, transpose_b=True)]
    if rq is not None:
      table = rq[start:start + rows]
      rel = tf.matmul(q, table, transpose_b=True)
      logits.append(relative_to_absolute(rel, length - 1, length))
    if rk is not None:
      table = tf.reverse(rk[start:start + rows], axis=[0])
      rel = tf.matmul(k, table, transpose_b=True)
      rel = relative_to_absolute(rel, length - 1, length)
      logits.append(tf.linalg.matrix_transpose(rel))
    logits = [tf.cast(t, tf.float32) for t in logits]
    sim, mean, var = self._similarity(logits, None, training, moving_mean,
                                      moving_var, gamma, beta)
    weights = tf.cast(tf.nn.softmax(sim, axis=-1), compute_dtype)
    out = tf.matmul(weights, v)
    out_pos = None
    if rv is not None:
      rel_weights = absolute_to_relative(weights, length - 1, rows)
      out_pos = tf.matmul(rel_weights, rv[start:start + rows])
    return out, out_pos, mean, var

  def _attend_local(self, q, k, v, rq, rk, rv, gamma, beta, moving_mean,
                    moving_var, training, length, compute_dtype):
    radius = self._radius
    rows = 2 * radius + 1
    block = self._block_length_for()
    window = block + 2 * radius
    num_blocks = (length + block - 1) // block
    padded = num_blocks * block
    shape = tf.shape(q)
    batch, heads = shape[0], shape[1]

    def blocks(x, before, after, count):
      depth = x.shape[-1]
      x = tf.pad(x, [[0, 0], [0, 0], [before, after], [0, 0]])
      return tf.reshape(x, [batch, heads, count, block, depth])

    qb = blocks(q, 0, padded - length, num_blocks)

    def windows(x):
      # Block i attends to keys [i*block - radius, (i+1)*block + radius).
      xb = blocks(x, block, padded - length + block, num_blocks + 2)
      prev = xb[:, :, :-2, block - radius:]
      nxt = xb[:, :, 2:, :radius]
      return tf.concat([prev, xb[:, :, 1:-1], nxt], axis=3)

    kw = windows(k)
    vw = windows(v)
    logits = [tf.matmul(qb, kw, transpose_b=True)]
    if rq is not None:
      rel = tf.matmul(qb, rq, transpose_b=True)
      logits.append(relative_to_absolute(rel, 0, window))
    if rk is not None:
      rel = tf.matmul(kw, tf.reverse(rk, axis=[0]), transpose_b=True)
      rel = relative_to_absolute(rel, 2 * radius, block)
      logits.append(tf.linalg.matrix_transpose(rel))
    logits = [tf.cast(t, tf.float32) for t in logits]
    # Valid pairs: inside the span, a real key, a real query.
    query_pos = tf.range(num_blocks)[:, None, None] * block + tf.range(
        block)[None, :, None]
    key_pos = tf.range(num_blocks)[:, None, None] * block - radius + tf.range(
        window)[None, None, :]
    mask = ((tf.abs(key_pos - query_pos) <= radius) & (key_pos >= 0) &
            (key_pos < length) & (query_pos < length))
    mask = tf.cast(mask, tf.float32)
    sim, mean, var = self._similarity(logits, mask, training, moving_mean,
                                      moving_var, gamma, beta)
    sim = sim + (1.0 - mask) * _NEG_INF
    weights = tf.cast(tf.nn.softmax(sim, axis=-1), compute_dtype)
    dvh = v.shape[-1]
    out = tf.matmul(weights, vw)
    out = tf.reshape(out, [batch, heads, padded, dvh])[:, :, :length]
    out_pos = None
    if rv is not None:
      rel_weights = absolute_to_relative(weights, 0, rows)
      out_pos = tf.matmul(rel_weights, rv)
      out_pos = tf.reshape(out_pos, [batch, heads, padded, dvh])[:, :, :length]
    return out, out_pos, mean, var

  # ------------------------------------------------------------------ call
  def call(self, inputs, training=None):
    if inputs.shape.rank != 3:
      raise ValueError(f"AxialAttention expects inputs of rank 3 [batch, "
                       f"length, channels], got shape {inputs.shape}.")
    if training is None:
      training = tf_keras.backend.learning_phase()
    training = bool(tf.get_static_value(training)) if not isinstance(
        training, bool) else training
    length = _static_or_dynamic(inputs, 1)
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
    qkv = self._qkv_bn(self._qkv(inputs), training=training)
    heads = self._num_heads
    dk = self._key_depth // heads
    dv = self._value_depth // heads
    shape = tf.shape(inputs)
    batch = shape[0]

    def split(x, depth):
      x = tf.reshape(x, [batch, length, heads, depth])
      return tf.transpose(x, [0, 2, 1, 3])

    q = split(qkv[..., :self._key_depth], dk)
    k = split(qkv[..., self._key_depth:2 * self._key_depth], dk)
    v = split(qkv[..., 2 * self._key_depth:], dv)
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
                                             training)
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
    terms = []
    for r in results:
      r = tf.transpose(r, [0, 2, 1, 3])
      terms.append(tf.reshape(r, [batch, length, self._value_depth]))
    stacked = tf.stack(terms, axis=2)
    stacked = self._output_bn(stacked, training=training)
    return tf.reduce_sum(stacked, axis=2)

  def compute_output_shape(self, input_shape):
    input_shape = tf.TensorShape(input_shape)
    return input_shape[:-1].concatenate([self._value_depth])

  def get_config(self):
    config = {
        "num_heads": self._num_heads,
        "key_depth": self._key_depth,
        "value_depth": self._value_depth,
        "span": self._span,
        "max_length": self._max_length,
        "use_query_positional": self._use_query_positional,
        "use_key_positional": self._use_key_positional,
        "use_value_positional": self._use_value_positional,
        "kernel_initializer": tf_keras.initializers.serialize(
            tf_keras.initializers.get(self._kernel_initializer))
                              if self._kernel_initializer else None,
        "positional_initializer": tf_keras.initializers.serialize(
            tf_keras.initializers.get(self._positional_initializer))
                                  if self._positional_initializer else None,
        "kernel_regularizer": tf_keras.regularizers.serialize(
            self._kernel_regularizer) if self._kernel_regularizer else None,
        "norm_momentum": self._norm_momentum,
        "norm_epsilon": self._norm_epsilon,
        "use_sync_bn": self._use_sync_bn,
        "block_length": self._block_length,
        "recompute_grad": self._recompute_grad,
    }
    base = super().get_config()
    base.update(config)
    return base


def _pair(value, name):
  if isinstance(value, (list, tuple)):
    if len(value) != 2:
      raise ValueError(f"{name} must be an int or a pair, got {value!r}.")
    return tuple(value)
  return (value, value)


@tf_keras.utils.register_keras_serializable(package="AxialDeepLab")
class AxialAttention2D(tf_keras.layers.Layer):
  """Height-axis then width-axis AxialAttention on [batch, h, w, channels].

  The width layer takes the height layer's value_depth channels. With
  strides > 1 the output is average-pooled by `strides` after the width layer
  (as in the public PyTorch reference), so both attention layers attend at
  the input resolution, which is what the spans of the paper's models assume.
  """

  def __init__(self,
               num_heads: int = 8,
               key_depth: int = 64,
               value_depth: int = 128,
               span: Union[None, int, Sequence[Optional[int]]] = None,
               max_length: Union[None, int, Sequence[Optional[int]]] = None,
               strides: int = 1,
               use_query_positional: bool = True,
               use_key_positional: bool = True,
               use_value_positional: bool = True,
               kernel_regularizer=None,
               norm_momentum: float = 0.99,
               norm_epsilon: float = 1e-3,
               use_sync_bn: bool = False,
               recompute_grad: bool = False,
               **kwargs):
    """Creates the layer.

    Args:
      num_heads, key_depth, value_depth: as AxialAttention.
      span: None (global), an odd int, or a (height, width) pair of those.
      max_length: for global spans, the (height, width) the relative tables
        cover; an int means both.
      strides: output stride (average pooling after the width layer).
      use_query_positional, use_key_positional, use_value_positional,
      kernel_regularizer, norm_momentum, norm_epsilon, use_sync_bn,
      recompute_grad: as AxialAttention.
      **kwargs: tf_keras.layers.Layer arguments.
    """
    super().__init__(**kwargs)
    _check_positive_int("strides", strides)
    self._config = dict(
        num_heads=num_heads, key_depth=key_depth, value_depth=value_depth,
        span=span, max_length=max_length, strides=strides,
        use_query_positional=use_query_positional,
        use_key_positional=use_key_positional,
        use_value_positional=use_value_positional,
        kernel_regularizer=kernel_regularizer, norm_momentum=norm_momentum,
        norm_epsilon=norm_epsilon, use_sync_bn=use_sync_bn,
        recompute_grad=recompute_grad)
    spans = _pair(span, "span")
    lengths = _pair(max_length, "max_length")
    common = dict(
        num_heads=num_heads, key_depth=key_depth, value_depth=value_depth,
        use_query_positional=use_query_positional,
        use_key_positional=use_key_positional,
        use_value_positional=use_value_positional,
        kernel_regularizer=kernel_regularizer, norm_momentum=norm_momentum,
        norm_epsilon=norm_epsilon, use_sync_bn=use_sync_bn,
        recompute_grad=recompute_grad)
    self.height_attention = AxialAttention(
        span=spans[0], max_length=lengths[0], name="height_attention",
        **common)
    self.width_attention = AxialAttention(
        span=spans[1], max_length=lengths[1], name="width_attention",
        **common)
    self._strides = strides
    self._pool = (
        tf_keras.layers.AveragePooling2D(strides, strides, padding="same")
        if strides > 1 else None)

  def build(self, input_shape):
    input_shape = tf.TensorShape(input_shape)
    if input_shape.rank != 4:
      raise ValueError(f"AxialAttention2D expects inputs of rank 4 [batch, "
                       f"height, width, channels], got shape {input_shape}.")
    channels = input_shape[-1]
    self.height_attention.build([None, None, channels])
    self.width_attention.build([None, None, self._config["value_depth"]])
    super().build(input_shape)

  def call(self, inputs, training=None):
    if inputs.shape.rank != 4:
      raise ValueError(f"AxialAttention2D expects inputs of rank 4 [batch, "
                       f"height, width, channels], got shape {inputs.shape}.")
    shape = tf.shape(inputs)
    batch, height, width = shape[0], shape[1], shape[2]
    static_h, static_w = inputs.shape[1], inputs.shape[2]
    h = static_h if static_h is not None else height
    w = static_w if static_w is not None else width
    channels = inputs.shape[-1]
    dv = self._config["value_depth"]
    # Height pass: a batch of batch*width columns.
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

  def get_config(self):
    base = super().get_config()
    config = dict(self._config)
    if config["kernel_regularizer"] is not None:
      config["kernel_regularizer"] = tf_keras.regularizers.serialize(
          config["kernel_regularizer"])
    base.update(config)
    return base


@tf_keras.utils.register_keras_serializable(package="AxialDeepLab")
class AxialBlock(tf_keras.layers.Layer):
  """Bottleneck residual block whose 3x3 conv is replaced by 2D attention.

  1x1 conv (C -> 2f) + BN + ReLU; attention (axial: AxialAttention2D with
  key_depth f and value_depth 2f) + ReLU; 1x1 conv (2f -> 4f) + BN with gamma
  initialised to zero; shortcut (1x1 conv + BN when the channels or stride
  change); optional drop path on the residual branch; ReLU.
  Input [batch, h, w, C] -> [batch, h / strides, w / strides, 4f].
  """

  def __init__(self,
               filters: int,
               strides: int = 1,
               span: Union[None, int, Sequence[Optional[int]]] = None,
               max_length: Union[None, int, Sequence[Optional[int]]] = None,
               num_heads: int = 8,
               attention_type: str = "axial",
               kernel_size: int = 7,
               use_query_positional: bool = True,
               use_key_positional: bool = True,
               use_value_positional: bool = True,
               expansion: int = 4,
               drop_path_rate: float = 0.0,
               kernel_initializer="he_normal",
               kernel_regularizer=None,
               norm_momentum: float = 0.99,
               norm_epsilon: float = 1e-3,
               use_sync_bn: bool = False,
               recompute_grad: bool = False,
               **kwargs):
    """Creates the block.

    Args:
      filters: block width f (attention key depth; values 2f; output
        expansion * f).
      strides: block stride (applied after attention).
      span, max_length: axial attention span / global table size.
      num_heads: attention heads.
      attention_type: "axial" (position-sensitive axial attention), "local"
        (LocalSelfAttention2D with kernel_size windows; the SASA baseline) or
        "global" (GlobalSelfAttention2D).
      kernel_size: window of "local" attention.
      use_query_positional, use_key_positional, use_value_positional: the
        positional terms (for "local", key/value terms make it
        position-sensitive).
      expansion: output channels = expansion * filters.
      drop_path_rate: stochastic depth rate of the residual branch.
      kernel_initializer, kernel_regularizer: for the 1x1 convolutions.
      norm_momentum, norm_epsilon, use_sync_bn: batch-norm settings.
      recompute_grad: recompute attention maps in the backward pass.
      **kwargs: tf_keras.layers.Layer arguments.
    """
    super().__init__(**kwargs)
    _check_positive_int("filters", filters)
    _check_positive_int("strides", strides)
    if attention_type not in ("axial", "local", "global"):
      raise ValueError(f"attention_type must be 'axial', 'local' or 'global', "
                       f"got {attention_type!r}.")
    if not 0.0 <= drop_path_rate < 1.0:
      raise ValueError(f"drop_path_rate must be in [0, 1), got "
                       f"{drop_path_rate!r}.")
    self._config = dict(
        filters=filters, strides=strides, span=span, max_length=max_length,
        num_heads=num_heads, attention_type=attention_type,
        kernel_size=kernel_size, use_query_positional=use_query_positional,
        use_key_positional=use_key_positional,
        use_value_positional=use_value_positional, expansion=expansion,
        drop_path_rate=drop_path_rate,
        kernel_initializer=kernel_initializer,
        kernel_regularizer=kernel_regularizer, norm_momentum=norm_momentum,
        norm_epsilon=norm_epsilon, use_sync_bn=use_sync_bn,
        recompute_grad=recompute_grad)

  def build(self, input_shape):
    input_shape = tf.TensorShape(input_shape)
    if input_shape.rank != 4:
      raise ValueError(f"AxialBlock expects inputs of rank 4, got shape "
                       f"{input_shape}.")
    c = self._config
    f = c["filters"]
    bn = dict(momentum=c["norm_momentum"], epsilon=c["norm_epsilon"],
              synchronized=c["use_sync_bn"])
    conv = dict(use_bias=False, kernel_initializer=c["kernel_initializer"],
                kernel_regularizer=c["kernel_regularizer"])
    out_channels = c["expansion"] * f
    self._shortcut = None
    if input_shape[-1] != out_channels or c["strides"] > 1:
      self._shortcut_conv = tf_keras.layers.Conv2D(
          out_channels, 1, strides=c["strides"], name="shortcut_conv", **conv)
      self._shortcut_bn = tf_keras.layers.BatchNormalization(
          name="shortcut_bn", **bn)
      self._shortcut = True
    self._conv_down = tf_keras.layers.Conv2D(2 * f, 1, name="conv_down",
                                             **conv)
    self._bn_down = tf_keras.layers.BatchNormalization(name="bn_down", **bn)
    attention_type = c["attention_type"]
    if attention_type == "axial":
      self._attention = AxialAttention2D(
          num_heads=c["num_heads"], key_depth=f, value_depth=2 * f,
          span=c["span"], max_length=c["max_length"], strides=c["strides"],
          use_query_positional=c["use_query_positional"],
          use_key_positional=c["use_key_positional"],
          use_value_positional=c["use_value_positional"],
          kernel_regularizer=c["kernel_regularizer"],
          norm_momentum=c["norm_momentum"], norm_epsilon=c["norm_epsilon"],
          use_sync_bn=c["use_sync_bn"], recompute_grad=c["recompute_grad"],
          name="attention")
    elif attention_type == "local":
      from axial_deeplab_tf.layers.local_attention import LocalSelfAttention2D  # pylint: disable=g-import-not-at-top
      self._attention = LocalSelfAttention2D(
          num_heads=c["num_heads"], key_depth=f, value_depth=2 * f,
          kernel_size=c["kernel_size"], strides=c["strides"],
          position_sensitive=(c["use_key_positional"] or
                              c["use_value_positional"]),
          name="attention")
    else:
      from axial_deeplab_tf.layers.global_attention import GlobalSelfAttention2D  # pylint: disable=g-import-not-at-top
      self._attention = GlobalSelfAttention2D(
          num_heads=c["num_heads"], key_depth=f, value_depth=2 * f,
          name="attention")
      self._attention_pool = (
          tf_keras.layers.AveragePooling2D(c["strides"], c["strides"],
                                           padding="same")
          if c["strides"] > 1 else None)
    self._conv_up = tf_keras.layers.Conv2D(out_channels, 1, name="conv_up",
                                           **conv)
    self._bn_up = tf_keras.layers.BatchNormalization(
        gamma_initializer="zeros", name="bn_up", **bn)
    self._drop_path = (
        nn_layers.StochasticDepth(c["drop_path_rate"])
        if c["drop_path_rate"] > 0 else None)
    super().build(input_shape)

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

  def get_config(self):
    base = super().get_config()
    config = dict(self._config)
    if config["kernel_regularizer"] is not None:
      config["kernel_regularizer"] = tf_keras.regularizers.serialize(
          config["kernel_regularizer"])
    base.update(config)
    return base
