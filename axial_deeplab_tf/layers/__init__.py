"""Keras layers: axial attention and the other attention families."""

from axial_deeplab_tf.layers.axial_attention import AxialAttention
from axial_deeplab_tf.layers.axial_attention import AxialAttention2D
from axial_deeplab_tf.layers.axial_attention import AxialBlock
from axial_deeplab_tf.layers.global_attention import GlobalSelfAttention2D
from axial_deeplab_tf.layers.local_attention import LocalSelfAttention2D
from axial_deeplab_tf.layers.hamburger import Hamburger
from axial_deeplab_tf.layers.hamburger import NMF2D
from axial_deeplab_tf.layers.issa import InterlacedSparseSelfAttention
from axial_deeplab_tf.layers.issa import ISSASelfAttentionBlock
from axial_deeplab_tf.layers.msca import MSCANBlock
from axial_deeplab_tf.layers.msca import MultiScaleConvAttention
