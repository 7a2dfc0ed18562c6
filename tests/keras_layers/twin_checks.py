"""Compares every Keras 3 layer with its tf_keras twin on the current backend.

Run as a script in a process whose KERAS_BACKEND selects the backend
(tensorflow, jax or torch); TF_USE_LEGACY_KERAS must be unset. For every
case it builds the tf_keras layer, gives every variable a random value,
builds the Keras 3 layer, copies the weights with `copy_weights` and
compares outputs in inference and training mode, and the moving statistics
after the training call. Prints one JSON object: case -> max abs errors.
"""

import json
import os
import sys

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.pop("TF_USE_LEGACY_KERAS", None)
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))

import keras  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top
import tf_keras  # pylint: disable=g-import-not-at-top,unused-import

from axial_deeplab_tf import keras_layers as k3  # pylint: disable=g-import-not-at-top
from axial_deeplab_tf.layers import axial_attention as tfk_axial  # pylint: disable=g-import-not-at-top
from axial_deeplab_tf.layers import global_attention as tfk_global  # pylint: disable=g-import-not-at-top
from axial_deeplab_tf.layers import hamburger as tfk_ham  # pylint: disable=g-import-not-at-top
from axial_deeplab_tf.layers import issa as tfk_issa  # pylint: disable=g-import-not-at-top
from axial_deeplab_tf.layers import local_attention as tfk_local  # pylint: disable=g-import-not-at-top
from axial_deeplab_tf.layers import msca as tfk_msca  # pylint: disable=g-import-not-at-top
from axial_deeplab_tf.modeling.heads import light_ham_head as tfk_head  # pylint: disable=g-import-not-at-top


def randomise(layer, seed):
  """Random valid values for every variable of a tf_keras layer/model."""
  rng = np.random.default_rng(seed)
  values = []
  for w in layer.weights:
    name = w.name
    if "moving_variance" in name:
      values.append(rng.uniform(0.5, 2.0, w.shape))
    elif "gamma" in name or "layer_scale" in name:
      values.append(rng.uniform(0.5, 1.5, w.shape))
    elif "kernel" in name or "positional" in name:
      values.append(rng.normal(0.0, 0.5, w.shape))
    else:
      values.append(rng.normal(0.0, 0.3, w.shape))
  layer.set_weights([v.astype(np.float32) for v in values])


def to_numpy(x):
  if isinstance(x, (list, tuple)):
    return [to_numpy(t) for t in x]
  if isinstance(x, dict):
    return {k: to_numpy(v) for k, v in x.items()}
  if hasattr(x, "numpy") and not isinstance(x, np.ndarray):
    try:
      return np.asarray(x.numpy())
    except Exception:  # pylint: disable=broad-except
      pass
  return np.asarray(keras.ops.convert_to_numpy(x))


def max_abs(a):
  a = to_numpy(a)
  if isinstance(a, dict):
    return max(max_abs(v) for v in a.values())
  if isinstance(a, list):
    return max(max_abs(v) for v in a)
  return float(np.max(np.abs(a)))


def max_diff(a, b):
  a, b = to_numpy(a), to_numpy(b)
  if isinstance(a, dict):
    return max(max_diff(a[k], b[k]) for k in a)
  if isinstance(a, list):
    return max(max_diff(x, y) for x, y in zip(a, b))
  if a.size == b.size and a.shape != b.shape:  # [1, 1, T, C] vs [T, C].
    a = a.reshape(b.shape)
  assert a.shape == b.shape, (a.shape, b.shape)
  return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))


