"""Backend-independent pieces of the attention layers.

Shared by the tf_keras layers (`axial_deeplab_tf.layers`) and their Keras 3
twins (`axial_deeplab_tf.keras_layers`) so that both read one definition of
the argument rules, the relative-position index tables and span masks, and
the sub-layer names that make up the weight layout. Nothing here imports
TensorFlow, tf_keras or Keras: index helpers take an array namespace `xp`
(numpy for static sizes, `keras.ops` or a TensorFlow-like module for sizes
known only at run time) whose `arange`, `clip` and `abs` follow numpy.
"""

from typing import Any, Optional, Sequence, Tuple

import numpy as np

# Added to masked attention logits before a float32 softmax: exp() of it is
# exactly 0 while staying finite (no inf - inf under XLA or JAX).
MASK_LOGIT = -1e9

# Names of the Keras 3 module, for errors that point tf_keras users to it.
KERAS3_MODULE = "axial_deeplab_tf.keras_layers"


# --------------------------------------------------------------- arguments
def check_positive_int(name: str, value: Any,
                       allow_none: bool = False) -> Optional[int]:
  """Returns `value` if it is a positive int, else raises naming `name`.

  With `allow_none`, None is accepted and returned.

  Raises:
    TypeError: not an int (bools are refused).
    ValueError: an int <= 0.
  """
  if value is None and allow_none:
    return None
  expected = "a positive int" + (" or None" if allow_none else "")
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
    raise TypeError(f"{name} must be {expected}, got {value!r} "
                    f"of type {type(value).__name__}.")
  if value <= 0:
    raise ValueError(f"{name} must be {expected}, got {value}.")
  return int(value)


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> Any:
  """Returns `value` if it is one of `choices`, else a ValueError naming it."""
  if value not in choices:
    raise ValueError(f"{name} must be one of {tuple(choices)}, got "
                     f"{value!r}.")
  return value


def check_bool(name: str, value: Any) -> bool:
  """Returns `value` if it is a bool, else a TypeError naming it."""
  if not isinstance(value, bool):
    raise TypeError(f"{name} must be a bool, got {value!r}.")
  return value


def check_image_shape(layer_name: str, dims: Optional[Sequence[Any]],
                      shown: Any = None) -> int:
  """Checks a [batch, height, width, channels] shape; returns channels.

  `dims` are the sizes (None for an unknown rank), `shown` how the error
  prints the shape (default: `dims` as a tuple).
  """
  shown = tuple(dims) if shown is None and dims is not None else shown
  if dims is None or len(dims) != 4:
    raise ValueError(f"{layer_name} expects inputs of rank 4 [batch, height, "
                     f"width, channels], got shape {shown}.")
  if dims[-1] is None:
    raise ValueError(f"{layer_name} needs a known channel dimension, got "
                     f"input shape {shown}.")
  return int(dims[-1])


def check_attention_depths(num_heads: int, key_depth: int,
                           value_depth: int) -> None:
  """Checks head count and depths: positive ints, depths divisible by heads."""
  check_positive_int("num_heads", num_heads)
  check_positive_int("key_depth", key_depth)
  check_positive_int("value_depth", value_depth)
  for name, depth in (("key_depth", key_depth), ("value_depth", value_depth)):
    if depth % num_heads:
      raise ValueError(f"{name} must be divisible by num_heads={num_heads}, "
                       f"got {name}={depth}.")


def check_even_head_depth(name: str, depth: int, num_heads: int,
                          option: str) -> None:
  """Checks that `depth / num_heads` is even, as `option` needs.

  Relative-position terms of the 2D layers split each head's channels into
  a half that meets row offsets and a half that meets column offsets.
  """
  if (depth // num_heads) % 2:
    raise ValueError(
        f"{name} / num_heads must be even with {option} (half of each "
        f"head's channels meet row offsets, half column offsets), got "
        f"{name}={depth}, num_heads={num_heads}.")


def check_odd_positive(name: str, value: Any) -> int:
  """Returns `value` if it is an odd positive int, else raises naming it."""
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or (
      value < 1 or value % 2 == 0):
    raise ValueError(f"{name} must be a positive odd int, got {value!r}.")
  return int(value)


def check_rate(name: str, value: Any) -> float:
  """Returns `value` as a float if it is a rate in [0, 1), else raises."""
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
      0.0 <= value < 1.0):
    raise ValueError(f"{name} must be a float in [0, 1), got {value!r}.")
  return float(value)


