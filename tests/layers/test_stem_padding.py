"""Symmetric stem padding: PaddedConv2D / PaddedMaxPool2D.

References: PyTorch's Conv2d / MaxPool2d with padding k // 2 (the official
codes' stems), and at odd sizes TF's own 'same' padding (what the models
computed before, which must not change there).
"""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras
import torch

from axial_deeplab_tf.layers import common
from axial_deeplab_tf.modeling import axial_deeplab
from axial_deeplab_tf.modeling import conv_baselines
from axial_deeplab_tf.modeling.backbones import axial_resnet


def _torch_conv(x, kernel, strides):
  weight = torch.from_numpy(np.transpose(kernel, (3, 2, 0, 1)).copy())
  out = torch.nn.functional.conv2d(
      torch.from_numpy(np.transpose(x, (0, 3, 1, 2)).copy()), weight,
      stride=strides, padding=kernel.shape[0] // 2)
  return np.transpose(out.numpy(), (0, 2, 3, 1))


def _torch_max_pool(x, size, strides):
  out = torch.nn.functional.max_pool2d(
      torch.from_numpy(np.transpose(x, (0, 3, 1, 2)).copy()), size,
      stride=strides, padding=size // 2)
  return np.transpose(out.numpy(), (0, 2, 3, 1))


@pytest.mark.parametrize("kernel_size,size", [(7, 10), (7, 11), (3, 8),
                                              (3, 9), (7, 224)])
def test_padded_conv_matches_pytorch_padding(kernel_size, size):
  rng = np.random.default_rng(kernel_size * 1000 + size)
  x = rng.normal(size=(2, size, size + 2, 3)).astype(np.float32)
  layer = common.PaddedConv2D(4, kernel_size, strides=2, use_bias=False)
  y = layer(x).numpy()
  expected = _torch_conv(x, layer.kernel.numpy(), 2)
  assert y.shape == expected.shape
  np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
  assert layer.compute_output_shape(x.shape) == y.shape


@pytest.mark.parametrize("size", [6, 7, 112, 113])
def test_padded_max_pool_matches_pytorch_on_negative_inputs(size):
  # All inputs negative: a zero padding would win at the borders.
  x = -np.random.default_rng(size).uniform(1, 2, size=(1, size, size, 2))
  x = x.astype(np.float32)
  layer = common.PaddedMaxPool2D(3, strides=2)
  y = layer(x).numpy()
  np.testing.assert_array_equal(y, _torch_max_pool(x, 3, 2))
  assert layer.compute_output_shape(x.shape) == y.shape


@pytest.mark.parametrize("kernel_size", [3, 7])
def test_odd_sizes_keep_tf_same_padding_numbers(kernel_size):
  rng = np.random.default_rng(kernel_size)
  x = rng.normal(size=(1, 15, 21, 3)).astype(np.float32)
  padded = common.PaddedConv2D(5, kernel_size, strides=2, use_bias=False)
  y = padded(x).numpy()
  old = tf_keras.layers.Conv2D(5, kernel_size, strides=2, padding="same",
                               use_bias=False)
  old.build(x.shape)
  old.set_weights(padded.get_weights())
  np.testing.assert_array_equal(y, old(x).numpy())
  pooled = common.PaddedMaxPool2D(3, strides=2)(x).numpy()
  np.testing.assert_array_equal(
      pooled, tf_keras.layers.MaxPool2D(3, 2, padding="same")(x).numpy())


def test_even_sizes_differ_from_tf_same_padding():
  # The reason for the change: 'same' pads 2 before / 3 after at 10x10.
  x = np.random.default_rng(0).normal(size=(1, 10, 10, 1)).astype(np.float32)
  padded = common.PaddedConv2D(1, 7, strides=2, use_bias=False)
  y = padded(x).numpy()
  old = tf.nn.conv2d(x, padded.kernel, 2, "SAME").numpy()
  assert y.shape == old.shape
  assert np.abs(y - old).max() > 1e-3


def test_padded_layers_check_arguments_and_serialise():
  with pytest.raises(ValueError, match="padding must be 'valid'"):
    common.PaddedConv2D(3, 3, padding="same")
  with pytest.raises(ValueError, match="kernel_size must be one int"):
    common.PaddedConv2D(3, (3, 5))
  with pytest.raises(ValueError, match="padding must be 'valid'"):
    common.PaddedMaxPool2D(3, 2, padding="same")
  assert common.symmetric_padding(7) == (3, 3)
  assert common.symmetric_padding(3, dilation_rate=2) == (2, 2)
  layer = common.PaddedConv2D(2, 3, strides=2)
  restored = common.PaddedConv2D.from_config(layer.get_config())
  assert restored.kernel_size == (3, 3) and restored.padding == "valid"


def _layer_types(model):
  return {layer.name: type(layer) for layer in model.layers}


@pytest.mark.parametrize("stem", ["conv", "inception"])
def test_axial_resnet_stems_use_symmetric_padding(stem):
  backbone = axial_resnet.build_axial_resnet_backbone(
      input_size=(None, None), depth=26, width_multiplier=0.125,
      num_heads=2, span=5, stem=stem)
  types = _layer_types(backbone)
  assert types["stem_pool"] is common.PaddedMaxPool2D
  conv = "stem_conv" if stem == "conv" else "stem_conv1"
  assert types[conv] is common.PaddedConv2D


def test_conv_baselines_stems_use_symmetric_padding():
  backbone = conv_baselines.build_conv_resnet_backbone(
      depth=26, width_multiplier=0.125, stem_channels=(4, 4, 8))
  types = _layer_types(backbone)
  assert types["stem_conv1"] is common.PaddedConv2D
  assert types["stem_pool"] is common.PaddedMaxPool2D


def test_dilated_resnet_stem_is_patched_only_while_building():
  from official.vision.modeling.backbones import resnet_deeplab  # pylint: disable=g-import-not-at-top
  with axial_deeplab._symmetric_stem():  # pylint: disable=protected-access
    backbone = resnet_deeplab.DilatedResNet(model_id=50, output_stride=16,
                                            stem_type="v1")
  assert resnet_deeplab.layers is tf_keras.layers
  layers = [l for l in backbone.layers
            if isinstance(l, (tf_keras.layers.Conv2D,
                              tf_keras.layers.MaxPool2D))]
  # Stem: stride-2 conv (padded), two stride-1 convs ('same'), the pool.
  assert isinstance(layers[0], common.PaddedConv2D)
  assert layers[0].strides == (2, 2)
  assert not isinstance(layers[1], common.PaddedConv2D)
  assert not isinstance(layers[2], common.PaddedConv2D)
  assert isinstance(layers[3], common.PaddedMaxPool2D)
