"""Utilities: model statistics (multiply-adds, trainable parameters).

The model statistics load on first use, so that the light modules here
(errors, io) do not import TensorFlow (converter workers import them).
"""

_MADDS_NAMES = ("count_madds", "count_params", "einsum_madds", "MAddsCount")


def __getattr__(name):
  if name in _MADDS_NAMES:
    from axial_deeplab_tf.utils import madds  # pylint: disable=g-import-not-at-top
    return getattr(madds, name)
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
