"""Panoptic quality (PQ, SQ, RQ) on panoptic id maps, COCO panopticapi rules.

Definition (Kirillov et al., "Panoptic Segmentation", and the COCO
panopticapi evaluation), per image:

- A segment is the set of pixels sharing one panoptic id
  `semantic * label_divisor + instance`. Ground-truth (GT) pixels whose
  semantic id is `ignored_label` are void, whatever their instance id; so are
  predicted pixels with semantic id `ignored_label`.
- A GT pixel of a thing class with instance id 0 is crowd. All crowd pixels of
  one class in one image form a single crowd region (the panopticapi keeps one
  crowd segment per category). Crowd regions are never matched and never
  false negatives.
- A predicted segment and a non-crowd GT segment match when they have the same
  class and IoU > 0.5 (strictly; IoU exactly 0.5 does not match). The union
  leaves out the predicted pixels that fall on GT void. With IoU > 0.5 a
  match is unique, so no assignment step is needed.
- Unmatched non-crowd GT segments are false negatives. An unmatched predicted
  segment is a false positive unless more than half of its pixels lie on GT
  void or on the crowd region of its own class.
- Per class: SQ = sum of matched IoUs / TP, RQ = TP / (TP + FP/2 + FN/2),
  PQ = SQ * RQ. The overall, thing and stuff numbers average the classes
  with TP + FP + FN > 0 (accumulated over all images). An average over no
  class is NaN, and so are the per-class numbers of classes never seen.

Relation to Model Garden (`official.vision.evaluation.panoptic_quality`):
`PanopticQuality` here subclasses its host-side `PanopticQuality` and reuses
its accumulators (`tp_per_class`, `fp_per_class`, `fn_per_class`,
`iou_per_class`), `reset`, `result_per_category` and the per-subset class
averaging of its `result(is_thing)`. The per-image matching is ours, because
the Model Garden version
- has no crowd rule: a thing pixel with instance 0 is an ordinary GT segment
  there (it can be matched and it counts as a false negative), and unmatched
  predictions on crowd regions are false positives;
- treats only instance ids > 0 of the ignored category as extra "ignored"
  regions, and only pixels with exactly the void id reduce the union;
- walks the intersections in a Python loop, where this one uses one
  `np.unique` over combined ids and `np.bincount` reductions.
`PanopticQualityV2` (the in-graph Keras metric) fixes the number of instances
per image and also lacks the per-class crowd region, so it is not used.
"""

import collections.abc
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence, Union

import numpy as np

from official.vision.evaluation import panoptic_quality as mg_panoptic_quality

from axial_deeplab_tf.evaluation import metric_states

_STATE_KEYS = ("tp", "fp", "fn", "iou_sum")


def as_label_batch(value: Any, name: str) -> np.ndarray:
  """Converts an integer label map to an int64 numpy batch.

  Args:
    value: numpy array, eager `tf.Tensor` or nested sequence of integers with
      shape `[height, width]` or `[batch, height, width]`.
    name: argument name used in error messages.

  Returns:
    int64 array of shape `[batch, height, width]` (batch 1 for 2-D input).

  Raises:
    TypeError: `value` is a symbolic (graph) tensor.
    ValueError: `value` is not integer, not 2-D/3-D, empty or negative.
  """
  if hasattr(value, "numpy") and callable(value.numpy):
    try:
      value = value.numpy()
    except (AttributeError, NotImplementedError, ValueError, TypeError) as e:
      raise TypeError(
          f"{name} must be a numpy array or an eager tensor; got {value!r}, "
          "which cannot be converted to numpy.") from e
  try:
    array = np.asarray(value)
  except NotImplementedError as e:  # symbolic tensors refuse conversion
    raise TypeError(
        f"{name} must be a numpy array or an eager tensor; got {value!r}, "
        "which cannot be converted to numpy (run metrics outside "
        "tf.function).") from e
  if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.integer):
    raise ValueError(
        f"{name} must be an integer label map; got dtype {array.dtype}.")
  if array.ndim == 2:
    array = array[np.newaxis]
  elif array.ndim != 3:
    raise ValueError(
        f"{name} must have shape [height, width] or [batch, height, width]; "
        f"got shape {array.shape}.")
  if array.size == 0:
    raise ValueError(f"{name} is empty: shape {array.shape}.")
  if array.dtype == np.uint64 and array.max() > np.iinfo(np.int64).max:
    raise ValueError(
        f"{name} has ids above {np.iinfo(np.int64).max}: max {array.max()}.")
  array = array.astype(np.int64, copy=False)
  minimum = array.min()
  if minimum < 0:
    raise ValueError(f"{name} has negative ids; minimum {minimum}.")
  return array


