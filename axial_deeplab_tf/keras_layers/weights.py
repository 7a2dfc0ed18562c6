"""Weight interchange between the tf_keras layers/models and their Keras 3 twins.

`copy_weights(src, dst)` copies every variable of `src` into `dst`, in
either direction (tf_keras -> Keras 3 or back), for single layers and whole
models (e.g. an Axial-ResNet backbone or classifier). Variables are paired
by name (relative to the root layer, see `attention_math.
normalise_weight_name`) when both sides have the same unique names, else by
structure: both lists in their canonical order (trainable variables first,
each group in creation/tracking order, which the Keras 3 layers keep equal to
the tf_keras ones). Every pair must have the same shape, and both sides the
same number of variables (shapes that differ only by axes of size 1, as
tf_keras' multi-axis batch norm [1, 1, terms, C] against [terms, C], are
the same layout); any mismatch raises a ValueError naming both
variables. Nothing here imports TensorFlow: tf_keras variables are read with
`.numpy()` and written with `.assign()`.
"""

from typing import List, Tuple

import keras
import numpy as np

from axial_deeplab_tf import attention_math


def _is_keras3(obj) -> bool:
  return isinstance(obj, keras.layers.Layer)


def _variables(layer) -> List[Tuple[str, object]]:
  """(normalised name, variable), trainable variables first."""
  if not hasattr(layer, "weights"):
    raise TypeError(f"copy_weights expects Keras layers or models, got "
                    f"{type(layer).__name__}.")
  if not getattr(layer, "built", True) or not layer.weights:
    raise ValueError(f"Layer {getattr(layer, 'name', layer)!r} has no "
                     "variables yet: build it (call it on an input) first.")
  keras3 = _is_keras3(layer)
  out = []
  for v in layer.weights:
    raw = v.path if keras3 else v.name
    out.append((attention_math.normalise_weight_name(raw, layer.name), v,
                bool(v.trainable)))
  # Canonical order: trainable first (stable within each group).
  ordered = [x for x in out if x[2]] + [x for x in out if not x[2]]
  return [(name, v) for name, v, _ in ordered]


def _value(v) -> np.ndarray:
  if isinstance(v, keras.Variable):
    return np.asarray(keras.ops.convert_to_numpy(v))
  return np.asarray(v.numpy())


def _raw_name(v) -> str:
  return getattr(v, "path", None) or v.name


def _squeezed(shape) -> Tuple[int, ...]:
  return tuple(int(d) for d in shape if d != 1)


def weight_pairs(src, dst) -> List[Tuple[object, object]]:
  """Pairs every variable of `src` with its twin in `dst` (see module doc).

  Raises:
    ValueError: different counts, or a pair of different shapes (naming
      both variables).
  """
  a, b = _variables(src), _variables(dst)
  if len(a) != len(b):
    names_a = {n for n, _ in a}
    names_b = {n for n, _ in b}
    raise ValueError(
        f"copy_weights: {src.name!r} has {len(a)} variables, {dst.name!r} "
        f"has {len(b)}; only in the source: {sorted(names_a - names_b)}, "
        f"only in the destination: {sorted(names_b - names_a)}.")
  names_a = [n for n, _ in a]
  names_b = [n for n, _ in b]
  if len(set(names_a)) == len(a) and set(names_a) == set(names_b):
    by_name = dict(b)
    pairs = [(v, by_name[n]) for n, v in a]
  else:
    pairs = [(va, vb) for (_, va), (_, vb) in zip(a, b)]
  for va, vb in pairs:
    if _squeezed(va.shape) != _squeezed(vb.shape):
      raise ValueError(
          f"copy_weights: variable {_raw_name(va)!r} of {src.name!r} has "
          f"shape {tuple(va.shape)} but its twin {_raw_name(vb)!r} of "
          f"{dst.name!r} has shape {tuple(vb.shape)}.")
  return pairs


def copy_weights(src, dst) -> int:
  """Copies all variables of `src` into `dst` (tf_keras <-> Keras 3).

  Both must be built. Returns the number of variables copied.
  """
  pairs = weight_pairs(src, dst)
  for va, vb in pairs:
    dtype = np.dtype(getattr(vb.dtype, "name", vb.dtype))
    vb.assign(np.reshape(_value(va), tuple(vb.shape)).astype(dtype))
  return len(pairs)
