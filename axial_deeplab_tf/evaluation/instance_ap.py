"""COCO mask AP of the thing segments of panoptic predictions (pycocotools).

The ground-truth (GT) and predicted panoptic id maps are cut into thing
segments: every id whose semantic class (`id // label_divisor`) is a thing
class. GT thing pixels with instance id 0 form the crowd region of their class
and become one `iscrowd=1` annotation per class and image; COCOeval then
ignores detections that fall on them instead of counting them as false
positives. Void pixels (semantic id `ignored_label`) and stuff pixels make no
annotation. Each predicted thing segment needs a score; Panoptic-DeepLab uses
mean semantic probability of the class over the mask times the center score.
AP is computed by `pycocotools.cocoeval.COCOeval` with `iouType="segm"` over
the default IoU thresholds 0.50:0.05:0.95 and area ranges, with category ids
equal to the train ids.
"""

import contextlib
import io
from typing import Any, Dict, List, Mapping, Sequence, Union

import numpy as np
from pycocotools import coco as coco_api
from pycocotools import cocoeval
from pycocotools import mask as mask_api

from axial_deeplab_tf.evaluation import metric_states
from axial_deeplab_tf.evaluation import panoptic_quality

# Names of COCOeval.stats entries, in order; "ar_max" is AR at max_detections.
_STAT_NAMES = ("ap", "ap50", "ap75", "ap_small", "ap_medium", "ap_large",
               "ar_1", "ar_10", "ar_max", "ar_small", "ar_medium", "ar_large")


def _encode_segments(panoptic: np.ndarray,
                     segment_ids: np.ndarray) -> List[Dict[str, Any]]:
  """COCO compressed RLEs of the masks of `segment_ids` in a `[H, W]` id map.

  COCO RLE counts alternate background/foreground run lengths over the
  column-major pixel order. One stable sort of the column-major ids gives the
  sorted pixel positions of every segment; the runs follow from the gaps, so
  no `[H, W]` mask is built per segment.
  """
  height, width = panoptic.shape
  total = height * width
  flat = panoptic.ravel(order="F")
  order = np.argsort(flat, kind="stable")
  sorted_ids = flat[order]
  begins = np.searchsorted(sorted_ids, segment_ids, side="left")
  ends = np.searchsorted(sorted_ids, segment_ids, side="right")
  rles = []
  for begin, end in zip(begins, ends):
    positions = order[begin:end]
    breaks = np.flatnonzero(np.diff(positions) != 1)
    run_starts = np.concatenate([positions[:1], positions[breaks + 1]])
    run_ends = np.concatenate([positions[breaks], positions[-1:]]) + 1
    previous_ends = np.concatenate([[0], run_ends[:-1]])
    counts = np.empty(2 * run_starts.size + 1, dtype=np.int64)
    counts[0:-1:2] = run_starts - previous_ends
    counts[1::2] = run_ends - run_starts
    counts[-1] = total - run_ends[-1]
    if counts[-1] == 0:
      counts = counts[:-1]
    rles.append(mask_api.frPyObjects(
        {"size": [height, width], "counts": counts.tolist()}, height, width))
  return rles


