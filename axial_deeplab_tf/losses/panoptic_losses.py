"""Panoptic-DeepLab losses: bootstrapped cross-entropy, center MSE, offset L1.

Every loss here is weighted per pixel and normalised per image by the number
of pixels with a non-zero weight (the void pixels of the semantic target,
and the pixels outside instances for the offsets, count for nothing), then
averaged over the images of the batch. All arithmetic is float32 whatever
the dtype of the predictions, so mixed-precision models get stable losses.

The batch mean is taken over the images a replica sees; under a distribution
strategy divide by the number of replicas before summing gradients, as
Model Garden tasks do.
"""

from typing import Dict, Mapping

import tensorflow as tf

from axial_deeplab_tf.attention_math import check_keys


def _check_rank(name: str, tensor: tf.Tensor, ranks) -> None:
  rank = tensor.shape.rank
  if rank is not None and rank not in ranks:
    raise ValueError(f"{name} must have rank in {tuple(ranks)}, got shape "
                     f"{tensor.shape}.")


def _per_image_mean(per_pixel_loss: tf.Tensor,
                    weights: tf.Tensor) -> tf.Tensor:
  """Weighted per-pixel loss averaged over non-zero weights, then the batch.

  Args:
    per_pixel_loss: float32 [batch, height, width].
    weights: float32 [batch, height, width].

  Returns:
    A float32 scalar.
  """
  batch = tf.shape(per_pixel_loss)[0]
  weighted = tf.reshape(per_pixel_loss * weights, [batch, -1])
  count = tf.reduce_sum(
      tf.cast(tf.not_equal(tf.reshape(weights, [batch, -1]), 0.0), tf.float32),
      axis=1)
  per_image = tf.math.divide_no_nan(tf.reduce_sum(weighted, axis=1), count)
  return _batch_mean(per_image)


def _batch_mean(per_image: tf.Tensor) -> tf.Tensor:
  # An empty batch has no loss, not a NaN one.
  return tf.math.divide_no_nan(
      tf.reduce_sum(per_image), tf.cast(tf.size(per_image), tf.float32))


def _pixel_weights(weights, like: tf.Tensor) -> tf.Tensor:
  """Returns weights as float32 [batch, height, width] (ones if None)."""
  if weights is None:
    return tf.ones(tf.shape(like)[:3], tf.float32)
  weights = tf.cast(tf.convert_to_tensor(weights), tf.float32)
  _check_rank("weights", weights, (3, 4))
  if weights.shape.rank == 4:
    if weights.shape[-1] is not None and weights.shape[-1] != 1:
      raise ValueError(f"weights of rank 4 must have one channel, got shape "
                       f"{weights.shape}.")
    weights = tf.squeeze(weights, axis=-1)
  return weights


