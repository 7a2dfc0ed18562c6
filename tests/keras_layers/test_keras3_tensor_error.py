"""A tf_keras layer of the package handed a Keras 3 tensor names the module."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from axial_deeplab_tf import attention_math
from axial_deeplab_tf import layers as tfk_layers
from axial_deeplab_tf.modeling.heads import light_ham_head


@pytest.mark.parametrize("make, shape", [
    (lambda: tfk_layers.AxialAttention(span=3, key_depth=8, value_depth=8),
     (5, 4)),
    (lambda: tfk_layers.AxialAttention2D(span=3, key_depth=8,
                                         value_depth=8), (5, 5, 4)),
    (lambda: tfk_layers.AxialBlock(filters=8, span=3), (5, 5, 4)),
    (lambda: tfk_layers.LocalSelfAttention2D(key_depth=16, value_depth=8),
     (5, 5, 4)),
    (lambda: tfk_layers.GlobalSelfAttention2D(key_depth=8, value_depth=8),
     (5, 5, 4)),
    (lambda: tfk_layers.InterlacedSparseSelfAttention(key_channels=4),
     (4, 4, 4)),
    (lambda: tfk_layers.MultiScaleConvAttention(), (5, 5, 4)),
    (lambda: tfk_layers.MSCANBlock(), (5, 5, 4)),
    (lambda: tfk_layers.NMF2D(rank=2), (5, 5, 4)),
    (lambda: tfk_layers.Hamburger(rank=2, norm_groups=2), (5, 5, 4)),
])
def test_keras3_tensor_gives_type_error_naming_the_keras3_module(make, shape):
  layer = make()
  with pytest.raises(TypeError,
                     match=r"axial_deeplab_tf\.keras_layers\.\w+") as info:
    layer(keras.Input(shape))
  assert type(layer).__name__ in str(info.value)


def test_lists_of_keras3_tensors_and_ordinary_inputs():
  head = light_ham_head.LightHamHead(num_classes=2, channels=4, ham_channels=4,
                                 norm_groups=2, rank=2)
  with pytest.raises(TypeError, match="keras_layers.LightHamHead"):
    head([keras.Input((4, 4, 4)), keras.Input((2, 2, 4))])
  # tf tensors and tf_keras inputs pass the check.
  attention_math.check_not_keras3_tensor("X", [tf.zeros([1]),
                                               np.zeros([1])])