def compare(name, tfk_layer, k3_layer, inputs, tfk_kwargs=None,
            k3_kwargs=None, seed=0, train=True):
  """Returns {inference, training, moving, variables} max abs differences."""
  tfk_kwargs = tfk_kwargs or {}
  k3_kwargs = k3_kwargs or {}
  tf_in = (tf.constant(inputs) if not isinstance(inputs, list) else
           [tf.constant(x) for x in inputs])
  k_in = (keras.ops.convert_to_tensor(inputs) if not isinstance(
      inputs, list) else [keras.ops.convert_to_tensor(x) for x in inputs])
  tfk_layer(tf_in, training=False, **tfk_kwargs)
  randomise(tfk_layer, seed)
  k3_layer(k_in, training=False, **k3_kwargs)
  count = k3.copy_weights(tfk_layer, k3_layer)
  result = {"variables": count}
  ref = tfk_layer(tf_in, training=False, **tfk_kwargs)
  result["scale"] = max_abs(ref)
  result["inference"] = max_diff(ref, k3_layer(k_in, training=False,
                                               **k3_kwargs))
  if train:
    ref = tfk_layer(tf_in, training=True, **tfk_kwargs)
    result["training_scale"] = max_abs(ref)
    result["training"] = max_diff(ref, k3_layer(k_in, training=True,
                                                **k3_kwargs))
    result["moving"] = max(
        [0.0] + [max_diff(a, b) for a, b in k3.weight_pairs(tfk_layer,
                                                           k3_layer)])
  return result


def cases():
  rng = np.random.default_rng(1)
  x1 = rng.normal(size=(2, 5, 6)).astype(np.float32)
  x1l = rng.normal(size=(2, 7, 6)).astype(np.float32)
  x2 = rng.normal(size=(2, 5, 6, 6)).astype(np.float32)
  x2l = rng.normal(size=(2, 7, 5, 6)).astype(np.float32)
  xb = rng.normal(size=(2, 6, 6, 12)).astype(np.float32)
  xs = rng.normal(size=(2, 5, 7, 8)).astype(np.float32)
  pos = np.abs(rng.normal(size=(2, 5, 6, 8))).astype(np.float32)
  ax = dict(num_heads=2, key_depth=8, value_depth=16)
  yield "axial_attention_global", lambda m: m.AxialAttention(
      max_length=6, **ax), x1, {}
  yield "axial_attention_local", lambda m: m.AxialAttention(
      span=3, **ax), x1l, {}
  yield "axial_attention_no_positional", lambda m: m.AxialAttention(
      span=5, use_query_positional=False, use_value_positional=False,
      **ax), x1l, {}
  yield "axial_attention_2d_global", lambda m: m.AxialAttention2D(
      max_length=(5, 6), strides=2, **ax), x2, {}
  yield "axial_attention_2d_local", lambda m: m.AxialAttention2D(
      span=3, **ax), x2l, {}
  blk = dict(filters=8, num_heads=2)
  yield "axial_block_axial", lambda m: m.AxialBlock(
      strides=2, span=(3, 5), **blk), xb, {}
  yield "axial_block_local", lambda m: m.AxialBlock(
      attention_type="local", kernel_size=3, **blk), xb, {}
  yield "axial_block_global", lambda m: m.AxialBlock(
      attention_type="global", strides=2, **blk), xb, {}
  loc = dict(key_depth=8, value_depth=8, num_heads=2, kernel_size=3)
  yield "local_attention_sasa", lambda m: m.LocalSelfAttention2D(
      **loc), x2l, {}
  yield "local_attention_ps", lambda m: m.LocalSelfAttention2D(
      position_sensitive=True, strides=2, **loc), x2l, {}
  yield "global_attention", lambda m: m.GlobalSelfAttention2D(
      key_depth=8, value_depth=8, num_heads=2, use_relative_position=True,
      relative_span=(7, 6), use_output_projection=True), x2l, {}
  yield "issa", lambda m: m.InterlacedSparseSelfAttention(
      key_channels=4, value_channels=6, output_channels=8,
      partition_factors=(2, 3), activation="leaky_relu",
      value_use_bias=False), xs, {}
  yield "msca", lambda m: m.MultiScaleConvAttention(
      kernel_sizes=(3, 5), base_kernel_size=3), xs, {}
  yield "mscan_block", lambda m: m.MSCANBlock(
      kernel_sizes=(3, 5), base_kernel_size=3, mlp_ratio=2.0), xs, {}
  yield "hamburger", lambda m: m.Hamburger(
      rank=3, norm_groups=2, seed=3, train_steps=2, eval_steps=3), pos, {
          "bases": True}
  feats = [rng.normal(size=(2, 8, 8, 4)).astype(np.float32),
           rng.normal(size=(2, 4, 4, 6)).astype(np.float32),
           rng.normal(size=(2, 2, 2, 8)).astype(np.float32)]
  yield "light_ham_head", lambda m: m.LightHamHead(
      num_classes=3, channels=8, ham_channels=8, rank=3, norm_groups=2,
      seed=3, dropout_rate=0.0, train_steps=2, eval_steps=3), feats, {
          "bases": True}