class WeightedBootstrappedCrossEntropy:
  """Softmax cross-entropy on the hardest `top_k_percent` pixels of each image.

  Per image, the weighted per-pixel losses of the pixels with a non-zero
  weight are ranked; the largest round(top_k_percent * height * width) of
  them are averaged. With top_k_percent=1.0 this is the weighted
  cross-entropy averaged over the non-zero-weight pixels.
  """

  def __init__(self, top_k_percent: float = 0.2, ignore_label: int = 255):
    """Initializes the loss.

    Args:
      top_k_percent: fraction in (0, 1] of the pixels of an image to keep.
      ignore_label: label value whose pixels get weight 0.

    Raises:
      ValueError: if top_k_percent is outside (0, 1].
    """
    if not 0.0 < top_k_percent <= 1.0:
      raise ValueError(f"top_k_percent must lie in (0, 1], got "
                       f"{top_k_percent!r}.")
    self.top_k_percent = float(top_k_percent)
    self.ignore_label = int(ignore_label)

  def get_config(self):
    return {"top_k_percent": self.top_k_percent,
            "ignore_label": self.ignore_label}

  def __call__(self, y_true, y_pred, weights=None) -> tf.Tensor:
    """Computes the loss.

    Args:
      y_true: integer [batch, height, width] (or [..., 1]) labels in
        [0, num_classes) or ignore_label.
      y_pred: float [batch, height, width, num_classes] logits.
      weights: optional float [batch, height, width] per-pixel weights.

    Returns:
      A float32 scalar.

    Raises:
      ValueError: on tensors of the wrong rank or dtype.
    """
    labels = tf.convert_to_tensor(y_true)
    logits = tf.convert_to_tensor(y_pred)
    if not labels.dtype.is_integer:
      raise ValueError(f"y_true must hold integer labels, got dtype "
                       f"{labels.dtype.name}.")
    if not logits.dtype.is_floating:
      raise ValueError(f"y_pred must hold float logits, got dtype "
                       f"{logits.dtype.name}.")
    _check_rank("y_true", labels, (3, 4))
    _check_rank("y_pred", logits, (4,))
    if labels.shape.rank == 4:
      labels = tf.squeeze(labels, axis=-1)
    labels = tf.cast(labels, tf.int32)
    logits = tf.cast(logits, tf.float32)
    weights = _pixel_weights(weights, logits)

    is_ignored = tf.equal(labels, self.ignore_label)
    weights = tf.where(is_ignored, 0.0, weights)
    # Ignored pixels need some valid class for the op; their weight is 0.
    safe_labels = tf.where(is_ignored, 0, labels)
    pixel_loss = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=safe_labels, logits=logits)
    if self.top_k_percent == 1.0:
      return _per_image_mean(pixel_loss, weights)

    batch = tf.shape(pixel_loss)[0]
    weighted = tf.reshape(pixel_loss * weights, [batch, -1])
    active = tf.not_equal(tf.reshape(weights, [batch, -1]), 0.0)
    num_pixels = tf.shape(weighted)[1]
    k = tf.cast(tf.round(self.top_k_percent * tf.cast(num_pixels, tf.float32)),
                tf.int32)
    k = tf.clip_by_value(k, tf.minimum(1, num_pixels), num_pixels)
    # Zero-weight pixels rank below every active pixel (losses are >= 0), so
    # they are only picked when an image has fewer than k active pixels, and
    # then do not count.
    ranked = tf.where(active, weighted, -1.0)
    top_values, _ = tf.math.top_k(ranked, k=k, sorted=False)
    kept = top_values >= 0.0
    loss_sum = tf.reduce_sum(tf.where(kept, top_values, 0.0), axis=1)
    count = tf.reduce_sum(tf.cast(kept, tf.float32), axis=1)
    return _batch_mean(tf.math.divide_no_nan(loss_sum, count))


class _WeightedRegression:
  """Shared body of the weighted per-pixel regression losses."""

  # Elementwise error of (target - prediction); set by each subclass.
  _error_fn = None

  def get_config(self):
    return {}

  def __call__(self, y_true, y_pred, weights=None) -> tf.Tensor:
    """Computes the loss.

    Args:
      y_true: float [batch, height, width, channels] targets.
      y_pred: float [batch, height, width, channels] predictions.
      weights: optional float [batch, height, width] per-pixel weights.

    Returns:
      A float32 scalar: the per-pixel error (mean over channels) weighted,
      summed over the image and divided by its number of non-zero weights,
      then averaged over the batch.

    Raises:
      ValueError: on tensors of the wrong rank or mismatched static shapes.
    """
    target = tf.cast(tf.convert_to_tensor(y_true), tf.float32)
    pred = tf.cast(tf.convert_to_tensor(y_pred), tf.float32)
    _check_rank("y_true", target, (4,))
    _check_rank("y_pred", pred, (4,))
    if not target.shape.is_compatible_with(pred.shape):
      raise ValueError(f"y_true shape {target.shape} does not match y_pred "
                       f"shape {pred.shape}.")
    weights = _pixel_weights(weights, pred)
    pixel_error = tf.reduce_mean(type(self)._error_fn(target - pred), axis=-1)
    return _per_image_mean(pixel_error, weights)


