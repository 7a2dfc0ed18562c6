"""Panoptic-DeepLab training targets from a panoptic label map.

The label convention is panoptic = semantic * label_divisor + instance_id.
Stuff pixels have instance 0; a pixel of a thing class with instance 0 is
crowd; a pixel whose semantic id equals `ignore_label` is void.

Targets (Cheng et al., Panoptic-DeepLab, CVPR 2020):
  * semantic label, with per-pixel loss weights that up-weight small
    instances;
  * center heatmap: a 2D Gaussian (sigma 8) of peak 1 at the rounded mean
    (y, x) of every non-crowd thing instance, merged across instances by max;
  * offset map: (center - pixel) as (dy, dx) on the pixels of those
    instances;
  * loss weight maps for the center and offset regressions.

Everything is pure TensorFlow on dynamic shapes, for use inside tf.data.
"""

import numbers
from typing import Dict, Sequence

import tensorflow as tf

from axial_deeplab_tf.attention_math import check_positive_int

# Centers handled per step when building the heatmap: the work of one step is
# a [chunk, height, width] distance tensor, so memory stays bounded however
# many instances an image has.
_HEATMAP_CENTER_CHUNK = 8


def check_thing_class_ids(thing_class_ids: Sequence[int],
                          ignore_label: int) -> tuple:
  """Validates `thing_class_ids` and returns them as a sorted tuple of ints.

  Args:
    thing_class_ids: semantic ids of the countable ("thing") classes.
    ignore_label: the void label, which must not be a thing class.

  Returns:
    A sorted tuple of distinct non-negative Python ints.

  Raises:
    ValueError: if the ids are empty, not integers, negative, repeated or
      contain `ignore_label`.
  """
  try:
    ids = list(thing_class_ids)
  except TypeError as e:
    raise ValueError(f"thing_class_ids must be a sequence of ints, got "
                     f"{thing_class_ids!r}.") from e
  if not ids:
    raise ValueError("thing_class_ids must not be empty.")
  for i in ids:
    if isinstance(i, bool) or not isinstance(i, numbers.Integral):
      raise ValueError(f"thing_class_ids must hold ints, got {i!r} in "
                       f"{thing_class_ids!r}.")
  ids = [int(i) for i in ids]
  if min(ids) < 0:
    raise ValueError(f"thing_class_ids must be non-negative, got {ids}.")
  if len(set(ids)) != len(ids):
    raise ValueError(f"thing_class_ids must be distinct, got {ids}.")
  if ignore_label in ids:
    raise ValueError(f"ignore_label {ignore_label} must not be a thing class "
                     f"(thing_class_ids={ids}).")
  return tuple(sorted(ids))


def is_thing_class(semantic: tf.Tensor, thing_class_ids: Sequence[int]):
  """Whether each semantic id is a thing class, by table lookup.

  Args:
    semantic: int32 tensor of any shape holding non-negative semantic ids.
    thing_class_ids: validated thing class ids (non-negative ints).

  Returns:
    A bool tensor of the shape of `semantic`.
  """
  max_id = max(thing_class_ids)
  table = [False] * (max_id + 1)
  for i in thing_class_ids:
    table[i] = True
  table = tf.constant(table, dtype=tf.bool)
  # A lookup costs one gather per pixel instead of a [..., num_things]
  # comparison; ids beyond the table are not things.
  in_table = tf.logical_and(semantic >= 0, semantic <= max_id)
  looked_up = tf.gather(table, tf.clip_by_value(semantic, 0, max_id))
  return tf.logical_and(in_table, looked_up)


