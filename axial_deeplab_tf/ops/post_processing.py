"""Panoptic-DeepLab post-processing in pure TensorFlow.

From the three predictions of the model (semantic scores, center heatmap,
center offsets) to a panoptic map (Cheng et al., Panoptic-DeepLab, CVPR
2020):
  1. semantic = argmax of the semantic scores;
  2. centers = heatmap pixels above `center_threshold` that are the maximum
     of their `nms_kernel` x `nms_kernel` window, best `keep_k_centers`;
  3. every pixel of a thing class joins the center nearest to
     (pixel + offset);
  4. each instance takes the majority class of its pixels and an id
     class * label_divisor + n, n counting the instances of a class from 1
     in order of decreasing center score; stuff classes covering fewer than
     `stuff_area_limit` pixels of an image, and thing pixels without any
     center, become void (ignore_label * label_divisor).

`deeplab2_rules=True` reproduces the panoptic maps of deeplab2's
Panoptic-DeepLab post-processing (the published checkpoints' evaluation):
centers must also be positive (deeplab2 zeroes the heatmap below the
threshold and keeps non-zero peaks); when more than `keep_k_centers`
centers pass, only those strictly above the last value of TensorFlow's
unsorted top-K of the suppressed heatmap stay, as deeplab2 does (that
value is one of the K best, not always the K-th: fewer than K remain); centers are
ordered by position (row-major), so a pixel equidistant to two centers
joins the earlier one and `instance_pred` numbers centers in that order;
the instances of a class are numbered in the row-major order of their
first pixel. Without it, exactly K centers are kept when more pass, ties
go to the higher score and instances are numbered by decreasing score.

Shapes are static in the number of centers (`keep_k_centers` slots, unused
slots masked), so it runs under tf.function with unknown batch, height and
width, under XLA (jit_compile=True), and inside a SavedModel.
"""

from typing import Dict, Mapping, Sequence

import tensorflow as tf

from axial_deeplab_tf.attention_math import check_keys
from axial_deeplab_tf.attention_math import check_odd_positive
from axial_deeplab_tf.attention_math import check_positive_int
from axial_deeplab_tf.data.targets import check_thing_class_ids
from axial_deeplab_tf.data.targets import is_thing_class

# Centers compared with the pixels per step when grouping: one step holds a
# [batch, height * width, chunk] distance tensor.
_GROUPING_CENTER_CHUNK = 16


