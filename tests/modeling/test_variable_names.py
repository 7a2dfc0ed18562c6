"""Every variable of every Axial-family layer and zoo model has its own name.

Names are what `save_weights(".h5")` keys on and what a reader of a
checkpoint sees; the height and width passes of an axial layer, its q/k/v
projection, relative tables and batch norms must each be told apart.
"""

import collections
import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from axial_deeplab_tf import models
from axial_deeplab_tf.layers import AxialAttention
from axial_deeplab_tf.layers import AxialAttention2D
from axial_deeplab_tf.layers import AxialBlock
from axial_deeplab_tf.layers import GlobalSelfAttention2D
from axial_deeplab_tf.layers import LocalSelfAttention2D

# Families owned by other modules test their own names.
_OTHER_FAMILIES = ("segnext_", "isanet_")
_SMALL = 33  # Input size (1 mod 4) of the global-span models.


def _axial_family():
  return [n for n in models.list_models()
          if not n.startswith(_OTHER_FAMILIES)]


def _reduced_arguments(name):
  """Small widths and classes; every architectural choice kept."""
  if name == "resnet_50":
    return dict(num_classes=3, input_size=(_SMALL, _SMALL))
  if name.startswith(("axial_resnet", "full_axial_resnet")):
    return dict(num_classes=3, input_size=(_SMALL, _SMALL),
                width_multiplier=0.125, num_heads=2)
  if name.endswith("sasa_resnet_50"):
    return dict(num_classes=3, input_size=(_SMALL, _SMALL),
                block_filters=(4, 4, 4, 4), num_heads=2)
  if name.startswith("axial_deeplab"):
    # The axial decoder's fusion blocks need channels / 4 divisible by 8
    # heads.
    return dict(num_classes=3, width_multiplier=0.125, stem_channels=(4, 4, 8),
                semantic_channels=32 if "axial_decoder" in name else 8,
                instance_channels=8, context_channels=8)
  if name.startswith("panoptic_deeplab_resnet"):
    return dict(num_classes=3, width_multiplier=0.125,
                stem_channels=(4, 4, 8), context_channels=8,
                semantic_channels=8, instance_channels=8)
  if name.startswith("deeplab2_"):
    reduced = dict(num_classes=3, width_multiplier=0.0625,
                   stem_width_multiplier=0.0625)
    if name.endswith("_imagenet"):
      return reduced
    return dict(reduced, aspp_channels=8, semantic_decoder_channels=8,
                instance_decoder_channels=8, semantic_low_channels=(8, 8),
                instance_low_channels=(8, 8), semantic_head_channels=8,
                instance_head_channels=8)
  if name == "panoptic_deeplab_r50":
    return dict(num_classes=3, semantic_channels=8, instance_channels=8,
                aspp_channels=8)
  raise AssertionError(f"no reduced arguments for zoo model {name!r}")


def _duplicates(variables):
  counts = collections.Counter(v.name for v in variables)
  return sorted(n for n, c in counts.items() if c > 1)


def test_every_axial_family_model_is_covered():
  names = _axial_family()
  assert "axial_resnet_26s" in names and "axial_deeplab_l" in names
  for name in names:
    _reduced_arguments(name)


@pytest.mark.slow  # Tens of seconds per model on a loaded 2-core machine.
@pytest.mark.parametrize("name", _axial_family())
def test_zoo_model_variable_names_are_unique(name):
  model = models.build(name, **_reduced_arguments(name))
  assert model.variables
  assert _duplicates(model.variables) == []


def test_aspp_matches_model_garden_and_restores_its_checkpoints(tmp_path):
  """Two decoders with ASPP hold distinct names; a checkpoint of Model
  Garden's own ASPP restores into them with every value consumed and the
  same outputs."""
  from official.vision.modeling.decoders import aspp  # pylint: disable=g-import-not-at-top
  from axial_deeplab_tf.modeling import axial_deeplab  # pylint: disable=g-import-not-at-top

  def decoder(name):
    return axial_deeplab.PanopticDeepLabDecoder(
        high_key="4", low_keys=("3",), channels=8, low_channels=(4,),
        context="aspp", context_channels=8, name=name)

  rng = np.random.default_rng(0)
  endpoints = {"4": tf.constant(rng.normal(size=[2, 5, 6, 16]), tf.float32),
               "3": tf.constant(rng.normal(size=[2, 9, 11, 8]), tf.float32)}
  ours = [decoder("semantic_decoder"), decoder("instance_decoder")]
  for d in ours:
    d(endpoints, training=False)
  names = [v.name for d in ours for v in d.variables]
  assert _duplicates([d for o in ours for d in o.variables]) == []
  assert "semantic_decoder_aspp_atrous2_conv/kernel:0" in names
  assert "instance_decoder_aspp_pool_bn/moving_mean:0" in names

  reference = decoder("reference")
  reference._aspp = aspp.ASPP(  # pylint: disable=protected-access
      level=4, dilation_rates=[6, 12, 18], num_filters=8, output_tensor=True,
      name="aspp")
  reference(endpoints, training=False)
  _randomize(reference, 3)
  expected = reference(endpoints, training=False).numpy()
  path = tf.train.Checkpoint(decoder=reference).write(str(tmp_path / "mg"))
  target = ours[1]
  assert target.count_params() == reference.count_params()
  tf.train.Checkpoint(decoder=target).read(path).assert_consumed()
  np.testing.assert_array_equal(target(endpoints, training=False).numpy(),
                                expected)


