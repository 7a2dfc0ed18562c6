"""Input checks, input normalisations and the builder of the semantic models."""

from typing import Any, Optional, Sequence, Tuple

import tensorflow as tf
import tf_keras


# Input normalisations of the official code bases, for imported weights:
# "imagenet_rgb" (mmsegmentation: (x - mean) / std per RGB channel) and
# "caffe_bgr" (openseg: channels reversed to BGR, BGR mean subtracted, std
# 1). Images come in as RGB in [0, 255].
_INPUT_NORMALIZATIONS = {
    "imagenet_rgb": dict(reverse=False, mean=(123.675, 116.28, 103.53),
                         std=(58.395, 57.12, 57.375)),
    "caffe_bgr": dict(reverse=True, mean=(102.9801, 115.9465, 122.7717),
                      std=(1.0, 1.0, 1.0)),
}


def check_input_normalization(value: Any) -> Optional[str]:
  """Validates an `input_normalization` argument (None or a known name)."""
  if value is not None and value not in _INPUT_NORMALIZATIONS:
    raise ValueError(f"input_normalization must be None or one of "
                     f"{sorted(_INPUT_NORMALIZATIONS)}, got {value!r}.")
  return value


def normalize_input(images: tf.Tensor, normalization: Optional[str]
                   ) -> tf.Tensor:
  """Applies a named input normalisation to RGB images in [0, 255].

  Args:
    images: [batch, height, width, 3].
    normalization: None (identity) or a key of `_INPUT_NORMALIZATIONS`.

  Returns:
    [batch, height, width, 3] in the dtype of `images`.
  """
  if normalization is None:
    return images
  spec = _INPUT_NORMALIZATIONS[normalization]
  x = tf.cast(images, tf.float32)
  if spec["reverse"]:
    x = x[..., ::-1]
  x = (x - tf.constant(spec["mean"])) / tf.constant(spec["std"])
  return tf.cast(x, images.dtype)


def check_input_size(input_size: Any) -> Tuple[Optional[int], Optional[int]]:
  """Validates a builder's `input_size`: None or (height, width).

  Args:
    input_size: None, or two entries each a positive int or None.

  Returns:
    (height, width) with None for unknown.
  """
  if input_size is None:
    return None, None
  if isinstance(input_size, (str, bytes)) or not isinstance(
      input_size, Sequence) or len(input_size) != 2 or any(
          d is not None and (isinstance(d, bool) or not isinstance(d, int) or
                             d < 1) for d in input_size):
    raise ValueError("input_size must be None or (height, width) of positive "
                     f"ints (or None), got {input_size!r}.")
  return input_size[0], input_size[1]


def build_with_input_size(model_class, num_classes: int, input_size: Any,
                          **kwargs) -> tf_keras.Model:
  """`model_class(num_classes=..., **kwargs)` with its variables created.

  Args:
    model_class: a tf_keras.Model class taking `num_classes` (SegNeXt,
      ISANet).
    num_classes: number of semantic classes, a positive int.
    input_size: (height, width) or None (see `check_input_size`); only used
      to build the variables.
    **kwargs: the other constructor arguments.

  Returns:
    The built model.
  """
  if isinstance(num_classes, bool) or not isinstance(
      num_classes, int) or num_classes < 1:
    raise ValueError(f"num_classes must be a positive int, got "
                     f"{num_classes!r}.")
  height, width = check_input_size(input_size)
  model = model_class(num_classes=num_classes, **kwargs)
  model.build((None, height, width, 3))
  return model
