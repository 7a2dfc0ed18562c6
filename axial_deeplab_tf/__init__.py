"""Axial-DeepLab, SegNeXt and ISANet for TensorFlow 2 (tf_keras, Model Garden)."""

__version__ = "0.1.0"
