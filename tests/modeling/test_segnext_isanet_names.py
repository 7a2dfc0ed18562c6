"""Variable names of the SegNeXt and ISANet models and layers.

Every variable has its own readable name, so `save_weights` to .h5 works and
checkpoints can be read; .h5 and TF-checkpoint round trips are exact.
"""

import collections

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from axial_deeplab_tf import models
from axial_deeplab_tf.modeling.heads import light_ham_head
from axial_deeplab_tf.layers import issa
from axial_deeplab_tf.layers import msca

_SLOW = {"segnext_b", "segnext_l", "isanet_r101"}
_NAMES = [n for n in models.list_models()
          if n.startswith(("segnext_", "isanet_"))]


def _duplicates(variables):
  counts = collections.Counter(v.name for v in variables)
  return sorted(n for n, c in counts.items() if c > 1)


def test_every_segnext_and_isanet_model_is_listed():
  assert set(_NAMES) == {"segnext_t", "segnext_s", "segnext_b", "segnext_l",
                         "isanet_r50", "isanet_r101"}


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.slow) if n in _SLOW else n
    for n in _NAMES])
def test_zoo_model_variable_names_are_unique_and_readable(name):
  model = models.build(name, num_classes=3, input_size=(32, 32))
  variables = model.variables
  assert _duplicates(variables) == []
  for v in variables:
    # No Keras default names (conv2d_3, batch_normalization_7, ...): they
    # depend on what else the process built.
    assert not any(part.startswith(("conv2d", "batch_normalization",
                                    "depthwise_conv2d", "dense"))
                   for part in v.name.split("/")), v.name


def _randomize(model, seed):
  rng = np.random.default_rng(seed)
  for v in model.variables:
    v.assign(rng.normal(size=v.shape).astype(v.dtype.as_numpy_dtype))


def _assert_same_values(a, b):
  assert [v.name for v in a.variables] == [v.name for v in b.variables]
  for x, y in zip(a.variables, b.variables):
    np.testing.assert_array_equal(x.numpy(), y.numpy(), err_msg=x.name)


def _small_segnext():
  return models.build("segnext_t", num_classes=3, input_size=(32, 32),
                      embed_dims=(16, 32, 32, 64), depths=(1, 1, 2, 1),
                      head_channels=32, ham_channels=32, md_r=4,
                      norm_groups=8)


def _small_isanet():
  return models.build("isanet_r50", num_classes=3, input_size=(32, 32),
                      head_channels=32, key_channels=16, aux_channels=16)


@pytest.mark.parametrize("build", [_small_segnext, _small_isanet],
                         ids=["segnext", "isanet"])
def test_h5_and_checkpoint_round_trips_are_exact(build, tmp_path):
  model = build()
  _randomize(model, 0)
  model.save_weights(str(tmp_path / "weights.h5"))
  restored = build()
  restored.load_weights(str(tmp_path / "weights.h5"))
  _assert_same_values(model, restored)
  prefix = tf.train.Checkpoint(model=model).write(str(tmp_path / "ckpt"))
  restored = build()
  tf.train.Checkpoint(model=restored).read(
      prefix).assert_existing_objects_matched()
  _assert_same_values(model, restored)


@pytest.mark.parametrize("layer_fn,shape", [
    (lambda: msca.MSCANBlock(mlp_ratio=2, name="block"), [1, 8, 8, 8]),
    (lambda: light_ham_head.LightHamHead(num_classes=3, channels=16,
                                    ham_channels=16, rank=4, norm_groups=4,
                                    name="head"), None),
    (lambda: issa.InterlacedSparseSelfAttention(
        key_channels=4, partition_factors=(2, 2), value_use_bias=False,
        activation="leaky_relu", name="issa"), [1, 6, 6, 8]),
])
def test_layer_weights_round_trip_through_h5(layer_fn, shape, tmp_path):
  def build():
    if shape is None:
      inputs = [tf_keras.Input([8, 8, 8]), tf_keras.Input([4, 4, 16])]
    else:
      inputs = tf_keras.Input(shape[1:])
    layer = layer_fn()
    return tf_keras.Model(inputs, layer(inputs))

  model = build()
  assert _duplicates(model.variables) == []
  _randomize(model, 1)
  model.save_weights(str(tmp_path / "layer.h5"))
  restored = build()
  restored.load_weights(str(tmp_path / "layer.h5"))
  _assert_same_values(model, restored)
