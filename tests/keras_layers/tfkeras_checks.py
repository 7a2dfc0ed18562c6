"""The Keras 3 layers inside today's tf.keras (TensorFlow 2.20 defaults).

Run as a script with TF_USE_LEGACY_KERAS unset (so tf.keras is Keras 3):
  tfkeras_checks.py train DIR   builds Functional, Sequential and subclassed
      models around every layer, trains each with fit, checks that the loss
      falls and every variable changes, saves each to DIR/<case>.keras,
      exports the Functional ones (model.export) to DIR/<case>_export and
      writes inputs and outputs to DIR/outputs.npz.
  tfkeras_checks.py load DIR    reloads every .keras file in this fresh
      process and compares its outputs with the saved ones.
  tfkeras_checks.py serve DIR   runs the exported SavedModels with the
      package made unimportable, and compares.
Each mode prints one line "RESULT <json>".
"""

import json
import os
import sys

os.environ.pop("TF_USE_LEGACY_KERAS", None)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # pylint: disable=g-import-not-at-top

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))

# Variables whose gradient is zero by construction: a per-head shift of all
# of a head's logits does not change its softmax.
GRADIENT_FREE = ("similarity_beta", "similarity_batch_norm/beta")


def cases(k3):
  """name -> (make layer, input shape without batch)."""
  return {
      "axial_attention": (lambda: k3.AxialAttention(
          num_heads=2, key_depth=8, value_depth=8, span=3), (6, 4)),
      "axial_attention_2d": (lambda: k3.AxialAttention2D(
          num_heads=2, key_depth=8, value_depth=8, max_length=6), (6, 6, 4)),
      "axial_block": (lambda: k3.AxialBlock(
          filters=4, num_heads=2, span=3, strides=2), (6, 6, 8)),
      "local_attention": (lambda: k3.LocalSelfAttention2D(
          key_depth=8, value_depth=8, num_heads=2, kernel_size=3,
          position_sensitive=True), (5, 5, 4)),
      "global_attention": (lambda: k3.GlobalSelfAttention2D(
          key_depth=8, value_depth=8, num_heads=2, use_relative_position=True,
          relative_span=(5, 5)), (5, 5, 4)),
      "issa": (lambda: k3.InterlacedSparseSelfAttention(
          key_channels=4, partition_factors=(2, 2)), (4, 4, 4)),
      "msca": (lambda: k3.MultiScaleConvAttention(
          kernel_sizes=(3, 5), base_kernel_size=3), (6, 6, 4)),
      "mscan_block": (lambda: k3.MSCANBlock(
          kernel_sizes=(3,), base_kernel_size=3, mlp_ratio=2.0), (6, 6, 4)),
      "hamburger": (lambda: k3.Hamburger(
          rank=2, norm_groups=2, seed=1, train_steps=2, eval_steps=2),
                    (4, 4, 4)),
      "light_ham_head": (lambda: k3.LightHamHead(
          num_classes=3, channels=4, ham_channels=4, rank=2, norm_groups=2,
          seed=1, train_steps=2, eval_steps=2, dropout_rate=0.0),
                         [(8, 8, 4), (4, 4, 4)]),
  }


def _inputs(shape, rng, batch=4):
  if isinstance(shape, list):
    return [rng.normal(size=(batch,) + s).astype(np.float32) for s in shape]
  return rng.normal(size=(batch,) + shape).astype(np.float32)


def _make_subclassed(tf):
  import keras  # pylint: disable=g-import-not-at-top
  assert tf.keras.Model is keras.Model  # tf.keras is Keras 3 here.

  @keras.saving.register_keras_serializable(package="AxialDeepLabTests")
  class Wrapper(tf.keras.Model):
    """A subclassed model holding one layer."""

    def __init__(self, layer, **kwargs):
      super().__init__(**kwargs)
      self.inner = layer

    def call(self, x, training=None):
      return self.inner(x, training=training)

    def get_config(self):
      return {"layer": keras.saving.serialize_keras_object(self.inner),
              "name": self.name}

    @classmethod
    def from_config(cls, config):
      layer = keras.saving.deserialize_keras_object(config.pop("layer"))
      return cls(layer, **config)

  return Wrapper


def _values(model):
  return {v.path: np.array(v.numpy()) for v in model.weights}


