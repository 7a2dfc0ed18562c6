"""Utilities: model statistics (multiply-adds, trainable parameters)."""

from axial_deeplab_tf.utils.madds import count_madds
from axial_deeplab_tf.utils.madds import count_params
from axial_deeplab_tf.utils.madds import einsum_madds
from axial_deeplab_tf.utils.madds import MAddsCount
