"""Every public save route writes a SavedModel without the fused kernel.

A tf_keras model with an AxialAttention2D runs the `AxialSpanAttention`
custom op in this process; each SavedModel written from it must hold only
standard ops and run in a fresh `python -I` process that imports nothing
but TensorFlow (the package is blocked from importing there).
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from axial_deeplab_tf.layers import AxialAttention2D
from axial_deeplab_tf.ops import fused_attention
from tests.serving import serving_utils as su

OP = b"AxialSpanAttention"

# Runs in `python -I`: only TensorFlow; importing the package fails.
_LOADER = r"""
import importlib.abc, json, sys
class Blocked(importlib.abc.MetaPathFinder):
  def find_spec(self, name, path=None, target=None):
    if name.split(".")[0] in ("axial_deeplab_tf", "tests"):
      raise ImportError("blocked: " + name)
    return None
sys.meta_path.insert(0, Blocked())
import numpy as np
import tensorflow as tf
request = json.load(open(sys.argv[1]))
x = tf.constant(np.asarray(request["x"], np.float32))
results = {}
for name, path in request["saved"].items():
  loaded = tf.saved_model.load(path)
  fn = loaded.signatures["serving_default"]
  (key, spec), = fn.structured_input_signature[1].items()
  out = fn(**{key: tf.cast(x, spec.dtype)})
  results[name] = [float(v) for v in
                   tf.reshape(out[sorted(out)[0]], [-1]).numpy()]
assert not [m for m in sys.modules if m.startswith("axial_deeplab_tf")]
print(json.dumps(results))
"""


def _op_types(fn, *args):
  graph = tf.function(fn).get_concrete_function(*args).graph
  types = set()

  def walk(g):
    for op in g.get_operations():
      types.add(op.type)
    for f in getattr(g, "_functions", {}).values():
      walk(f.graph)

  walk(graph)
  return types


def _axial_model(shape):
  inputs = tf_keras.Input(shape[1:])
  x = tf_keras.layers.Conv2D(6, 1)(inputs)
  x = AxialAttention2D(num_heads=2, key_depth=4, value_depth=6, span=5)(x)
  model = tf_keras.Model(inputs, tf_keras.layers.Conv2D(3, 1)(x))
  rng = np.random.default_rng(0)
  for w in model.weights:
    if "moving_variance" in w.name or "gamma" in w.name:
      w.assign(rng.uniform(0.5, 1.5, w.shape))
    elif "moving_mean" in w.name or "beta" in w.name:
      w.assign(rng.normal(0.0, 0.3, w.shape))
  return model


def _files_hold(folder, needle: bytes) -> list:
  hits = []
  for root, _, files in os.walk(folder):
    for name in files:
      with open(os.path.join(root, name), "rb") as f:
        if needle in f.read():
          hits.append(os.path.join(root, name))
  return hits


def test_every_save_route_is_portable(tmp_path):
  assert fused_attention.load() is not None, fused_attention.load_error()
  shape = (1, 9, 11, 3)
  model = _axial_model(shape)
  x = tf.constant(np.random.default_rng(1).normal(size=shape), tf.float32)
  # In this process inference runs the kernel, also in a cached trace that
  # exists before any save.
  assert "AxialSpanAttention" in _op_types(
      lambda t: model(t, training=False), x)
  traced = tf.function(lambda t: model(t, training=False))
  expected = traced(x).numpy()
  with fused_attention.disabled():
    graph = tf.function(lambda t: model(t, training=False))(x).numpy()
  np.testing.assert_allclose(expected, graph, rtol=1e-4, atol=1e-4)

  saved = {}

  def route(name):
    saved[name] = str(tmp_path / name)
    return saved[name]

  model.save(route("keras_model_save"), save_format="tf")
  tf_keras.models.save_model(model, route("keras_save_model"),
                             save_format="tf")
  tf.saved_model.save(model, route("tf_saved_model_save"))
  model.export(route("keras_model_export"))
  archive = tf_keras.export.ExportArchive()
  archive.track(model)
  archive.add_endpoint("serve", traced, [tf.TensorSpec(shape, tf.float32)])
  archive.write_out(route("keras_export_archive"))

  for name, path in saved.items():
    assert os.path.isfile(os.path.join(path, "saved_model.pb")), name
    assert not _files_hold(path, OP), name
  # The .keras format holds a config and weights, no graph.
  model.save(tmp_path / "model.keras")
  assert OP not in (tmp_path / "model.keras").read_bytes()

  request = tmp_path / "request.json"
  request.write_text(json.dumps({"x": x.numpy().tolist(), "saved": saved}))
  result = subprocess.run(
      [sys.executable, "-I", "-c", _LOADER, str(request)],
      capture_output=True, text=True, timeout=600, env=su.plain_env(),
      cwd=str(tmp_path), check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  outputs = json.loads(result.stdout.strip().splitlines()[-1])
  assert sorted(outputs) == sorted(saved)
  for name, values in outputs.items():
    np.testing.assert_allclose(np.reshape(values, expected.shape), expected,
                               rtol=1e-4, atol=1e-4, err_msg=name)


def test_save_context_refuses_the_kernel():
  assert fused_attention.load() is not None, fused_attention.load_error()
  from tensorflow.python.saved_model import save_context  # pylint: disable=g-import-not-at-top
  assert fused_attention.usable(tf.float32)
  with save_context.save_context(tf.saved_model.SaveOptions()):
    assert not fused_attention.usable(tf.float32)
  assert fused_attention.usable(tf.float32)

