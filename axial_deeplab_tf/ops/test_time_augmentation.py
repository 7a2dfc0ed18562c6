"""Multi-scale and flip test-time augmentation for Panoptic-DeepLab outputs.

The image is run at several scales (and mirrored); every prediction is
brought back to the input resolution and frame, then averaged: semantic
probabilities (softmax in float32), the center heatmap, and the offsets.
Offsets are displacements in pixels, so when resized back they are
multiplied by the resize ratio of their axis, and when un-mirrored their
x component changes sign.
"""

from typing import Callable, Dict, Mapping, Sequence

import tensorflow as tf

from axial_deeplab_tf.attention_math import check_keys

_REQUIRED_KEYS = ("center_heatmap", "offset_map")


def _semantic_logits(outputs: Mapping[str, tf.Tensor]) -> tf.Tensor:
  if "semantic_logits" in outputs:
    return tf.cast(outputs["semantic_logits"], tf.float32)
  if "semantic_probs" in outputs:
    # log of probabilities are logits of the same softmax.
    return tf.math.log(tf.cast(outputs["semantic_probs"], tf.float32))
  raise ValueError(f"model_fn outputs need 'semantic_logits' or "
                   f"'semantic_probs', got keys {sorted(outputs)}.")


def _run(model_fn, images, scale: float, flip: bool, height, width):
  """One pass; returns (probs, heatmap, offsets) at [height, width]."""
  inputs = images
  if scale != 1.0:
    scaled_size = tf.cast(
        tf.round(tf.cast(tf.stack([height, width]), tf.float32) * scale),
        tf.int32)
    scaled_size = tf.maximum(scaled_size, 1)
    resized = tf.image.resize(images, scaled_size, method="bilinear")
    if images.dtype.is_integer:
      resized = tf.round(resized)
    inputs = tf.cast(resized, images.dtype)
  if flip:
    inputs = tf.reverse(inputs, axis=[2])

  outputs = model_fn(inputs)
  if not isinstance(outputs, Mapping):
    raise ValueError(f"model_fn must return a dict of tensors, got "
                     f"{type(outputs).__name__}.")
  check_keys("model_fn's result", outputs, _REQUIRED_KEYS)
  logits = _semantic_logits(outputs)
  heatmap = tf.cast(outputs["center_heatmap"], tf.float32)
  offsets = tf.cast(outputs["offset_map"], tf.float32)

  if flip:
    logits = tf.reverse(logits, axis=[2])
    heatmap = tf.reverse(heatmap, axis=[2])
    offsets = tf.reverse(offsets, axis=[2]) * tf.constant([1.0, -1.0])

  out_height = tf.shape(logits)[1]
  out_width = tf.shape(logits)[2]
  size = tf.stack([height, width])
  # Resize whenever the model output is not at input size (scaled passes, or
  # a model that predicts at a lower resolution).
  logits = tf.image.resize(logits, size, method="bilinear")
  heatmap = tf.image.resize(heatmap, size, method="bilinear")
  ratio = tf.cast(size, tf.float32) / tf.cast(
      tf.stack([out_height, out_width]), tf.float32)
  offsets = tf.image.resize(offsets, size, method="bilinear") * ratio
  return tf.nn.softmax(logits, axis=-1), heatmap, offsets


def multi_scale_flip_inference(
    model_fn: Callable[[tf.Tensor], Mapping[str, tf.Tensor]],
    images: tf.Tensor,
    scales: Sequence[float] = (1.0,),
    flip: bool = False) -> Dict[str, tf.Tensor]:
  """Averages Panoptic-DeepLab predictions over scales and mirroring.

  Args:
    model_fn: callable mapping images [batch, h, w, channels] to a dict with
      `semantic_logits` (or `semantic_probs`) [batch, h', w', num_classes],
      `center_heatmap` [batch, h', w', 1] and `offset_map` [batch, h', w', 2]
      ((dy, dx) in pixels of the h' x w' grid); e.g. a Keras model called
      with training=False.
    images: [batch, height, width, channels] images, any dtype the model
      accepts (integer images are rounded back to their dtype after
      resizing).
    scales: positive resize factors of the input.
    flip: also run every scale on the left-right mirrored image.

  Returns:
    A dict at [batch, height, width]: semantic_probs [..., num_classes]
    (mean probabilities), semantic_logits (their log), center_heatmap
    [..., 1] and offset_map [..., 2] (means), all float32.

  Raises:
    ValueError: on empty or non-positive scales, images not of rank 4, or
      model outputs lacking a key.
  """
  scales = tuple(float(s) for s in scales)
  if not scales:
    raise ValueError("scales must not be empty.")
  if any(not s > 0 for s in scales):
    raise ValueError(f"scales must be positive, got {scales}.")
  images = tf.convert_to_tensor(images)
  if images.shape.rank != 4:
    raise ValueError(f"images must be [batch, height, width, channels], got "
                     f"shape {images.shape}.")
  height = tf.shape(images)[1]
  width = tf.shape(images)[2]

  probs_sum = heatmap_sum = offsets_sum = None
  passes = 0
  for scale in scales:
    for flipped in ((False, True) if flip else (False,)):
      probs, heatmap, offsets = _run(model_fn, images, scale, flipped, height,
                                     width)
      if passes == 0:
        probs_sum, heatmap_sum, offsets_sum = probs, heatmap, offsets
      else:
        probs_sum += probs
        heatmap_sum += heatmap
        offsets_sum += offsets
      passes += 1
  probs = probs_sum / passes
  return {
      "semantic_probs": probs,
      "semantic_logits": tf.math.log(probs),
      "center_heatmap": heatmap_sum / passes,
      "offset_map": offsets_sum / passes,
  }