def train(out_dir):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from axial_deeplab_tf import keras_layers as k3  # pylint: disable=g-import-not-at-top
  tf.keras.utils.set_random_seed(0)
  wrapper = _make_subclassed(tf)
  rng = np.random.default_rng(0)
  report, outputs = {}, {}
  for name, (make, shape) in cases(k3).items():
    x = _inputs(shape, rng)
    kinds = ["functional", "subclassed"]
    if not isinstance(shape, list):
      kinds.insert(1, "sequential")
    for kind in kinds:
      layer = make()
      if kind == "functional":
        if isinstance(shape, list):
          ins = [tf.keras.Input(s) for s in shape]
        else:
          ins = tf.keras.Input(shape)
        model = tf.keras.Model(ins, layer(ins))
      elif kind == "sequential":
        model = tf.keras.Sequential([tf.keras.Input(shape), layer])
      else:
        model = wrapper(layer)
        model(x)
      y_before = model(x, training=False)
      target = np.random.default_rng(1).normal(
          size=tuple(y_before.shape)).astype(np.float32)
      before = _values(model)
      model.compile(optimizer=tf.keras.optimizers.Adam(0.02), loss="mse")
      history = model.fit(x, target, epochs=6, batch_size=4, verbose=0)
      after = _values(model)
      unchanged = [k for k in before
                   if np.array_equal(before[k], after[k]) and
                   not any(g in k for g in GRADIENT_FREE)]
      losses = history.history["loss"]
      key = f"{name}/{kind}"
      report[key] = {"variables": len(before),
                     "trainable": len(model.trainable_weights),
                     "loss_first": float(losses[0]),
                     "loss_last": float(losses[-1]),
                     "unchanged": unchanged}
      path = os.path.join(out_dir, f"{name}_{kind}.keras")
      model.save(path)
      outputs[f"{name}_{kind}"] = np.array(model(x, training=False))
      if kind == "functional":
        model.export(os.path.join(out_dir, f"{name}_export"), verbose=False)
      if isinstance(x, list):
        for i, xi in enumerate(x):
          outputs[f"input_{name}_{i}"] = xi
      else:
        outputs[f"input_{name}"] = x
  np.savez(os.path.join(out_dir, "outputs.npz"), **outputs)
  return report


def _saved_inputs(data, name):
  if f"input_{name}" in data:
    return data[f"input_{name}"]
  inputs, i = [], 0
  while f"input_{name}_{i}" in data:
    inputs.append(data[f"input_{name}_{i}"])
    i += 1
  return inputs


def load(out_dir):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import axial_deeplab_tf.keras_layers  # pylint: disable=g-import-not-at-top,unused-import
  _make_subclassed(tf)
  data = np.load(os.path.join(out_dir, "outputs.npz"))
  report = {}
  for file in sorted(os.listdir(out_dir)):
    if not file.endswith(".keras"):
      continue
    key = file[:-len(".keras")]
    name = key.rsplit("_", 1)[0]
    model = tf.keras.models.load_model(os.path.join(out_dir, file))
    y = np.array(model(_saved_inputs(data, name), training=False))
    report[key] = float(np.max(np.abs(y - data[key])))
  return report


def serve(out_dir):
  # The exported SavedModels must run without the package.
  sys.modules["axial_deeplab_tf"] = None
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    import axial_deeplab_tf  # pylint: disable=g-import-not-at-top,unused-import
    raise AssertionError("the package is still importable")
  except ImportError:
    pass
  data = np.load(os.path.join(out_dir, "outputs.npz"))
  report = {}
  for entry in sorted(os.listdir(out_dir)):
    if not entry.endswith("_export"):
      continue
    name = entry[:-len("_export")]
    loaded = tf.saved_model.load(os.path.join(out_dir, entry))
    inputs = _saved_inputs(data, name)
    y = loaded.serve(inputs) if isinstance(inputs, list) else loaded.serve(
        tf.constant(inputs))
    report[name] = float(np.max(np.abs(np.array(y) -
                                       data[f"{name}_functional"])))
  return report


if __name__ == "__main__":
  sys.path.insert(0, ROOT)
  mode, directory = sys.argv[1], sys.argv[2]
  if mode == "serve":
    sys.path.remove(ROOT)
  result = {"train": train, "load": load, "serve": serve}[mode](directory)
  print("RESULT " + json.dumps(result))