class _TfkModules:
  """tf_keras classes under the Keras 3 module's names."""
  AxialAttention = tfk_axial.AxialAttention
  AxialAttention2D = tfk_axial.AxialAttention2D
  AxialBlock = tfk_axial.AxialBlock
  LocalSelfAttention2D = tfk_local.LocalSelfAttention2D
  GlobalSelfAttention2D = tfk_global.GlobalSelfAttention2D
  InterlacedSparseSelfAttention = tfk_issa.InterlacedSparseSelfAttention
  MultiScaleConvAttention = tfk_msca.MultiScaleConvAttention
  MSCANBlock = tfk_msca.MSCANBlock
  Hamburger = tfk_ham.Hamburger
  LightHamHead = tfk_head.LightHamHead


def nmf_bases(tfk_layer, batch):
  """The tf_keras layer's seeded NMF bases, as numpy."""
  ham = getattr(tfk_layer, "hamburger", tfk_layer)
  return ham.nmf.sample_bases(batch).numpy()


def run_cases(only=None):
  results = {}
  for name, make, inputs, extra in cases():
    if only and name not in only:
      continue
    tfk_layer, k3_layer = make(_TfkModules), make(k3)
    k3_kwargs = {}
    if extra.get("bases"):
      batch = (inputs[0] if isinstance(inputs, list) else inputs).shape[0]
      if not tfk_layer.built:
        tf_in = (tf.constant(inputs) if not isinstance(inputs, list) else
                 [tf.constant(x) for x in inputs])
        tfk_layer(tf_in, training=False)
      k3_kwargs["bases"] = nmf_bases(tfk_layer, batch)
    results[name] = compare(name, tfk_layer, k3_layer, inputs,
                            k3_kwargs=k3_kwargs)
  # Weights copied back (Keras 3 -> tf_keras) give the same outputs.
  tfk_layer = _TfkModules.AxialAttention2D(span=3, num_heads=2, key_depth=8,
                                           value_depth=16)
  k3_layer = k3.AxialAttention2D(span=3, num_heads=2, key_depth=8,
                                 value_depth=16)
  x = np.random.default_rng(2).normal(size=(1, 5, 5, 6)).astype(np.float32)
  tfk_layer(tf.constant(x))
  k3_layer(keras.ops.convert_to_tensor(x))
  k3.copy_weights(tfk_layer, k3_layer)  # Both random; now equal ...
  rng = np.random.default_rng(5)
  for v in k3_layer.weights:  # ... then change the Keras 3 side only.
    v.assign(rng.uniform(0.5, 1.5, tuple(v.shape)).astype(np.float32))
  k3.copy_weights(k3_layer, tfk_layer)
  ref = tfk_layer(tf.constant(x), training=False)
  results["copy_back"] = {"scale": max_abs(ref), "inference": max_diff(
      ref, k3_layer(keras.ops.convert_to_tensor(x), training=False))}
  return results


if __name__ == "__main__":
  out = {"backend": keras.backend.backend(), "cases": run_cases(sys.argv[1:])}
  print("RESULT " + json.dumps(out))
