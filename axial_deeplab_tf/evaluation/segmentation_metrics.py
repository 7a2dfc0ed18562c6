"""Streaming mean IoU and pixel accuracy from a confusion matrix (numpy).

Model Garden's `official.vision.evaluation.segmentation_metrics.MeanIoU` is a
Keras metric that takes logits and `image_info` inside the training graph.
This one runs on the host on label maps that post-processing has already
produced (semantic maps, or panoptic maps with `label_divisor`), reports
per-class IoU and pixel accuracy, and merges states across replicas/batches.

Definition: ground-truth pixels equal to `ignored_label` are left out. A
prediction of `ignored_label` on a valid pixel (a panoptic prediction may
leave pixels void) is counted as a miss of the ground-truth class: the
confusion matrix has one extra column for it. IoU of class c is
`cm[c, c] / (row_c + column_c - cm[c, c])`; mIoU averages the classes whose
union is non-empty; pixel accuracy is the trace over all valid pixels.
"""

from typing import Any, Dict, Mapping, Optional, Sequence, Union

import numpy as np

from axial_deeplab_tf.evaluation import metric_states
from axial_deeplab_tf.evaluation import panoptic_quality


class MeanIoU:
  """Streaming confusion-matrix mean IoU over semantic (or panoptic) maps."""

  def __init__(self,
               num_classes: int,
               ignored_label: int = 255,
               label_divisor: Optional[int] = None):
    """Creates the metric.

    Args:
      num_classes: number of semantic classes; train ids are 0..num_classes-1.
      ignored_label: semantic id of void pixels; must not be a train id.
      label_divisor: if set, inputs are panoptic ids and the semantic id is
        `id // label_divisor`; if None, inputs are semantic ids.

    Raises:
      ValueError: on an invalid argument.
    """
    panoptic_quality.check_label_args(num_classes, ignored_label,
                                      label_divisor)
    self.num_classes = int(num_classes)
    self.ignored_label = int(ignored_label)
    self.label_divisor = None if label_divisor is None else int(label_divisor)
    self.reset()

  def reset(self) -> None:
    """Clears the confusion matrix."""
    # Rows: GT class; columns: predicted class, last column predicted void.
    self.confusion_matrix = np.zeros(
        (self.num_classes, self.num_classes + 1), dtype=np.int64)

  def _semantic(self, value: Any, name: str) -> np.ndarray:
    labels = panoptic_quality.as_label_batch(value, name)
    if self.label_divisor is not None:
      labels = labels // self.label_divisor
    bad = np.unique(labels[(labels >= self.num_classes) &
                           (labels != self.ignored_label)])
    if bad.size:
      raise ValueError(
          f"{name} has semantic ids {bad[:10].tolist()} outside "
          f"[0, {self.num_classes}) that are not ignored_label="
          f"{self.ignored_label}.")
    return labels

  def update(self, groundtruth: Any, prediction: Any) -> None:
    """Accumulates the confusion matrix of one image or a batch.

    Args:
      groundtruth: integer `[height, width]` or `[batch, height, width]` GT.
      prediction: integer predictions of the same shape.

    Raises:
      ValueError: float maps, shape mismatch, empty maps or ids out of range.
    """
    gt = self._semantic(groundtruth, "groundtruth")
    pred = self._semantic(prediction, "prediction")
    panoptic_quality.check_same_shape(gt, pred)
    valid = gt != self.ignored_label
    gt = gt[valid]
    pred = pred[valid]
    pred = np.where(pred == self.ignored_label, self.num_classes, pred)
    width = self.num_classes + 1
    self.confusion_matrix += np.bincount(
        gt * width + pred, minlength=self.num_classes * width).reshape(
            self.num_classes, width)

  def get_state(self) -> Dict[str, np.ndarray]:
    """Returns `{"confusion_matrix": int64 [num_classes, num_classes + 1]}`."""
    return {"confusion_matrix": self.confusion_matrix.copy()}

  def merge_state(
      self, others: Union["MeanIoU", Mapping[str, Any],
                          Sequence[Union["MeanIoU", Mapping[str, Any]]]]
  ) -> None:
    """Adds the confusion matrices of other metrics or state dicts.

    Args:
      others: a `MeanIoU`, a `get_state()` dict, or a sequence of these.

    Raises:
      ValueError: wrong shape or negative counts.
      TypeError: an object that is neither a metric nor a state dict.
    """
    matrices = []
    for i, other in enumerate(metric_states.states_to_merge(
        others, MeanIoU, required_key="confusion_matrix")):
      matrix = np.asarray(other["confusion_matrix"])
      if matrix.shape != self.confusion_matrix.shape:
        raise ValueError(
            f"others[{i}]['confusion_matrix'] has shape {matrix.shape}; "
            f"expected {self.confusion_matrix.shape}.")
      if not np.issubdtype(matrix.dtype, np.integer) or np.any(matrix < 0):
        raise ValueError(
            f"others[{i}]['confusion_matrix'] must hold non-negative ints.")
      matrices.append(matrix.astype(np.int64))
    for matrix in matrices:
      self.confusion_matrix += matrix

  def result(self) -> Dict[str, Any]:
    """Returns mIoU, per-class IoU and pixel accuracy.

    Returns:
      dict with float `miou` (NaN if no class has a non-empty union), float64
      `[num_classes]` `per_class_iou` (NaN where the union is empty), float
      `pixel_accuracy` (NaN before any valid pixel), and the int64
      `confusion_matrix` `[num_classes, num_classes + 1]` (last column:
      predicted void).
    """
    cm = self.confusion_matrix
    diagonal = np.diagonal(cm[:, :self.num_classes]).astype(np.float64)
    union = cm.sum(axis=1) + cm[:, :self.num_classes].sum(axis=0) - diagonal
    present = union > 0
    per_class_iou = np.full(self.num_classes, np.nan)
    per_class_iou[present] = diagonal[present] / union[present]
    total = cm.sum()
    return {
        "miou": (float(per_class_iou[present].mean()) if np.any(present) else
                 float("nan")),
        "per_class_iou": per_class_iou,
        "pixel_accuracy": (float(diagonal.sum() / total) if total else
                           float("nan")),
        "confusion_matrix": cm.copy(),
    }
