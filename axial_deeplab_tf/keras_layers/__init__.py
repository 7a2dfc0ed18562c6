"""Keras 3 versions of the package's layers (any Keras backend).

In TensorFlow 2.20 `tf.keras` is Keras 3, where the tf_keras layers of
`axial_deeplab_tf.layers` cannot be used. The layers here take the same
arguments, keep the same variables under the same names and run on the
TensorFlow, JAX and PyTorch backends (`keras.ops` only); `copy_weights`
moves weights between a tf_keras layer or model and its Keras 3 twin.
Importing this module does not import tf_keras.
"""

from axial_deeplab_tf.keras_layers.attention2d import GlobalSelfAttention2D
from axial_deeplab_tf.keras_layers.attention2d import LocalSelfAttention2D
from axial_deeplab_tf.keras_layers.axial import AxialAttention
from axial_deeplab_tf.keras_layers.axial import AxialAttention2D
from axial_deeplab_tf.keras_layers.axial import AxialBlock
from axial_deeplab_tf.keras_layers.backbones import build_axial_resnet_backbone
from axial_deeplab_tf.keras_layers.backbones import build_axial_resnet_classifier
from axial_deeplab_tf.keras_layers.backbones import build_zoo_classifier
from axial_deeplab_tf.keras_layers.issa import InterlacedSparseSelfAttention
from axial_deeplab_tf.keras_layers.issa import ISSASelfAttentionBlock
from axial_deeplab_tf.keras_layers.segnext import Hamburger
from axial_deeplab_tf.keras_layers.segnext import LightHamHead
from axial_deeplab_tf.keras_layers.segnext import MSCANBlock
from axial_deeplab_tf.keras_layers.segnext import MultiScaleConvAttention
from axial_deeplab_tf.keras_layers.segnext import NMF2D
from axial_deeplab_tf.keras_layers.weights import copy_weights
from axial_deeplab_tf.keras_layers.weights import weight_pairs

# Short names used in the issue and the README.
ISSA = InterlacedSparseSelfAttention
MSCA = MultiScaleConvAttention