def check_keys(name: str, mapping: Any, keys: Sequence[str]) -> None:
  """Raises ValueError naming `name` unless `mapping` holds every key."""
  for key in keys:
    if key not in mapping:
      raise ValueError(f"{name} lacks key {key!r}; got keys "
                       f"{sorted(mapping)}.")


def pair(value, name: str) -> Tuple[Any, Any]:
  """An int/None or a 2-sequence as a (height, width) pair."""
  if isinstance(value, (list, tuple)):
    if len(value) != 2:
      raise ValueError(f"{name} must be an int or a pair, got {value!r}.")
    return tuple(value)
  return (value, value)


def axial_span_radius(span: Optional[int], max_length: Optional[int]) -> int:
  """Checks an AxialAttention span; returns the radius (max |m - l|).

  span=None is global attention over at most `max_length` positions
  (radius max_length - 1); an odd span is local (radius (span - 1) / 2).
  Relative tables have 2 * radius + 1 rows.
  """
  if span is not None:
    if isinstance(span, bool) or not isinstance(span, int) or span <= 0 or (
        span % 2 == 0):
      raise ValueError(f"span must be None (global) or an odd positive int, "
                       f"got span={span!r}.")
    return (span - 1) // 2
  if max_length is None:
    raise ValueError("max_length (the longest axis of global attention) "
                     "is required when span is None.")
  if isinstance(max_length, bool) or not isinstance(max_length, int) or (
      max_length <= 0):
    raise ValueError(f"max_length must be a positive int, got "
                     f"{max_length!r}.")
  return max_length - 1


def check_partition_factors(value: Any) -> Tuple[int, int]:
  """ISSA partition factors (P_h, P_w): two positive ints."""
  if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or (
      len(value) != 2) or any(isinstance(p, bool) or not isinstance(p, int)
                              or p < 1 for p in value):
    raise ValueError("partition_factors must be two positive ints "
                     f"(P_h, P_w), got {value!r}.")
  return tuple(value)


def symmetric_padding(kernel_size: int, dilation_rate: int = 1
                     ) -> Tuple[int, int]:
  """(before, after) padding of one axis that centres a k-tap window:
  dilation * (k - 1) in all, half on each side (the official codes')."""
  check_positive_int("kernel_size", kernel_size)
  check_positive_int("dilation_rate", dilation_rate)
  total = dilation_rate * (kernel_size - 1)
  return total // 2, total - total // 2


# ------------------------------------------------------ relative positions
def relative_rows(query_length, key_length, offset, rows, xp=np):
  """Table row of every (query l, key m) pair: m - l + offset, clipped.

  Pairs whose unclipped row falls outside [0, rows) are out of span; callers
  mask them. With numpy and int lengths the result is a constant int32
  array; with `xp` a tensor namespace it is built at run time.

  Returns:
    int32 [query_length, key_length].
  """
  idx = (xp.arange(key_length)[None, :] - xp.arange(query_length)[:, None] +
         offset)
  idx = xp.clip(idx, 0, rows - 1)
  return idx.astype(np.int32) if xp is np else idx


def band_mask(length, radius, xp=np):
  """[length, length]: 1.0 where |m - l| <= radius, else 0.0."""
  pos = xp.arange(length)
  band = xp.abs(pos[None, :] - pos[:, None]) <= radius
  return band.astype(np.float32) if xp is np else band


def offset_tables(block_size: int, kernel_size: int) -> np.ndarray:
  """One-hot [block, halo, kernel]: 1 where halo pos - query pos = offset.

  A query at row y of a block (0 <= y < block_size) sees halo rows
  y ... y + kernel_size - 1; halo row Y holds relative offset Y - y (shifted
  to start at 0). Contracting a [kernel_size, depth] embedding with this
  table places each offset's embedding at the halo row it belongs to.
  """
  halo = block_size + kernel_size - 1
  table = np.zeros([block_size, halo, kernel_size], np.float32)
  for y in range(block_size):
    for a in range(kernel_size):
      table[y, y + a, a] = 1.0
  return table