class PanopticDeepLabPostProcessor:
  """Turns Panoptic-DeepLab outputs into panoptic, semantic, instance maps."""

  def __init__(self,
               thing_class_ids: Sequence[int],
               num_classes: int,
               label_divisor: int = 256,
               ignore_label: int = 255,
               center_threshold: float = 0.1,
               nms_kernel: int = 7,
               keep_k_centers: int = 200,
               stuff_area_limit: int = 4096,
               deeplab2_rules: bool = False):
    """Initializes the post-processor.

    Args:
      thing_class_ids: semantic ids of the thing classes, each < num_classes.
      num_classes: number of semantic classes (channels of the semantic
        prediction).
      label_divisor: panoptic = class * label_divisor + instance.
      ignore_label: class id of void; void pixels get
        ignore_label * label_divisor.
      center_threshold: heatmap values must exceed this to be a center.
      nms_kernel: odd window size of the max-pool non-maximum suppression.
      keep_k_centers: number of center slots per image (the top-K scores).
      stuff_area_limit: stuff classes with fewer pixels than this in an image
        become void.
      deeplab2_rules: reproduce deeplab2's center selection, tie breaking
        and instance numbering (module docstring).

    Raises:
      ValueError: on an invalid argument.
    """
    check_positive_int("num_classes", num_classes)
    self.thing_class_ids = check_thing_class_ids(thing_class_ids, ignore_label)
    if max(self.thing_class_ids) >= num_classes:
      raise ValueError(f"thing_class_ids must be < num_classes={num_classes}, "
                       f"got {list(self.thing_class_ids)}.")
    if not isinstance(label_divisor, int) or label_divisor < 2:
      raise ValueError(f"label_divisor must be an int >= 2, got "
                       f"{label_divisor!r}.")
    check_odd_positive("nms_kernel", nms_kernel)
    check_positive_int("keep_k_centers", keep_k_centers)
    if keep_k_centers >= label_divisor:
      # A class could then get an instance number that spills into the next
      # class id.
      raise ValueError(f"keep_k_centers={keep_k_centers} must be smaller than "
                       f"label_divisor={label_divisor}.")
    if not isinstance(stuff_area_limit, int) or stuff_area_limit < 0:
      raise ValueError(f"stuff_area_limit must be a non-negative int, got "
                       f"{stuff_area_limit!r}.")
    if not isinstance(ignore_label, int) or ignore_label < 0:
      raise ValueError(f"ignore_label must be a non-negative int, got "
                       f"{ignore_label!r}.")
    if (ignore_label + 1) * label_divisor > 2**31 - 1 or (
        num_classes * label_divisor > 2**31 - 1):
      raise ValueError(f"Panoptic ids overflow int32 with label_divisor="
                       f"{label_divisor}, num_classes={num_classes}, "
                       f"ignore_label={ignore_label}.")
    self.num_classes = num_classes
    self.label_divisor = label_divisor
    self.ignore_label = ignore_label
    self.center_threshold = float(center_threshold)
    self.nms_kernel = nms_kernel
    self.keep_k_centers = keep_k_centers
    self.stuff_area_limit = stuff_area_limit
    if not isinstance(deeplab2_rules, bool):
      raise TypeError(f"deeplab2_rules must be a bool, got "
                      f"{deeplab2_rules!r}.")
    self.deeplab2_rules = deeplab2_rules

  def get_config(self) -> Dict[str, object]:
    return {
        "thing_class_ids": list(self.thing_class_ids),
        "num_classes": self.num_classes,
        "label_divisor": self.label_divisor,
        "ignore_label": self.ignore_label,
        "center_threshold": self.center_threshold,
        "nms_kernel": self.nms_kernel,
        "keep_k_centers": self.keep_k_centers,
        "stuff_area_limit": self.stuff_area_limit,
        "deeplab2_rules": self.deeplab2_rules,
    }

  def _check_outputs(self, outputs: Mapping[str, tf.Tensor]):
    """Validates the output dict; returns (semantic, heatmap, offsets)."""
    if not isinstance(outputs, Mapping):
      raise ValueError(f"outputs must be a dict of tensors, got "
                       f"{type(outputs).__name__}.")
    if "semantic_probs" in outputs:
      semantic_key = "semantic_probs"
    elif "semantic_logits" in outputs:
      semantic_key = "semantic_logits"
    else:
      raise ValueError(f"outputs needs 'semantic_probs' or 'semantic_logits', "
                       f"got keys {sorted(outputs)}.")
    check_keys("outputs", outputs, ("center_heatmap", "offset_map"))
    expected = {semantic_key: self.num_classes, "center_heatmap": 1,
                "offset_map": 2}
    tensors = {}
    for key, channels in expected.items():
      tensor = tf.convert_to_tensor(outputs[key])
      if not tensor.dtype.is_floating:
        raise ValueError(f"outputs[{key!r}] must be a float tensor, got dtype "
                         f"{tensor.dtype.name}.")
      if tensor.shape.rank != 4:
        raise ValueError(f"outputs[{key!r}] must be [batch, height, width, "
                         f"{channels}], got shape {tensor.shape}.")
      if tensor.shape[-1] is not None and tensor.shape[-1] != channels:
        raise ValueError(f"outputs[{key!r}] must have {channels} channels, got"
                         f" shape {tensor.shape}.")
      tensors[key] = tf.cast(tensor, tf.float32)
    shapes = [t.shape[:3] for t in tensors.values()]
    for shape in shapes[1:]:
      if not shape.is_compatible_with(shapes[0]):
        raise ValueError(f"outputs must share [batch, height, width], got "
                         f"{ {k: t.shape for k, t in tensors.items()} }.")
    return (tensors[semantic_key], tensors["center_heatmap"],
            tensors["offset_map"], semantic_key == "semantic_probs")

  def __call__(self, outputs: Mapping[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
    """Post-processes a batch.

    Args:
      outputs: dict with `semantic_probs` or `semantic_logits` [batch, height,
        width, num_classes], `center_heatmap` [batch, height, width, 1] and
        `offset_map` [batch, height, width, 2] ((dy, dx) = center - pixel).

    Returns:
      A dict:
        panoptic_pred: int32 [batch, height, width].
        semantic_pred: int32 [batch, height, width], argmax class.
        instance_pred: int32 [batch, height, width], 1 + the slot of the
          center a thing pixel was grouped with, 0 elsewhere.
        instance_scores: float32 [batch, K], heatmap value of each center
          slot, 0 for empty slots.
        instance_centers: int32 [batch, K, 2], (y, x) of each center slot, -1
          for empty slots.
        instance_panoptic_ids: int32 [batch, K], panoptic id given to the
          pixels of each slot, -1 for slots without pixels.
        instance_class_scores: float32 [batch, K], mean semantic probability
          of the slot's class over its pixels, 0 for slots without pixels.
          (A mask-AP score is instance_scores * instance_class_scores.)

    Raises:
      ValueError: on missing keys, wrong ranks, channels or dtypes.
    """
    semantic_scores, heatmap, offsets, are_probs = self._check_outputs(
        outputs)
    shape = tf.shape(heatmap)
    batch, height, width = shape[0], shape[1], shape[2]
    k = self.keep_k_centers

    semantic = tf.argmax(semantic_scores, axis=-1, output_type=tf.int32)

    # Centers: threshold, max-pool NMS, top-K into K fixed slots.
    heat = heatmap[..., 0]
    # A square max-pool equals a column pass then a row pass, at 2k instead
    # of k*k comparisons per pixel.
    pooled = tf.nn.max_pool2d(heatmap, ksize=[self.nms_kernel, 1], strides=1,
                              padding="SAME")
    pooled = tf.nn.max_pool2d(pooled, ksize=[1, self.nms_kernel], strides=1,
                              padding="SAME")[..., 0]
    threshold = self.center_threshold
    if self.deeplab2_rules:  # deeplab2 keeps positive peaks only.
      threshold = max(threshold, 0.0)
    is_peak = tf.logical_and(tf.equal(heat, pooled), heat > threshold)
    neg_inf = tf.constant(float("-inf"), tf.float32)
    candidates = tf.reshape(tf.where(is_peak, heat, neg_inf), [batch, -1])
    # Images with fewer than K pixels still fill K slots.
    candidates = tf.concat([candidates, tf.fill([batch, k], neg_inf)], axis=1)
    scores, flat_index = tf.math.top_k(candidates, k=k, sorted=True)
    valid = scores > neg_inf
    if self.deeplab2_rules:
      scores, flat_index, valid = self._deeplab2_centers(
          is_peak, heat, scores, flat_index, valid)
    center_y = tf.math.floordiv(flat_index, width)
    center_x = tf.math.floormod(flat_index, width)
    centers = tf.stack([center_y, center_x], axis=-1)

    # Grouping: every pixel to the nearest center of (pixel + offset).
    ys = tf.cast(tf.range(height)[:, tf.newaxis], tf.float32)
    xs = tf.cast(tf.range(width)[tf.newaxis, :], tf.float32)
    target_y = tf.reshape(ys + offsets[..., 0], [batch, -1])
    target_x = tf.reshape(xs + offsets[..., 1], [batch, -1])
    slot, has_center = self._nearest_center(
        target_y, target_x, tf.cast(center_y, tf.float32),
        tf.cast(center_x, tf.float32), valid)

    flat_semantic = tf.reshape(semantic, [batch, -1])
    is_thing = is_thing_class(flat_semantic, self.thing_class_ids)
    in_instance = tf.logical_and(is_thing, has_center)
    # Slot k collects every pixel outside instances.
    pixel_slot = tf.where(in_instance, slot, k)

    # Majority vote of the class of each slot from per-(slot, class) counts.
    batch_index = tf.range(batch)[:, tf.newaxis]
    nc = self.num_classes
    votes = tf.math.unsorted_segment_sum(
        tf.ones_like(flat_semantic),
        (batch_index * (k + 1) + pixel_slot) * nc + flat_semantic,
        batch * (k + 1) * nc)
    votes = tf.reshape(votes, [batch, k + 1, nc])[:, :k]
    slot_class = tf.argmax(votes, axis=-1, output_type=tf.int32)
    slot_used = tf.reduce_sum(votes, axis=-1) > 0
    # Per-class running count over slots in score order gives 1, 2, ... .
    class_one_hot = tf.one_hot(slot_class, nc, dtype=tf.int32) * tf.cast(
        slot_used, tf.int32)[..., tf.newaxis]
    if self.deeplab2_rules:
      slot_number = self._first_pixel_numbers(pixel_slot, slot_class,
                                              slot_used)
    else:
      slot_number = tf.reduce_sum(
          tf.cumsum(class_one_hot, axis=1) * class_one_hot, axis=-1)
    void_id = self.ignore_label * self.label_divisor
    slot_panoptic = tf.where(slot_used,
                             slot_class * self.label_divisor + slot_number,
                             void_id)
    slot_panoptic = tf.concat(
        [slot_panoptic, tf.fill([batch, 1], void_id)], axis=1)
    thing_panoptic = tf.gather(slot_panoptic, pixel_slot, batch_dims=1)

    # Mean probability of each instance's class over its pixels (the
    # semantic half of the instance score used for mask AP).
    pixel_class = tf.gather(
        tf.concat([slot_class, tf.zeros([batch, 1], tf.int32)], axis=1),
        pixel_slot, batch_dims=1)
    flat_scores = tf.reshape(semantic_scores, [batch, -1, nc])
    picked = tf.gather(flat_scores, pixel_class, batch_dims=2)
    if not are_probs:
      picked = tf.exp(picked - tf.reduce_logsumexp(flat_scores, axis=-1))
    prob_sum = tf.math.unsorted_segment_sum(
        tf.where(in_instance, picked, 0.0),
        batch_index * (k + 1) + pixel_slot, batch * (k + 1))
    prob_sum = tf.reshape(prob_sum, [batch, k + 1])[:, :k]
    class_scores = tf.math.divide_no_nan(
        prob_sum, tf.cast(tf.reduce_sum(votes, axis=-1), tf.float32))

    # Stuff: whole-class segments, void when too small.
    is_stuff = tf.logical_not(is_thing)
    stuff_area = tf.math.unsorted_segment_sum(
        tf.cast(is_stuff, tf.int32), batch_index * nc + flat_semantic,
        batch * nc)
    stuff_area = tf.reshape(stuff_area, [batch, nc])
    pixel_stuff_area = tf.gather(stuff_area, flat_semantic, batch_dims=1)
    stuff_panoptic = tf.where(pixel_stuff_area >= self.stuff_area_limit,
                              flat_semantic * self.label_divisor, void_id)

    panoptic = tf.where(is_thing, thing_panoptic, stuff_panoptic)
    instance = tf.where(in_instance, slot + 1, 0)
    image_shape = tf.stack([batch, height, width])
    return {
        "panoptic_pred": tf.reshape(panoptic, image_shape),
        "semantic_pred": semantic,
        "instance_pred": tf.reshape(instance, image_shape),
        "instance_scores": tf.where(valid, scores, 0.0),
        "instance_panoptic_ids": tf.where(slot_used, slot_panoptic[:, :k], -1),
        "instance_class_scores": class_scores,
        "instance_centers": tf.where(valid[..., tf.newaxis], centers, -1),
    }

  def _deeplab2_centers(self, is_peak, heat, scores, flat_index, valid):
    """deeplab2's top-K rule, then the slots in row-major center order."""
    k = self.keep_k_centers
    num_peaks = tf.reduce_sum(tf.cast(is_peak, tf.int32), axis=[1, 2])
    suppressed = tf.reshape(tf.where(is_peak, heat, 0.0),
                            [tf.shape(heat)[0], -1])
    # deeplab2 keeps the centers above the last entry of an unsorted top-K.
    last = tf.math.top_k(suppressed, k=tf.minimum(k, tf.shape(suppressed)[1]),
                         sorted=False).values[:, -1:]
    over = tf.logical_and((num_peaks > k)[:, tf.newaxis], scores <= last)
    valid = tf.logical_and(valid, tf.logical_not(over))
    big = tf.int32.max
    order = tf.argsort(tf.where(valid, flat_index, big), axis=1,
                       stable=True)
    return (tf.gather(scores, order, batch_dims=1),
            tf.gather(flat_index, order, batch_dims=1),
            tf.gather(valid, order, batch_dims=1))

  def _first_pixel_numbers(self, pixel_slot, slot_class, slot_used):
    """Instance numbers per class in the row-major order of first pixels."""
    k = self.keep_k_centers
    batch = tf.shape(pixel_slot)[0]
    num_pixels = tf.shape(pixel_slot)[1]
    batch_index = tf.range(batch)[:, tf.newaxis]
    position = tf.broadcast_to(tf.range(num_pixels)[tf.newaxis],
                               tf.shape(pixel_slot))
    first = tf.math.unsorted_segment_min(
        position, batch_index * (k + 1) + pixel_slot, batch * (k + 1))
    first = tf.reshape(first, [batch, k + 1])[:, :k]
    same_class = tf.equal(slot_class[:, :, tf.newaxis],
                          slot_class[:, tf.newaxis, :])
    earlier = first[:, tf.newaxis, :] <= first[:, :, tf.newaxis]
    counted = tf.logical_and(tf.logical_and(same_class, earlier),
                             slot_used[:, tf.newaxis, :])
    numbers = tf.reduce_sum(tf.cast(counted, tf.int32), axis=-1)
    return numbers * tf.cast(slot_used, tf.int32)

  def _nearest_center(self, target_y, target_x, center_y, center_x, valid):
    """Index of the nearest valid center of each pixel target.

    Args:
      target_y, target_x: float32 [batch, num_pixels], pixel + offset.
      center_y, center_x: float32 [batch, K].
      valid: bool [batch, K].

    Returns:
      (slot int32 [batch, num_pixels], has_center bool [batch, num_pixels]);
      ties go to the lower slot, i.e. the higher score.
    """
    k = self.keep_k_centers
    chunk = min(_GROUPING_CENTER_CHUNK, k)
    num_chunks = -(-k // chunk)
    pad = num_chunks * chunk - k
    batch = tf.shape(target_y)[0]

    def chunked(t, value):
      t = tf.pad(t, [[0, 0], [0, pad]], constant_values=value)
      return tf.transpose(tf.reshape(t, [batch, num_chunks, chunk]), [1, 0, 2])

    cy = chunked(center_y, 0.0)
    cx = chunked(center_x, 0.0)
    ok = chunked(valid, False)
    inf = tf.constant(float("inf"), tf.float32)

    def body(i, best_dist, best_slot):
      sq_dist = (tf.square(target_y[..., tf.newaxis] - cy[i][:, tf.newaxis]) +
                 tf.square(target_x[..., tf.newaxis] - cx[i][:, tf.newaxis]))
      sq_dist = tf.where(ok[i][:, tf.newaxis], sq_dist, inf)
      arg = tf.argmin(sq_dist, axis=-1, output_type=tf.int32)
      chunk_dist = tf.gather(sq_dist, arg, batch_dims=2)
      better = chunk_dist < best_dist
      return (i + 1, tf.where(better, chunk_dist, best_dist),
              tf.where(better, arg + i * chunk, best_slot))

    # Valid slots come first (scores are sorted), so chunks past the largest
    # number of centers of any image hold nothing and are skipped.
    num_valid = tf.reduce_max(tf.concat(
        [[0], tf.reduce_sum(tf.cast(valid, tf.int32), axis=1)], axis=0))
    needed_chunks = tf.minimum((num_valid + chunk - 1) // chunk, num_chunks)
    init_dist = tf.fill(tf.shape(target_y), inf)
    _, best_dist, best_slot = tf.while_loop(
        lambda i, *_: i < needed_chunks, body,
        (tf.constant(0), init_dist, tf.zeros_like(target_y, tf.int32)),
        parallel_iterations=1)
    # A NaN offset never compares below inf and leaves the pixel unassigned.
    return best_slot, best_dist < inf