class InstanceAP:
  """Streaming COCO mask AP over thing segments of panoptic id maps."""

  def __init__(self,
               thing_classes: Sequence[int],
               num_classes: int,
               ignored_label: int = 255,
               label_divisor: int = 256,
               max_detections: int = 100):
    """Creates the metric.

    Args:
      thing_classes: train ids of the thing classes (the evaluated ones).
      num_classes: number of semantic classes; train ids are 0..num_classes-1.
      ignored_label: semantic id of void pixels; must not be a train id.
      label_divisor: panoptic id = semantic * label_divisor + instance.
      max_detections: most detections per image kept (highest scores), the
        last of COCOeval's `maxDets` = [1, 10, max_detections].

    Raises:
      ValueError: on an invalid argument.
    """
    panoptic_quality.check_label_args(num_classes, ignored_label,
                                      label_divisor)
    self.num_classes = int(num_classes)
    self.thing_classes = panoptic_quality.check_thing_classes(
        thing_classes, self.num_classes)
    if self.thing_classes.size == 0:
      raise ValueError("thing_classes is empty; instance AP needs things.")
    if (isinstance(max_detections, bool) or
        not isinstance(max_detections, (int, np.integer)) or
        max_detections < 10):
      raise ValueError(
          f"max_detections must be an int >= 10 (COCOeval also reports at 1 "
          f"and 10); got {max_detections!r}.")
    self.ignored_label = int(ignored_label)
    self.label_divisor = int(label_divisor)
    self.max_detections = int(max_detections)
    self.reset()

  def reset(self) -> None:
    """Forgets all images."""
    self._images: List[Dict[str, Any]] = []

  def _check_scores(self, scores: Any, pred_thing_ids: np.ndarray,
                    name: str) -> Dict[int, float]:
    if not isinstance(scores, Mapping):
      raise ValueError(
          f"{name} must be a dict {{panoptic_id: score}}; got "
          f"{type(scores).__name__}.")
    checked = {}
    for key, score in scores.items():
      if isinstance(key, (bool, np.bool_)) or not isinstance(
          key, (int, np.integer)):
        raise ValueError(f"{name} has a non-integer panoptic id {key!r}.")
      try:
        value = float(score)
      except (TypeError, ValueError) as e:
        raise ValueError(
            f"{name}[{key}] must be a number; got {score!r}.") from e
      if not np.isfinite(value):
        raise ValueError(f"{name}[{key}] is not finite: {score!r}.")
      checked[int(key)] = value
    present = set(pred_thing_ids.tolist())
    missing = sorted(present - set(checked))
    if missing:
      raise ValueError(
          f"{name} lacks scores for predicted thing segments {missing[:10]}.")
    extra = sorted(set(checked) - present)
    if extra:
      raise ValueError(
          f"{name} has scores for panoptic ids {extra[:10]} that are not "
          "thing segments of the prediction.")
    return checked

  def update(self, groundtruth: Any, prediction: Any,
             pred_instance_scores: Union[Mapping[int, float],
                                         Sequence[Mapping[int, float]]]
             ) -> None:
    """Adds one image or a batch.

    Args:
      groundtruth: GT panoptic ids, integer `[height, width]` or
        `[batch, height, width]`.
      prediction: predicted panoptic ids, same shape.
      pred_instance_scores: `{panoptic_id: score}` for every predicted thing
        segment of the image (exactly those ids), or a sequence of such dicts,
        one per batch element.

    Raises:
      ValueError: bad maps (float, shape mismatch, empty, ids out of range) or
        scores that do not cover exactly the predicted thing segments.
    """
    gt = panoptic_quality.as_label_batch(groundtruth, "groundtruth")
    pred = panoptic_quality.as_label_batch(prediction, "prediction")
    panoptic_quality.check_same_shape(gt, pred)
    for array, name in ((gt, "groundtruth"), (pred, "prediction")):
      panoptic_quality.check_panoptic_classes(
          array, self.num_classes, self.ignored_label, self.label_divisor,
          name)
    if isinstance(pred_instance_scores, Mapping):
      pred_instance_scores = [pred_instance_scores]
    if len(pred_instance_scores) != gt.shape[0]:
      raise ValueError(
          f"pred_instance_scores has {len(pred_instance_scores)} dicts for a "
          f"batch of {gt.shape[0]} images.")

    records = []
    for i, (gt_image, pred_image) in enumerate(zip(gt, pred)):
      gt_ids = np.unique(gt_image)
      gt_ids = gt_ids[np.isin(gt_ids // self.label_divisor,
                              self.thing_classes)]
      pred_ids = np.unique(pred_image)
      pred_ids = pred_ids[np.isin(pred_ids // self.label_divisor,
                                  self.thing_classes)]
      scores = self._check_scores(pred_instance_scores[i], pred_ids,
                                  f"pred_instance_scores[{i}]")
      gt_anns = []
      for segment_id, rle in zip(gt_ids, _encode_segments(gt_image, gt_ids)):
        gt_anns.append({
            "category_id": int(segment_id // self.label_divisor),
            "segmentation": rle,
            "area": float(mask_api.area(rle)),
            "bbox": mask_api.toBbox(rle).tolist(),
            "iscrowd": int(segment_id % self.label_divisor == 0),
        })
      dt_anns = []
      for segment_id, rle in zip(pred_ids,
                                 _encode_segments(pred_image, pred_ids)):
        dt_anns.append({
            "category_id": int(segment_id // self.label_divisor),
            "segmentation": rle,
            "area": float(mask_api.area(rle)),
            "bbox": mask_api.toBbox(rle).tolist(),
            "iscrowd": 0,
            "score": scores[int(segment_id)],
        })
      records.append({"height": int(gt_image.shape[0]),
                      "width": int(gt_image.shape[1]),
                      "gt": gt_anns, "dt": dt_anns})
    self._images.extend(records)

  def get_state(self) -> Dict[str, Any]:
    """Returns `{"images": [...]}`: per image its size and encoded segments."""
    return {"images": list(self._images)}

  def merge_state(
      self, others: Union["InstanceAP", Mapping[str, Any],
                          Sequence[Union["InstanceAP", Mapping[str, Any]]]]
  ) -> None:
    """Appends the images of other metrics or `get_state()` dicts.

    Args:
      others: an `InstanceAP`, a `get_state()` dict (picklable, for sending
        between hosts), or a sequence of these, for the same classes.

    Raises:
      ValueError: an `InstanceAP` configured for other classes.
      TypeError: an object that is neither an InstanceAP nor a state dict.
    """

    def mismatch(other):
      if (other.num_classes != self.num_classes or
          other.label_divisor != self.label_divisor or
          not np.array_equal(other.thing_classes, self.thing_classes)):
        return (f"has num_classes={other.num_classes}, label_divisor="
                f"{other.label_divisor}, thing_classes="
                f"{other.thing_classes.tolist()}; expected "
                f"{self.num_classes}, {self.label_divisor}, "
                f"{self.thing_classes.tolist()}")
      return None

    merged = []
    for other in metric_states.states_to_merge(others, InstanceAP, mismatch,
                                               required_key="images"):
      merged.extend(other["images"])
    self._images.extend(merged)

  def _coco_datasets(self):
    """Builds the GT and detection COCO objects (ids start at 1)."""
    images, gt_anns, dt_anns = [], [], []
    for image_id, record in enumerate(self._images, start=1):
      images.append({"id": image_id, "height": record["height"],
                     "width": record["width"]})
      # COCOeval marks "unmatched" with id 0, so annotation ids start at 1.
      for ann in record["gt"]:
        gt_anns.append(dict(ann, image_id=image_id, id=len(gt_anns) + 1))
      for ann in record["dt"]:
        dt_anns.append(dict(ann, image_id=image_id, id=len(dt_anns) + 1))
    categories = [{"id": int(c), "name": str(int(c))}
                  for c in self.thing_classes]
    datasets = []
    for anns in (gt_anns, dt_anns):
      coco = coco_api.COCO()
      coco.dataset = {"images": images, "categories": categories,
                      "annotations": anns}
      with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
      datasets.append(coco)
    return datasets

  def result(self) -> Dict[str, Any]:
    """Runs COCOeval and returns AP/AR numbers.

    Returns:
      dict with floats `ap, ap50, ap75, ap_small, ap_medium, ap_large, ar_1,
      ar_10, ar_max, ar_small, ar_medium, ar_large` (NaN where COCOeval has no
      GT to measure, e.g. no images yet) and float64 `ap_per_class`
      `[len(thing_classes)]`, in the order of sorted `thing_classes`.
    """
    nan_result = {name: float("nan") for name in _STAT_NAMES}
    nan_result["ap_per_class"] = np.full(self.thing_classes.size, np.nan)
    if not self._images:
      return nan_result
    coco_gt, coco_dt = self._coco_datasets()
    evaluator = cocoeval.COCOeval(coco_gt, coco_dt, iouType="segm")
    evaluator.params.maxDets = [1, 10, self.max_detections]
    evaluator.params.catIds = [int(c) for c in self.thing_classes]
    with contextlib.redirect_stdout(io.StringIO()):
      evaluator.evaluate()
      evaluator.accumulate()
      evaluator.summarize()
    # COCOeval writes -1 where a number is undefined (no GT in the subset).
    out = {name: (float(value) if value > -1 else float("nan"))
           for name, value in zip(_STAT_NAMES, evaluator.stats)}
    # precision: [iou_thresholds, recall_thresholds, classes, areas, max_dets].
    precision = evaluator.eval["precision"][:, :, :, 0, -1]
    per_class = np.full(self.thing_classes.size, np.nan)
    for k in range(self.thing_classes.size):
      values = precision[:, :, k]
      values = values[values > -1]
      if values.size:
        per_class[k] = values.mean()
    out["ap_per_class"] = per_class
    # COCOeval's stats[0] is hard-wired to maxDets=100; take AP over all IoU
    # thresholds at max_detections from the same precision table instead.
    valid = precision[precision > -1]
    out["ap"] = float(valid.mean()) if valid.size else float("nan")
    return out