def _layers():
  """Each Axial-family layer, small, with every weight it can have."""
  return {
      "axial_attention": (AxialAttention(num_heads=2, key_depth=4,
                                         value_depth=8, max_length=6),
                          [2, 6, 3]),
      "axial_attention_2d": (AxialAttention2D(num_heads=2, key_depth=4,
                                              value_depth=8, span=3,
                                              strides=2),
                             [2, 6, 7, 3]),
      "axial_block": (AxialBlock(filters=4, num_heads=2, max_length=(6, 7),
                                 strides=2), [2, 6, 7, 3]),
      "local_block": (AxialBlock(filters=4, num_heads=2,
                                 attention_type="local", kernel_size=3),
                      [2, 6, 7, 3]),
      "global_block": (AxialBlock(filters=4, num_heads=2,
                                  attention_type="global"), [2, 6, 7, 3]),
      "local_attention": (LocalSelfAttention2D(key_depth=4, value_depth=8,
                                               num_heads=2, kernel_size=3),
                          [2, 6, 7, 3]),
      "global_attention": (GlobalSelfAttention2D(key_depth=4, value_depth=8,
                                                 num_heads=2),
                           [2, 6, 7, 3]),
  }


@pytest.mark.parametrize("key", sorted(_layers()))
def test_layer_variable_names_are_unique(key):
  layer, shape = _layers()[key]
  layer(tf.zeros(shape), training=True)
  assert layer.variables
  assert _duplicates(layer.variables) == []


def test_axial_attention_2d_names_say_pass_and_part():
  layer = AxialAttention2D(num_heads=2, key_depth=4, value_depth=8,
                           max_length=5, name="axial")
  layer(tf.zeros([1, 5, 5, 3]))
  names = {v.name for v in layer.variables}
  for axis in ("height", "width"):
    prefix = f"axial/{axis}_attention/"
    for part in ("qkv/kernel", "qkv_bn/gamma", "query_positional",
                 "key_positional", "value_positional", "similarity_gamma",
                 "similarity_moving_variance", "output_bn/moving_mean"):
      assert f"{prefix}{part}:0" in names


def _randomize(obj, seed):
  rng = np.random.default_rng(seed)
  for v in obj.variables:
    v.assign(rng.normal(size=v.shape).astype(v.dtype.as_numpy_dtype) * 0.1 +
             (1.0 if "variance" in v.name else 0.0))


def _round_trips(make, shape, tmp_path):
  """Saves `make()` with random weights to .h5 and a TF checkpoint; a fresh
  `make()` loaded from each holds the same values and gives the same
  outputs."""
  x = tf.constant(np.random.default_rng(1).normal(size=shape), tf.float32)
  source = make()
  source(x, training=False)
  _randomize(source, 0)
  expected = tf.nest.map_structure(lambda t: t.numpy(),
                                   source(x, training=False))
  values = {v.name: v.numpy() for v in source.variables}
  for path in (str(tmp_path / "weights.h5"), str(tmp_path / "ckpt")):
    source.save_weights(path)
    target = make()
    target(x, training=False)
    target.load_weights(path)
    assert {v.name for v in target.variables} == set(values)
    for v in target.variables:
      np.testing.assert_array_equal(v.numpy(), values[v.name], err_msg=v.name)
    got = tf.nest.map_structure(lambda t: t.numpy(), target(x, training=False))
    tf.nest.map_structure(np.testing.assert_array_equal, got, expected)


def test_axial_block_h5_and_checkpoint_round_trip(tmp_path):
  def make():
    inputs = tf_keras.Input([6, 7, 3])
    return tf_keras.Model(
        inputs, AxialBlock(filters=4, num_heads=2, max_length=(6, 7),
                           strides=2, name="block")(inputs))
  _round_trips(make, [2, 6, 7, 3], tmp_path)


@pytest.mark.slow
def test_axial_resnet_h5_and_checkpoint_round_trip(tmp_path):
  def make():
    return models.build("axial_resnet_26s", num_classes=3,
                        input_size=(_SMALL, _SMALL), width_multiplier=0.125,
                        num_heads=2)
  _round_trips(make, [1, _SMALL, _SMALL, 3], tmp_path)


@pytest.mark.slow
def test_panoptic_deeplab_r50_h5_and_checkpoint_round_trip(tmp_path):
  def make():
    # Model Garden's ResNet blocks take process-wide numbered names
    # (`bottleneck_block_16`); a fresh process numbers them the same way.
    tf_keras.backend.clear_session()
    return models.build("panoptic_deeplab_r50",
                        **_reduced_arguments("panoptic_deeplab_r50"))
  _round_trips(make, [1, _SMALL, _SMALL, 3], tmp_path)