def check_same_shape(groundtruth: np.ndarray, prediction: np.ndarray,
                     gt_name: str = "groundtruth",
                     pred_name: str = "prediction") -> None:
  """Raises ValueError unless the two label batches have the same shape."""
  if groundtruth.shape != prediction.shape:
    raise ValueError(
        f"{gt_name} and {pred_name} must have the same shape; got "
        f"{groundtruth.shape} and {prediction.shape}.")


def check_panoptic_classes(panoptic: np.ndarray, num_classes: int,
                           ignored_label: int, label_divisor: int,
                           name: str) -> None:
  """Raises ValueError if a semantic id is neither a class nor ignored_label.

  Args:
    panoptic: int64 panoptic ids, any shape.
    num_classes: number of semantic classes (ids 0..num_classes-1).
    ignored_label: the void semantic id.
    label_divisor: panoptic id = semantic * label_divisor + instance.
    name: argument name used in error messages.
  """
  semantic = np.unique(panoptic // label_divisor)
  bad = semantic[(semantic >= num_classes) & (semantic != ignored_label)]
  if bad.size:
    raise ValueError(
        f"{name} has semantic class ids {bad[:10].tolist()} (panoptic id // "
        f"label_divisor={label_divisor}) outside [0, {num_classes}) that are "
        f"not ignored_label={ignored_label}.")


def check_label_args(num_classes: int, ignored_label: int,
                     label_divisor: Optional[int]) -> None:
  """Raises ValueError unless the label-encoding arguments are consistent."""
  if isinstance(num_classes, bool) or not isinstance(
      num_classes, (int, np.integer)) or num_classes < 1:
    raise ValueError(
        f"num_classes must be a positive int; got {num_classes!r}.")
  if isinstance(ignored_label, bool) or not isinstance(
      ignored_label, (int, np.integer)) or ignored_label < 0:
    raise ValueError(
        f"ignored_label must be a non-negative int; got {ignored_label!r}.")
  if ignored_label < num_classes:
    raise ValueError(
        f"ignored_label={ignored_label} must lie outside the train ids "
        f"[0, {num_classes}); train ids are contiguous and void is separate.")
  if label_divisor is not None and (
      isinstance(label_divisor, bool) or
      not isinstance(label_divisor, (int, np.integer)) or label_divisor < 1):
    raise ValueError(
        f"label_divisor must be a positive int; got {label_divisor!r}.")


def check_thing_classes(thing_classes: Iterable[int],
                        num_classes: int) -> np.ndarray:
  """Validates thing class ids and returns them as a sorted int64 array."""
  if isinstance(thing_classes, (str, bytes)) or not isinstance(
      thing_classes, collections.abc.Iterable):
    raise ValueError(
        f"thing_classes must be a sequence of ints; got {thing_classes!r}.")
  things = list(thing_classes)
  for c in things:
    if isinstance(c, (bool, np.bool_)) or not isinstance(c, (int, np.integer)):
      raise ValueError(f"thing_classes must hold ints; got {c!r}.")
    if not 0 <= c < num_classes:
      raise ValueError(
          f"thing_classes has class id {c} outside [0, {num_classes}).")
  things = [int(c) for c in things]
  if len(set(things)) != len(things):
    raise ValueError(f"thing_classes has duplicates: {things}.")
  return np.array(sorted(things), dtype=np.int64)


class PanopticQuality(mg_panoptic_quality.PanopticQuality):
  """Streaming panoptic quality over panoptic id maps.

  Usage: `update(gt, pred)` per image or batch, `result()` at the end,
  `reset()` to start over; `get_state()`/`merge_state()` combine metrics
  accumulated on different hosts, replicas or batches.
  """

  def __init__(self,
               num_classes: int,
               thing_classes: Sequence[int],
               ignored_label: int = 255,
               label_divisor: int = 256,
               offset: Optional[int] = None):
    """Creates the metric.

    Args:
      num_classes: number of semantic classes; train ids are 0..num_classes-1.
      thing_classes: train ids of the thing classes; the others are stuff.
      ignored_label: semantic id of void pixels; must not be a train id.
      label_divisor: panoptic id = semantic * label_divisor + instance.
      offset: multiplier that packs a (GT id, predicted id) pair into one
        int64 `gt * offset + pred`; must exceed every valid panoptic id.
        Default: `(max(num_classes - 1, ignored_label) + 1) * label_divisor`.

    Raises:
      ValueError: on an invalid argument.
    """
    check_label_args(num_classes, ignored_label, label_divisor)
    self.num_classes = int(num_classes)
    self.thing_classes = check_thing_classes(thing_classes, self.num_classes)
    self.label_divisor = int(label_divisor)
    max_semantic = max(self.num_classes - 1, int(ignored_label))
    max_panoptic_id = (max_semantic + 1) * self.label_divisor - 1
    if offset is None:
      offset = max_panoptic_id + 1
    if isinstance(offset, bool) or not isinstance(
        offset, (int, np.integer)) or offset <= max_panoptic_id:
      raise ValueError(
          f"offset must be an int above the largest valid panoptic id "
          f"{max_panoptic_id}; got {offset!r}.")
    if max_panoptic_id * int(offset) + max_panoptic_id > np.iinfo(
        np.int64).max:
      raise ValueError(
          f"offset={offset} overflows int64 for panoptic ids up to "
          f"{max_panoptic_id}.")
    self.is_thing = np.zeros(self.num_classes, dtype=bool)
    self.is_thing[self.thing_classes] = True
    # Lookup over every semantic id that may occur (train ids and void), so
    # that masks can be indexed without a branch for void.
    self._is_thing_lookup = np.zeros(max_semantic + 1, dtype=bool)
    self._is_thing_lookup[self.thing_classes] = True
    super().__init__(
        num_categories=self.num_classes,
        ignored_label=int(ignored_label),
        max_instances_per_category=self.label_divisor,
        offset=int(offset))

  def update(self, groundtruth: Any, prediction: Any) -> None:
    """Accumulates TP/FP/FN and matched IoU for one image or a batch.

    Args:
      groundtruth: GT panoptic ids, integer `[height, width]` or
        `[batch, height, width]` (numpy or eager tensor).
      prediction: predicted panoptic ids, same shape as `groundtruth`.

    Raises:
      ValueError: float maps, shape mismatch, empty maps, negative ids or
        semantic ids outside the classes and `ignored_label`.
    """
    gt = as_label_batch(groundtruth, "groundtruth")
    pred = as_label_batch(prediction, "prediction")
    check_same_shape(gt, pred)
    check_panoptic_classes(gt, self.num_classes, self.ignored_label,
                           self.label_divisor, "groundtruth")
    check_panoptic_classes(pred, self.num_classes, self.ignored_label,
                           self.label_divisor, "prediction")
    for gt_image, pred_image in zip(gt, pred):
      self._accumulate_image(gt_image.ravel(), pred_image.ravel())

  def compare_and_accumulate(self, groundtruths: Mapping[str, Any],
                             predictions: Mapping[str, Any]) -> None:
    """Model Garden entry point: category and instance masks, our rules.

    Args:
      groundtruths: dict with `category_mask` and `instance_mask`, integer
        `[height, width]` (or batched) arrays.
      predictions: dict with `category_mask` and `instance_mask`, same shape.
    """
    def combine(masks, name):
      category = as_label_batch(masks["category_mask"], f"{name}.category_mask")
      instance = as_label_batch(masks["instance_mask"], f"{name}.instance_mask")
      check_same_shape(category, instance, f"{name}.category_mask",
                       f"{name}.instance_mask")
      if instance.max() >= self.label_divisor:
        raise ValueError(
            f"{name}.instance_mask has ids up to {instance.max()}, which do "
            f"not fit below label_divisor={self.label_divisor}.")
      return category * self.label_divisor + instance

    self.update(combine(groundtruths, "groundtruths"),
                combine(predictions, "predictions"))

  def _accumulate_image(self, gt: np.ndarray, pred: np.ndarray) -> None:
    """Matches the segments of one image; `gt`, `pred` are flat int64."""
    div = self.label_divisor
    # Every non-empty (GT segment, predicted segment) overlap, in one sort.
    pair_ids, intersection = np.unique(gt * self.offset + pred,
                                       return_counts=True)
    pair_gt = pair_ids // self.offset
    pair_pred = pair_ids % self.offset
    gt_ids, pair_g = np.unique(pair_gt, return_inverse=True)
    pred_ids, pair_p = np.unique(pair_pred, return_inverse=True)
    gt_area = np.bincount(pair_g, weights=intersection).astype(np.int64)
    pred_area = np.bincount(pair_p, weights=intersection).astype(np.int64)

    gt_class = gt_ids // div
    pred_class = pred_ids // div
    gt_void = gt_class == self.ignored_label
    gt_crowd = (~gt_void & self._is_thing_lookup[gt_class] &
                (gt_ids % div == 0))
    pred_void = pred_class == self.ignored_label

    num_pred = pred_ids.size
    on_void = gt_void[pair_g]
    void_overlap = np.bincount(pair_p[on_void], weights=intersection[on_void],
                               minlength=num_pred).astype(np.int64)
    same_class = gt_class[pair_g] == pred_class[pair_p]
    on_own_crowd = gt_crowd[pair_g] & same_class
    crowd_overlap = np.bincount(
        pair_p[on_own_crowd], weights=intersection[on_own_crowd],
        minlength=num_pred).astype(np.int64)

    candidate = (same_class & ~on_void & ~gt_crowd[pair_g] &
                 ~pred_void[pair_p])
    cand_g = pair_g[candidate]
    cand_p = pair_p[candidate]
    cand_inter = intersection[candidate]
    union = (gt_area[cand_g] + pred_area[cand_p] - cand_inter -
             void_overlap[cand_p])
    # Integer form of IoU > 0.5, exact at the boundary.
    match = 2 * cand_inter > union
    match_g = cand_g[match]
    match_p = cand_p[match]
    match_iou = cand_inter[match] / union[match]

    n = self.num_classes
    match_class = gt_class[match_g]
    self.tp_per_class += np.bincount(match_class, minlength=n)
    self.iou_per_class += np.bincount(match_class, weights=match_iou,
                                      minlength=n)

    gt_matched = np.zeros(gt_ids.size, dtype=bool)
    gt_matched[match_g] = True
    missed = ~gt_void & ~gt_crowd & ~gt_matched
    self.fn_per_class += np.bincount(gt_class[missed], minlength=n)

    pred_matched = np.zeros(num_pred, dtype=bool)
    pred_matched[match_p] = True
    mostly_ignored = 2 * (void_overlap + crowd_overlap) > pred_area
    false_positive = ~pred_void & ~pred_matched & ~mostly_ignored
    self.fp_per_class += np.bincount(pred_class[false_positive], minlength=n)

  def get_state(self) -> Dict[str, np.ndarray]:
    """Returns the accumulated state (copies), `[num_classes]` arrays.

    Returns:
      dict with int64 `tp`, `fp`, `fn` and float64 `iou_sum` per class.
    """
    return {
        "tp": self.tp_per_class.astype(np.int64),
        "fp": self.fp_per_class.astype(np.int64),
        "fn": self.fn_per_class.astype(np.int64),
        "iou_sum": self.iou_per_class.astype(np.float64),
    }

  def merge_state(
      self, others: Union["PanopticQuality", Mapping[str, Any],
                          Sequence[Union["PanopticQuality",
                                         Mapping[str, Any]]]]
  ) -> None:
    """Adds the state of other metrics (or of `get_state()` dicts) to this one.

    Args:
      others: a `PanopticQuality`, a state dict from `get_state()`, or a
        sequence of these, for the same classes.

    Raises:
      ValueError: a state of the wrong size, a missing key, or negative counts.
      TypeError: an object that is neither a metric nor a state dict.
    """

    def mismatch(other):
      if (other.num_classes != self.num_classes or
          not np.array_equal(other.thing_classes, self.thing_classes)):
        return (f"has num_classes={other.num_classes}, thing_classes="
                f"{other.thing_classes.tolist()}; expected "
                f"{self.num_classes}, {self.thing_classes.tolist()}")
      return None

    states = []
    for i, other in enumerate(metric_states.states_to_merge(
        others, PanopticQuality, mismatch)):
      missing = [k for k in _STATE_KEYS if k not in other]
      if missing:
        raise ValueError(f"others[{i}] lacks state keys {missing}.")
      state = {k: np.asarray(other[k], dtype=np.float64) for k in _STATE_KEYS}
      for k, v in state.items():
        if v.shape != (self.num_classes,):
          raise ValueError(
              f"others[{i}][{k!r}] has shape {v.shape}; expected "
              f"({self.num_classes},).")
        if np.any(v < 0) or not np.all(np.isfinite(v)):
          raise ValueError(f"others[{i}][{k!r}] has negative or non-finite "
                           f"entries: {v.tolist()}.")
      states.append(state)
    for state in states:
      self.tp_per_class += state["tp"]
      self.fp_per_class += state["fp"]
      self.fn_per_class += state["fn"]
      self.iou_per_class += state["iou_sum"]

  def result(self) -> Dict[str, Any]:  # pytype: disable=signature-mismatch
    """Returns PQ/SQ/RQ overall, for things and stuff, and per class.

    Returns:
      dict with floats `pq, sq, rq, pq_th, sq_th, rq_th, pq_st, sq_st, rq_st`
      (NaN when no class of the subset was seen), ints `num_classes_valid`,
      `num_classes_valid_th`, `num_classes_valid_st`, float64 `[num_classes]`
      arrays `pq_per_class, sq_per_class, rq_per_class` (NaN for classes with
      TP + FP + FN = 0), int64 `[num_classes]` arrays `tp_per_class,
      fp_per_class, fn_per_class`, and float64 `iou_sum_per_class`.
    """
    # Model Garden divides before masking out zero denominators.
    with np.errstate(divide="ignore", invalid="ignore"):
      summary = super().result(is_thing=self.is_thing)
    seen = (self.tp_per_class + self.fp_per_class + self.fn_per_class) > 0
    out = {}
    for suffix, name in (("", "All"), ("_th", "Things"), ("_st", "Stuff")):
      count = int(summary[f"{name}_num_categories"])
      for metric in ("pq", "sq", "rq"):
        # Model Garden reports 0 for an empty subset; an average over no class
        # is undefined.
        out[f"{metric}{suffix}"] = (
            float(summary[f"{name}_{metric}"]) if count else float("nan"))
      out[f"num_classes_valid{suffix}"] = count
    for metric in ("pq", "sq", "rq"):
      out[f"{metric}_per_class"] = np.where(
          seen, summary[f"{metric}_per_class"], np.nan)
    out["tp_per_class"] = self.tp_per_class.astype(np.int64)
    out["fp_per_class"] = self.fp_per_class.astype(np.int64)
    out["fn_per_class"] = self.fn_per_class.astype(np.int64)
    out["iou_sum_per_class"] = self.iou_per_class.copy()
    return out