def window_validity(height, width, kernel_size, xp=np):
  """Which keys of each pixel's k x k window lie inside the image.

  Returns:
    bool [height, width, k * k]: entry (y, x, a * k + c) is True when the
    key at (y + a - r, x + c - r) (r = (k - 1) / 2) is inside the image.
  """
  r = (kernel_size - 1) // 2
  offsets = xp.arange(kernel_size) - r

  def inside(size):
    pos = xp.arange(size)[:, None] + offsets[None, :]
    return (pos >= 0) & (pos < size)  # [size, k]

  rows, cols = inside(height), inside(width)
  valid = rows[:, None, :, None] & cols[None, :, None, :]
  return xp.reshape(valid, (height, width, kernel_size * kernel_size))


def issa_padding(height: int, width: int,
                 factors: Sequence[int]) -> Tuple[int, int, int, int, int, int]:
  """ISSA grid: (Q_h, Q_w, top, bottom, left, right) zero padding.

  The map is padded to (Q_h P_h, Q_w P_w) with half the padding before and
  the rest after.
  """
  p_h, p_w = factors
  q_h, q_w = -(-height // p_h), -(-width // p_w)
  pad_h, pad_w = q_h * p_h - height, q_w * p_w - width
  return q_h, q_w, pad_h // 2, pad_h - pad_h // 2, pad_w // 2, pad_w - pad_w // 2


# ------------------------------------------------------------ weight layout
# Sub-layer names shared by both implementations (variable names are
# "<sub-layer>/<weight>"); the Keras 3 layers create the same sub-layers in
# the same order, so their variables line up with the tf_keras ones.
AXIAL_SIMILARITY_TERMS = ("content", "query_positional", "key_positional")
LOCAL_OUTPUT_TERMS = ("content", "value_positional")

# Keras 3 calls the depthwise kernel "kernel"; tf_keras "depthwise_kernel".
WEIGHT_NAME_ALIASES = {"depthwise_kernel": "kernel"}


def normalise_weight_name(name: str, root: Optional[str] = None) -> str:
  """A variable's name relative to its root layer, comparable across Keras.

  Strips the ":0" suffix, a leading "<root>/" and unifies the aliases of
  `WEIGHT_NAME_ALIASES` in the last component.
  """
  name = name.split(":")[0]
  if root and name.startswith(root + "/"):
    name = name[len(root) + 1:]
  parts = name.split("/")
  parts[-1] = WEIGHT_NAME_ALIASES.get(parts[-1], parts[-1])
  return "/".join(parts)


# ------------------------------------------------------- Keras 3 inputs
def _is_keras3_tensor(value) -> bool:
  cls = type(value)
  return cls.__name__ == "KerasTensor" and cls.__module__.startswith("keras.")


def check_not_keras3_tensor(layer_name: str, inputs) -> None:
  """Raises TypeError if `inputs` holds a Keras 3 symbolic tensor.

  A tf_keras layer cannot take part in a Keras 3 model (TensorFlow 2.20's
  tf.keras); the error names the Keras 3 module to use instead. Checks by
  type name, so neither Keras is imported here.
  """
  stack = [inputs]
  while stack:
    value = stack.pop()
    if isinstance(value, (list, tuple)):
      stack.extend(value)
    elif isinstance(value, dict):
      stack.extend(value.values())
    elif _is_keras3_tensor(value):
      raise TypeError(
          f"{layer_name} is a tf_keras (Keras 2) layer and got a Keras 3 "
          f"tensor {value!r} (tf.keras in TensorFlow 2.20 is Keras 3). Use "
          f"{KERAS3_MODULE}.{layer_name} in Keras 3 models, or set "
          f"TF_USE_LEGACY_KERAS=1 to build tf_keras models.")


class RejectKeras3Tensors:
  """Mixin of the tf_keras layers: refuse Keras 3 tensors with a TypeError.

  Put before the tf_keras base class; its __call__ checks the inputs and
  hands over to the layer's own.
  """

  def __call__(self, *args, **kwargs):
    inputs = args[0] if args else kwargs.get("inputs")
    check_not_keras3_tensor(type(self).__name__, inputs)
    return super().__call__(*args, **kwargs)