class PanopticTargetGenerator:
  """Builds Panoptic-DeepLab targets from one [height, width] panoptic label.

  Attributes are the constructor arguments. The object is a plain callable,
  usable in `tf.data.Dataset.map`.
  """

  def __init__(self,
               thing_class_ids: Sequence[int],
               ignore_label: int = 255,
               label_divisor: int = 256,
               sigma: float = 8.0,
               small_instance_area: int = 4096,
               small_instance_weight: float = 3.0,
               ignore_crowd_in_semantic: bool = False):
    """Initializes the generator.

    Args:
      thing_class_ids: semantic ids of the thing classes.
      ignore_label: semantic id of void pixels.
      label_divisor: panoptic = semantic * label_divisor + instance.
      sigma: standard deviation, in pixels, of the center Gaussian.
      small_instance_area: instances with fewer pixels than this get
        `small_instance_weight` in the semantic loss.
      small_instance_weight: semantic loss weight of small-instance pixels.
      ignore_crowd_in_semantic: if True, crowd pixels get `ignore_label` in
        the semantic target (and weight 0); otherwise they keep their class.

    Raises:
      ValueError: on an invalid argument.
    """
    check_positive_int("label_divisor", label_divisor)
    if not isinstance(ignore_label, int) or ignore_label < 0:
      raise ValueError(f"ignore_label must be a non-negative int, got "
                       f"{ignore_label!r}.")
    if not sigma > 0:
      raise ValueError(f"sigma must be > 0, got {sigma!r}.")
    if not isinstance(small_instance_area, int) or small_instance_area < 0:
      raise ValueError(f"small_instance_area must be a non-negative int, got "
                       f"{small_instance_area!r}.")
    if not small_instance_weight >= 0:
      raise ValueError(f"small_instance_weight must be >= 0, got "
                       f"{small_instance_weight!r}.")
    self.thing_class_ids = check_thing_class_ids(thing_class_ids, ignore_label)
    self.ignore_label = ignore_label
    self.label_divisor = label_divisor
    self.sigma = float(sigma)
    self.small_instance_area = small_instance_area
    self.small_instance_weight = float(small_instance_weight)
    self.ignore_crowd_in_semantic = bool(ignore_crowd_in_semantic)

  def get_config(self) -> Dict[str, object]:
    return {
        "thing_class_ids": list(self.thing_class_ids),
        "ignore_label": self.ignore_label,
        "label_divisor": self.label_divisor,
        "sigma": self.sigma,
        "small_instance_area": self.small_instance_area,
        "small_instance_weight": self.small_instance_weight,
        "ignore_crowd_in_semantic": self.ignore_crowd_in_semantic,
    }

  def _check_label(self, panoptic_label) -> tf.Tensor:
    """Validates the label and returns it as an int32 [height, width]."""
    label = tf.convert_to_tensor(panoptic_label)
    if not (label.dtype.is_integer and label.dtype != tf.uint64):
      raise ValueError(f"panoptic_label must be an integer tensor (int32, "
                       f"int64, uint8, uint16, ...), got dtype "
                       f"{label.dtype.name}.")
    rank = label.shape.rank
    if rank is None:
      raise ValueError("panoptic_label must have a known rank (2: [height, "
                       "width] or 3: [height, width, 1]), got unknown rank.")
    if rank == 3:
      if label.shape[-1] is not None and label.shape[-1] != 1:
        raise ValueError(f"panoptic_label of rank 3 must be [height, width, 1],"
                         f" got shape {label.shape}.")
      label = tf.squeeze(label, axis=-1)
    elif rank != 2:
      raise ValueError(f"panoptic_label must be [height, width] or [height, "
                       f"width, 1], got shape {label.shape}.")
    wide = label.dtype in (tf.int64, tf.uint32)
    if tf.executing_eagerly():
      if int(tf.size(label)) > 0:
        minimum = int(tf.reduce_min(label))
        maximum = int(tf.reduce_max(label))
        if minimum < 0:
          raise ValueError(f"panoptic_label must be non-negative, got minimum "
                           f"{minimum}.")
        if maximum > 2**31 - 1:
          raise ValueError(f"panoptic_label ids must fit in int32, got maximum "
                           f"{maximum}.")
      return tf.cast(label, tf.int32)
    # Values are only known at run time in a graph: fail there, loudly.
    checks = [tf.debugging.assert_non_negative(
        label, message="panoptic_label must be non-negative")]
    if wide:
      checks.append(tf.debugging.assert_less_equal(
          label, tf.cast(2**31 - 1, label.dtype),
          message="panoptic_label ids must fit in int32"))
    with tf.control_dependencies(checks):
      label = tf.cast(label, tf.int32)
    return label

  def __call__(self, panoptic_label) -> Dict[str, tf.Tensor]:
    """Computes the targets of one label map.

    Args:
      panoptic_label: integer tensor [height, width] or [height, width, 1] of
        panoptic ids, non-negative.

    Returns:
      A dict of tensors:
        semantic: int32 [height, width], the semantic id (ignore_label on void,
          and on crowd if `ignore_crowd_in_semantic`).
        center_heatmap: float32 [height, width, 1].
        offset: float32 [height, width, 2], (dy, dx) = center - pixel on
          non-crowd thing pixels, 0 elsewhere.
        semantic_weights: float32 [height, width]: 1, `small_instance_weight`
          on pixels of instances smaller than `small_instance_area`, 0 where
          the semantic target is ignore_label.
        center_weights: float32 [height, width]: 1 on pixels that are neither
          void nor crowd.
        offset_weights: float32 [height, width]: 1 on non-crowd thing pixels.

    Raises:
      ValueError: if the label is not an integer tensor of rank 2 (or rank 3
        with one channel), or (eagerly) holds negative ids.
    """
    label = self._check_label(panoptic_label)
    shape = tf.shape(label)
    height, width = shape[0], shape[1]

    semantic = tf.math.floordiv(label, self.label_divisor)
    instance = tf.math.floormod(label, self.label_divisor)
    is_void = tf.equal(semantic, self.ignore_label)
    is_thing = is_thing_class(semantic, self.thing_class_ids)
    is_crowd = tf.logical_and(is_thing, tf.equal(instance, 0))
    is_instance = tf.logical_and(is_thing, instance > 0)

    # Segment every pixel by its instance; all non-instance pixels share the
    # key -1, whose segment is never used as a center.
    flat_key = tf.reshape(tf.where(is_instance, label, -1), [-1])
    segment_keys, segment_of_pixel = tf.unique(flat_key, out_idx=tf.int32)
    num_segments = tf.shape(segment_keys)[0]
    y_grid, x_grid = tf.meshgrid(tf.range(height, dtype=tf.int64),
                                 tf.range(width, dtype=tf.int64),
                                 indexing="ij")
    # Integer sums, then a float64 division: the mean is exact enough that
    # rounding half to even matches an exact computation.
    area = tf.math.unsorted_segment_sum(
        tf.ones_like(flat_key, dtype=tf.int64), segment_of_pixel, num_segments)
    sum_y = tf.math.unsorted_segment_sum(
        tf.reshape(y_grid, [-1]), segment_of_pixel, num_segments)
    sum_x = tf.math.unsorted_segment_sum(
        tf.reshape(x_grid, [-1]), segment_of_pixel, num_segments)
    area_f = tf.cast(tf.maximum(area, 1), tf.float64)
    center_y = tf.cast(tf.round(tf.cast(sum_y, tf.float64) / area_f), tf.int32)
    center_x = tf.cast(tf.round(tf.cast(sum_x, tf.float64) / area_f), tf.int32)
    is_center = segment_keys >= 0

    pixel_center_y = tf.reshape(tf.gather(center_y, segment_of_pixel),
                                [height, width])
    pixel_center_x = tf.reshape(tf.gather(center_x, segment_of_pixel),
                                [height, width])
    pixel_area = tf.reshape(tf.gather(area, segment_of_pixel), [height, width])
    offset_y = tf.where(is_instance,
                        pixel_center_y - tf.cast(y_grid, tf.int32), 0)
    offset_x = tf.where(is_instance,
                        pixel_center_x - tf.cast(x_grid, tf.int32), 0)
    offset = tf.cast(tf.stack([offset_y, offset_x], axis=-1), tf.float32)

    heatmap = self._center_heatmap(center_y, center_x, is_center, height,
                                   width)

    if self.ignore_crowd_in_semantic:
      semantic_ignored = tf.logical_or(is_void, is_crowd)
      semantic = tf.where(is_crowd, self.ignore_label, semantic)
    else:
      semantic_ignored = is_void
    is_small = tf.logical_and(
        is_instance, pixel_area < tf.constant(self.small_instance_area,
                                              tf.int64))
    semantic_weights = tf.where(
        semantic_ignored, 0.0,
        tf.where(is_small, self.small_instance_weight, 1.0))
    center_weights = tf.cast(
        tf.logical_not(tf.logical_or(is_void, is_crowd)), tf.float32)
    offset_weights = tf.cast(is_instance, tf.float32)

    return {
        "semantic": semantic,
        "center_heatmap": heatmap[..., tf.newaxis],
        "offset": offset,
        "semantic_weights": tf.cast(semantic_weights, tf.float32),
        "center_weights": center_weights,
        "offset_weights": offset_weights,
    }

  def _center_heatmap(self, center_y, center_x, is_center, height, width):
    """Max-merged Gaussians of the given centers, as [height, width] float32.

    The max of Gaussians of equal sigma is the Gaussian of the squared
    distance to the nearest center, so only a running minimum of squared
    distances is kept, a chunk of centers at a time.
    """
    chunk = _HEATMAP_CENTER_CHUNK
    num = tf.shape(center_y)[0]
    num_chunks = (num + chunk - 1) // chunk
    pad = num_chunks * chunk - num
    inf = tf.constant(float("inf"), tf.float32)
    # Non-centers and padding sit at infinity: their distance is inf.
    cy = tf.where(is_center, tf.cast(center_y, tf.float32), inf)
    cx = tf.where(is_center, tf.cast(center_x, tf.float32), inf)
    cy = tf.reshape(tf.pad(cy, [[0, pad]], constant_values=inf),
                    [num_chunks, chunk, 1, 1])
    cx = tf.reshape(tf.pad(cx, [[0, pad]], constant_values=inf),
                    [num_chunks, chunk, 1, 1])
    ys = tf.reshape(tf.range(height, dtype=tf.float32), [1, -1, 1])
    xs = tf.reshape(tf.range(width, dtype=tf.float32), [1, 1, -1])

    def body(i, min_sq_dist):
      # Squared integer distances stay exact in float32 below 2**24.
      sq_dist = tf.square(ys - cy[i]) + tf.square(xs - cx[i])
      return i + 1, tf.minimum(min_sq_dist, tf.reduce_min(sq_dist, axis=0))

    _, min_sq_dist = tf.while_loop(
        lambda i, _: i < num_chunks, body,
        (tf.constant(0), tf.fill([height, width], inf)),
        parallel_iterations=1)
    return tf.exp(-min_sq_dist / (2.0 * self.sigma * self.sigma))