class WeightedMSE(_WeightedRegression):
  """Weighted mean squared error (center heatmap regression)."""

  _error_fn = tf.square


class WeightedL1(_WeightedRegression):
  """Weighted mean absolute error (offset regression)."""

  _error_fn = tf.abs


_OUTPUT_KEYS = ("semantic_logits", "center_heatmap", "offset_map")
_TARGET_KEYS = ("semantic", "center_heatmap", "offset", "semantic_weights",
                "center_weights", "offset_weights")


class PanopticDeepLabLoss:
  """Semantic + center + offset losses of Panoptic-DeepLab."""

  def __init__(self,
               semantic_loss_weight: float = 1.0,
               center_loss_weight: float = 200.0,
               offset_loss_weight: float = 0.01,
               top_k_percent: float = 0.2,
               ignore_label: int = 255):
    """Initializes the loss.

    Args:
      semantic_loss_weight: factor of the bootstrapped cross-entropy.
      center_loss_weight: factor of the center heatmap MSE.
      offset_loss_weight: factor of the offset L1.
      top_k_percent: fraction of hardest pixels kept by the cross-entropy.
      ignore_label: semantic label of void pixels.

    Raises:
      ValueError: on a negative weight or an invalid top_k_percent.
    """
    for name, value in (("semantic_loss_weight", semantic_loss_weight),
                        ("center_loss_weight", center_loss_weight),
                        ("offset_loss_weight", offset_loss_weight)):
      if not value >= 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}.")
    self.semantic_loss_weight = float(semantic_loss_weight)
    self.center_loss_weight = float(center_loss_weight)
    self.offset_loss_weight = float(offset_loss_weight)
    self.top_k_percent = float(top_k_percent)
    self.ignore_label = int(ignore_label)
    self._semantic_loss = WeightedBootstrappedCrossEntropy(
        top_k_percent=top_k_percent, ignore_label=ignore_label)
    self._center_loss = WeightedMSE()
    self._offset_loss = WeightedL1()

  def get_config(self):
    return {
        "semantic_loss_weight": self.semantic_loss_weight,
        "center_loss_weight": self.center_loss_weight,
        "offset_loss_weight": self.offset_loss_weight,
        "top_k_percent": self.top_k_percent,
        "ignore_label": self.ignore_label,
    }

  def __call__(self, outputs: Mapping[str, tf.Tensor],
               targets: Mapping[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
    """Computes the losses of a batch.

    Args:
      outputs: model outputs: semantic_logits [batch, height, width,
        num_classes], center_heatmap [batch, height, width, 1] (raw),
        offset_map [batch, height, width, 2] as (dy, dx).
      targets: batched `PanopticTargetGenerator` outputs: semantic, and
        center_heatmap, offset, semantic_weights, center_weights,
        offset_weights.

    Returns:
      A dict of float32 scalars: semantic_loss, center_loss, offset_loss
      (each already multiplied by its loss weight) and total_loss, their sum.

    Raises:
      ValueError: if a key is missing.
    """
    check_keys("outputs", outputs, _OUTPUT_KEYS)
    check_keys("targets", targets, _TARGET_KEYS)
    semantic = self.semantic_loss_weight * self._semantic_loss(
        targets["semantic"], outputs["semantic_logits"],
        targets["semantic_weights"])
    center = self.center_loss_weight * self._center_loss(
        targets["center_heatmap"], outputs["center_heatmap"],
        targets["center_weights"])
    offset = self.offset_loss_weight * self._offset_loss(
        targets["offset"], outputs["offset_map"], targets["offset_weights"])
    return {
        "semantic_loss": semantic,
        "center_loss": center,
        "offset_loss": offset,
        "total_loss": semantic + center + offset,
    }
