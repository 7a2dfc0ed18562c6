"""Input pipeline: TFRecord decoder, parsers and the dataset builder.

Follows Model Garden's `official.vision.dataloaders` pattern: a `Decoder`
turns a serialized tf.train.Example (schema in tfrecord_schema.py) into
tensors, a `Parser` augments them and builds the model's labels, and
`official.core.input_reader.InputReader` reads, shards, shuffles, batches and
prefetches. `build_dataset` wires the three together and works under
tf.distribute through `input_context`.

Augmentation (training), as in Panoptic-DeepLab: random scale in
[min_scale, max_scale] (bilinear image, nearest label), pad to the crop size
at the bottom-right (image with the mean pixel, label with the ignore
value), random crop, random horizontal flip; panoptic targets are then built
from the augmented label, so small-instance weights see augmented areas and
offsets follow the flip. Evaluation pads bottom-right to the crop size (or
keeps the full image) and returns the original size to crop back.

Every random op is stateless and takes its seed from a per-example seed pair
(the dataset seed and the example's position in the stream), so a fixed
`seed` with `deterministic=True` reproduces the exact same batches.

Images come out as float32 in [0, 255]: the models normalise (x/127.5 - 1).
"""

import dataclasses
import functools
import os
import random
from typing import Dict, Optional, Sequence, Tuple, Union

import tensorflow as tf

from axial_deeplab_tf.attention_math import check_positive_int
from axial_deeplab_tf.data import metadata as metadata_lib
from axial_deeplab_tf.data import shard_check
from axial_deeplab_tf.data import tfrecord_schema
from official.core import config_definitions as cfg
from official.core import input_reader
from official.vision.dataloaders import decoder as decoder_lib
from official.vision.dataloaders import parser as parser_lib

SEED_KEY = "seed"
_INT31_MAX = 2**31 - 1


def _check_size(name: str, value) -> Tuple[int, int]:
  try:
    h, w = (int(v) for v in value)
  except (TypeError, ValueError) as e:
    raise ValueError(f"{name} must be (height, width), got {value!r}.") from e
  if h <= 0 or w <= 0:
    raise ValueError(f"{name} must be positive, got {value!r}.")
  return (h, w)


def _check_scales(min_scale: float, max_scale: float,
                  scale_step: float) -> None:
  if not 0 < min_scale <= max_scale:
    raise ValueError(f"need 0 < min_scale <= max_scale, got min_scale="
                     f"{min_scale}, max_scale={max_scale}.")
  if scale_step < 0:
    raise ValueError(f"scale_step must be >= 0 (0: continuous), got "
                     f"{scale_step}.")


def _check_probability(name: str, value: float) -> None:
  if not 0.0 <= value <= 1.0:
    raise ValueError(f"{name} must lie in [0, 1], got {value}.")


def _check_crop_settings(config) -> None:
  """Checks (and normalises) the crop, scale, flip and padding settings the
  panoptic and semantic configs share."""
  object.__setattr__(config, "crop_size",
                     _check_size("crop_size", config.crop_size))
  if config.eval_crop_size is not None:
    object.__setattr__(config, "eval_crop_size",
                       _check_size("eval_crop_size", config.eval_crop_size))
  _check_scales(config.min_scale, config.max_scale, config.scale_step)
  _check_probability("flip_probability", config.flip_probability)
  if len(config.mean_pixel) != 3:
    raise ValueError(f"mean_pixel must have 3 values, got "
                     f"{config.mean_pixel!r}.")


@dataclasses.dataclass(frozen=True)
class PanopticParserConfig:
  """Settings of the panoptic parser (Panoptic-DeepLab augmentation/targets).

  Attributes:
    thing_class_ids: train ids of the thing classes.
    crop_size: training crop (height, width).
    min_scale, max_scale: random scale range (COCO 0.5-1.5, Cityscapes
      0.5-2.0).
    scale_step: 0 for a continuous scale, else scales min_scale + k * step.
    flip_probability: chance of a horizontal flip.
    mean_pixel: image padding value (RGB, 0..255 scale).
    ignore_label: semantic ignore label.
    label_divisor: panoptic label divisor; must match the records.
    sigma: center Gaussian sigma.
    small_instance_area, small_instance_weight: semantic weight of small
      instances (area measured after augmentation).
    eval_pad_to_crop: eval pads images bottom-right to eval_crop_size; if
      False eval keeps every image at its own size.
    eval_crop_size: eval padding size (default: crop_size).
    generate_targets: build Panoptic-DeepLab targets (False: only the
      augmented panoptic label, e.g. for evaluation or timing).
  """
  thing_class_ids: Tuple[int, ...]
  crop_size: Tuple[int, int] = (641, 641)
  min_scale: float = 0.5
  max_scale: float = 1.5
  scale_step: float = 0.0
  flip_probability: float = 0.5
  mean_pixel: Tuple[float, float, float] = (127.5, 127.5, 127.5)
  ignore_label: int = 255
  label_divisor: int = 256
  sigma: float = 8.0
  small_instance_area: int = 4096
  small_instance_weight: float = 3.0
  eval_pad_to_crop: bool = True
  eval_crop_size: Optional[Tuple[int, int]] = None
  generate_targets: bool = True

  def __post_init__(self):
    object.__setattr__(self, "thing_class_ids",
                       tuple(int(i) for i in self.thing_class_ids))
    _check_crop_settings(self)
    if self.label_divisor <= 0:
      raise ValueError(f"label_divisor must be positive, got "
                       f"{self.label_divisor}.")
    if self.ignore_label < 0:
      raise ValueError(f"ignore_label must be >= 0, got {self.ignore_label}.")

  @classmethod
  def from_metadata(cls, meta: metadata_lib.DatasetMetadata,
                    **kwargs) -> "PanopticParserConfig":
    """A config with thing ids, divisor and ignore label from `meta`."""
    if meta.task != "panoptic":
      raise ValueError(f"metadata {meta.name!r} is of task {meta.task!r}, "
                       f"expected 'panoptic'.")
    return cls(thing_class_ids=meta.thing_class_ids,
               label_divisor=meta.label_divisor,
               ignore_label=meta.ignore_label, **kwargs)


@dataclasses.dataclass(frozen=True)
class SemanticParserConfig:
  """Settings of the semantic segmentation parser.

  Attributes:
    crop_size, min_scale, max_scale, scale_step, flip_probability,
      mean_pixel, eval_pad_to_crop, eval_crop_size: as PanopticParserConfig.
    ignore_label: label of ignored pixels (also the label padding value).
    num_classes: if set, labels outside 0..num_classes-1 and ignore fail.
    label_source: "semantic" records, or "panoptic" records whose semantic
      label is panoptic // label_divisor.
    label_divisor: divisor of panoptic records (label_source="panoptic").
  """
  crop_size: Tuple[int, int] = (512, 512)
  min_scale: float = 0.5
  max_scale: float = 2.0
  scale_step: float = 0.0
  flip_probability: float = 0.5
  mean_pixel: Tuple[float, float, float] = (127.5, 127.5, 127.5)
  ignore_label: int = 255
  num_classes: Optional[int] = None
  label_source: str = "semantic"
  label_divisor: int = 0
  eval_pad_to_crop: bool = True
  eval_crop_size: Optional[Tuple[int, int]] = None

  def __post_init__(self):
    _check_crop_settings(self)
    if self.label_source not in ("semantic", "panoptic"):
      raise ValueError(f"label_source must be 'semantic' or 'panoptic', got "
                       f"{self.label_source!r}.")
    if self.label_source == "panoptic" and self.label_divisor <= 0:
      raise ValueError(f"label_divisor must be positive for panoptic "
                       f"records, got {self.label_divisor}.")
    if self.num_classes is not None and self.num_classes <= 0:
      raise ValueError(f"num_classes must be positive, got "
                       f"{self.num_classes}.")

  @classmethod
  def from_metadata(cls, meta: metadata_lib.DatasetMetadata,
                    **kwargs) -> "SemanticParserConfig":
    """A config reading `meta`'s records (semantic or panoptic)."""
    if meta.task == "panoptic":
      kwargs.setdefault("label_source", "panoptic")
      kwargs.setdefault("label_divisor", meta.label_divisor)
    elif meta.task != "semantic":
      raise ValueError(f"metadata {meta.name!r} is of task {meta.task!r}, "
                       f"expected 'semantic' or 'panoptic'.")
    return cls(ignore_label=meta.ignore_label, num_classes=meta.num_classes,
               **kwargs)


@dataclasses.dataclass(frozen=True)
class ClassificationParserConfig:
  """Settings of the classification parser (Inception-style crops).

  Attributes:
    image_size: output (height, width).
    min_area, max_area: random crop area range (fraction of the image).
    min_aspect_ratio, max_aspect_ratio: random crop aspect ratio range.
    flip_probability: chance of a horizontal flip in training.
    eval_crop_fraction: eval resizes the short side to
      image_size / eval_crop_fraction, then takes the central crop.
    num_classes: if set, labels outside 0..num_classes-1 fail.
  """
  image_size: Tuple[int, int] = (224, 224)
  min_area: float = 0.08
  max_area: float = 1.0
  min_aspect_ratio: float = 3.0 / 4.0
  max_aspect_ratio: float = 4.0 / 3.0
  flip_probability: float = 0.5
  eval_crop_fraction: float = 0.875
  num_classes: Optional[int] = None

  def __post_init__(self):
    object.__setattr__(self, "image_size",
                       _check_size("image_size", self.image_size))
    if not 0 < self.min_area <= self.max_area <= 1.0:
      raise ValueError(f"need 0 < min_area <= max_area <= 1, got "
                       f"{self.min_area}, {self.max_area}.")
    if not 0 < self.min_aspect_ratio <= self.max_aspect_ratio:
      raise ValueError(f"need 0 < min_aspect_ratio <= max_aspect_ratio, got "
                       f"{self.min_aspect_ratio}, {self.max_aspect_ratio}.")
    _check_probability("flip_probability", self.flip_probability)
    if not 0 < self.eval_crop_fraction <= 1.0:
      raise ValueError(f"eval_crop_fraction must lie in (0, 1], got "
                       f"{self.eval_crop_fraction}.")


ParserConfig = Union[PanopticParserConfig, SemanticParserConfig,
                     ClassificationParserConfig]


class Decoder(decoder_lib.Decoder):
  """Decodes a record of the project schema into tensors.

  Output dict: "image" uint8 [H, W, 3], "height" and "width" int32 scalars,
  "source_id" and "filename" strings, and by label type:
  panoptic: "panoptic" int32 [H, W], "label_divisor", "ignore_label";
  semantic: "semantic" int32 [H, W]; classification: "label" int32 scalar.
  Semantic decoders given panoptic records (label_source="panoptic") decode
  the panoptic label.
  """

  def __init__(self, label_type: str):
    if label_type not in tfrecord_schema.LABEL_TYPES:
      raise ValueError(f"label_type must be one of "
                       f"{tfrecord_schema.LABEL_TYPES}, got {label_type!r}.")
    self._label_type = label_type
    self._spec = tfrecord_schema.feature_spec(label_type)

  @property
  def label_type(self) -> str:
    return self._label_type

  def decode(self, serialized_example):
    s = tfrecord_schema
    parsed = tf.io.parse_single_example(serialized_example, self._spec)
    height = tf.cast(parsed[s.IMAGE_HEIGHT], tf.int32)
    width = tf.cast(parsed[s.IMAGE_WIDTH], tf.int32)
    decoded = {
        "image": s.decode_image(parsed[s.IMAGE_ENCODED], height, width),
        "height": height,
        "width": width,
        "source_id": parsed[s.IMAGE_SOURCE_ID],
        "filename": parsed[s.IMAGE_FILENAME],
    }
    if self._label_type == "panoptic":
      check = tf.debugging.assert_equal(
          parsed[s.PANOPTIC_FORMAT], tf.constant(s.PANOPTIC_FORMAT_VALUE),
          message="unsupported image/panoptic/format")
      with tf.control_dependencies([check]):
        decoded["panoptic"] = s.decode_panoptic_label(
            parsed[s.PANOPTIC_ENCODED], height, width)
      decoded["label_divisor"] = tf.cast(parsed[s.PANOPTIC_LABEL_DIVISOR],
                                         tf.int32)
      decoded["ignore_label"] = tf.cast(parsed[s.PANOPTIC_IGNORE_LABEL],
                                        tf.int32)
    elif self._label_type == "semantic":
      decoded["semantic"] = s.decode_semantic_label(
          parsed[s.SEMANTIC_ENCODED], height, width)
    else:
      decoded["label"] = tf.cast(parsed[s.CLASS_LABEL], tf.int32)
    return decoded


def _example_seed(data: Dict[str, tf.Tensor]) -> tf.Tensor:
  if SEED_KEY in data:
    return tf.cast(data[SEED_KEY], tf.int64)
  # Used only when the parser runs outside build_dataset: not reproducible.
  return tf.random.uniform([2], 0, _INT31_MAX, dtype=tf.int64)


def random_scale(image: tf.Tensor, label: tf.Tensor, seed: tf.Tensor,
                 min_scale: float, max_scale: float, scale_step: float = 0.0):
  """Rescales image (bilinear) and label (nearest) by one random factor.

  Args:
    image: float32 [H, W, C].
    label: int32 [H, W].
    seed: int [2] stateless seed.
    min_scale, max_scale: scale range.
    scale_step: 0: uniform in [min, max]; else min + k * step, k uniform.

  Returns:
    (image, label, scale): resized tensors, scale float32 scalar.
  """
  if min_scale == max_scale:
    scale = tf.constant(min_scale, tf.float32)
  elif scale_step > 0:
    num = int(round((max_scale - min_scale) / scale_step)) + 1
    k = tf.random.stateless_uniform([], seed, 0, num, dtype=tf.int32)
    scale = min_scale + tf.cast(k, tf.float32) * scale_step
  else:
    scale = tf.random.stateless_uniform([], seed, min_scale, max_scale)
  if min_scale == max_scale == 1.0:
    return image, label, scale
  size = tf.shape(label)
  new_size = tf.maximum(
      tf.cast(tf.round(tf.cast(size, tf.float32) * scale), tf.int32), 1)
  image = tf.image.resize(image, new_size, method="bilinear")
  label = tf.image.resize(label[:, :, tf.newaxis], new_size,
                          method="nearest")[:, :, 0]
  return image, label, scale


def pad_to_size(image: tf.Tensor, label: tf.Tensor, height, width,
                mean_pixel: Sequence[float], label_pad_value: int):
  """Pads bottom-right to at least (height, width); never crops.

  Image padding is `mean_pixel`, label padding `label_pad_value`.
  """
  size = tf.shape(label)
  pad_h = tf.maximum(height - size[0], 0)
  pad_w = tf.maximum(width - size[1], 0)
  paddings = [[0, pad_h], [0, pad_w]]
  valid = tf.pad(tf.ones_like(label, dtype=tf.float32), paddings)
  # Padding zeros then adding the mean outside the valid area keeps every
  # original pixel value bit-exact.
  image = (tf.pad(image, paddings + [[0, 0]])
           + (1.0 - valid)[:, :, tf.newaxis]
           * tf.constant(mean_pixel, tf.float32))
  label = tf.pad(label, paddings, constant_values=label_pad_value)
  return image, label


def random_crop(image: tf.Tensor, label: tf.Tensor, seed: tf.Tensor,
                height: int, width: int):
  """Crops a random (height, width) window; inputs must be at least that."""
  size = tf.shape(label)
  checks = [tf.debugging.assert_greater_equal(
      size, tf.constant([height, width]),
      message="random_crop input is smaller than the crop")]
  with tf.control_dependencies(checks):
    seeds = tf.random.experimental.stateless_split(seed, 2)
    y = tf.random.stateless_uniform([], seeds[0], 0, size[0] - height + 1,
                                    dtype=tf.int32)
    x = tf.random.stateless_uniform([], seeds[1], 0, size[1] - width + 1,
                                    dtype=tf.int32)
  image = image[y:y + height, x:x + width]
  label = label[y:y + height, x:x + width]
  return image, label, tf.stack([y, x])


def random_flip(image: tf.Tensor, label: tf.Tensor, seed: tf.Tensor,
                probability: float):
  """Flips image and label left-right together with `probability`."""
  if probability == 0.0:
    return image, label, tf.constant(False)
  do_flip = tf.random.stateless_uniform([], seed) < probability
  image = tf.cond(do_flip, lambda: tf.reverse(image, [1]), lambda: image)
  label = tf.cond(do_flip, lambda: tf.reverse(label, [1]), lambda: label)
  return image, label, do_flip


def _augment(image, label, seed, config, label_pad_value):
  """Scale, pad, crop, flip (training). Returns image, label, image_info."""
  original = tf.cast(tf.shape(label), tf.float32)
  seeds = tf.random.experimental.stateless_split(seed, 3)
  image, label, _ = random_scale(image, label, seeds[0], config.min_scale,
                                 config.max_scale, config.scale_step)
  scaled = tf.cast(tf.shape(label), tf.float32)
  crop_h, crop_w = config.crop_size
  image, label = pad_to_size(image, label, crop_h, crop_w, config.mean_pixel,
                             label_pad_value)
  image, label, offset = random_crop(image, label, seeds[1], crop_h, crop_w)
  image, label, _ = random_flip(image, label, seeds[2],
                                config.flip_probability)
  image.set_shape([crop_h, crop_w, 3])
  label.set_shape([crop_h, crop_w])
  image_info = tf.stack([original, scaled, scaled / original,
                         tf.cast(offset, tf.float32)])
  return image, label, image_info


def _pad_eval(image, label, config, label_pad_value):
  """Eval: pad bottom-right to the eval crop (or keep). Returns info too."""
  size = tf.shape(label)
  original = tf.cast(size, tf.float32)
  image_info = tf.stack([original, original, tf.ones([2]), tf.zeros([2])])
  if not config.eval_pad_to_crop:
    return image, label, image_info, size
  crop_h, crop_w = config.eval_crop_size or config.crop_size
  check = tf.debugging.assert_less_equal(
      size, tf.constant([crop_h, crop_w]),
      message=(f"eval image is larger than the eval crop size "
               f"{(crop_h, crop_w)}; raise eval_crop_size or set "
               f"eval_pad_to_crop=False"))
  with tf.control_dependencies([check]):
    image, label = pad_to_size(image, label, crop_h, crop_w,
                               config.mean_pixel, label_pad_value)
  image.set_shape([crop_h, crop_w, 3])
  label.set_shape([crop_h, crop_w])
  return image, label, image_info, size


class _ConfiguredParser(parser_lib.Parser):
  """A parser built from one config of type `config_type` (checked)."""

  config_type = type(None)

  def __init__(self, config):
    if not isinstance(config, self.config_type):
      raise TypeError(f"config must be a {self.config_type.__name__}, got "
                      f"{type(config).__name__}.")
    self._config = config

  @property
  def config(self):
    return self._config


class PanopticParser(_ConfiguredParser):
  """Augments panoptic examples and builds Panoptic-DeepLab targets.

  Returns (features, labels): features {"image": float32 [h, w, 3] in
  [0, 255]}; labels {"panoptic": int32 [h, w], "image_info": float32 [4, 2]
  (Model Garden layout: original size, scaled size, scale, crop offset)}
  plus, with generate_targets, the PanopticTargetGenerator outputs
  (semantic, center_heatmap, offset, semantic_weights, center_weights,
  offset_weights); eval adds "original_size" int32 [2] to crop back.
  """

  config_type = PanopticParserConfig

  def __init__(self, config: PanopticParserConfig):
    super().__init__(config)
    self._targets = None
    if config.generate_targets:
      # Imported here so the decode/augment path has no hard dependency on
      # the target module.
      from axial_deeplab_tf.data import targets  # pylint: disable=g-import-not-at-top
      self._targets = targets.PanopticTargetGenerator(
          thing_class_ids=config.thing_class_ids,
          ignore_label=config.ignore_label,
          label_divisor=config.label_divisor, sigma=config.sigma,
          small_instance_area=config.small_instance_area,
          small_instance_weight=config.small_instance_weight)

  def _prepare(self, data):
    c = self._config
    checks = [
        tf.debugging.assert_equal(
            data["label_divisor"], c.label_divisor,
            message=f"record label_divisor differs from the parser's "
                    f"{c.label_divisor}"),
        tf.debugging.assert_equal(
            data["ignore_label"], c.ignore_label,
            message=f"record ignore_label differs from the parser's "
                    f"{c.ignore_label}"),
    ]
    with tf.control_dependencies(checks):
      image = tf.cast(data["image"], tf.float32)
    return image, data["panoptic"]

  def _labels(self, label, image_info):
    labels = {"panoptic": label, "image_info": image_info}
    if self._targets is not None:
      labels.update(self._targets(label))
    return labels

  def _parse_train_data(self, decoded_tensors):
    c = self._config
    image, label = self._prepare(decoded_tensors)
    image, label, info = _augment(image, label,
                                  _example_seed(decoded_tensors), c,
                                  c.ignore_label * c.label_divisor)
    return {"image": image}, self._labels(label, info)

  def _parse_eval_data(self, decoded_tensors):
    c = self._config
    image, label = self._prepare(decoded_tensors)
    image, label, info, size = _pad_eval(image, label, c,
                                         c.ignore_label * c.label_divisor)
    labels = self._labels(label, info)
    labels["original_size"] = size
    return {"image": image}, labels


class SemanticParser(_ConfiguredParser):
  """Augments semantic segmentation examples.

  Returns (features, labels): features {"image": float32 [h, w, 3] in
  [0, 255]}; labels {"semantic": int32 [h, w], "valid_mask": bool [h, w],
  "image_info": float32 [4, 2]}; eval adds "original_size" int32 [2].
  """

  config_type = SemanticParserConfig


  def _prepare(self, data):
    c = self._config
    if c.label_source == "panoptic":
      checks = [tf.debugging.assert_equal(
          data["label_divisor"], c.label_divisor,
          message=f"record label_divisor differs from the parser's "
                  f"{c.label_divisor}")]
      with tf.control_dependencies(checks):
        label = tf.math.floordiv(data["panoptic"], c.label_divisor)
    else:
      label = data["semantic"]
    if c.num_classes is not None:
      ok = tf.reduce_all(tf.logical_or(
          tf.logical_and(label >= 0, label < c.num_classes),
          tf.equal(label, c.ignore_label)))
      with tf.control_dependencies([tf.debugging.Assert(
          ok, [f"semantic label outside 0..{c.num_classes - 1} and ignore "
               f"{c.ignore_label}"])]):
        label = tf.identity(label)
    return tf.cast(data["image"], tf.float32), label

  def _labels(self, label, info):
    return {"semantic": label,
            "valid_mask": tf.not_equal(label, self._config.ignore_label),
            "image_info": info}

  def _parse_train_data(self, decoded_tensors):
    image, label = self._prepare(decoded_tensors)
    image, label, info = _augment(image, label,
                                  _example_seed(decoded_tensors), self._config,
                                  self._config.ignore_label)
    return {"image": image}, self._labels(label, info)

  def _parse_eval_data(self, decoded_tensors):
    image, label = self._prepare(decoded_tensors)
    image, label, info, size = _pad_eval(image, label, self._config,
                                         self._config.ignore_label)
    labels = self._labels(label, info)
    labels["original_size"] = size
    return {"image": image}, labels


class ClassificationParser(_ConfiguredParser):
  """Random-resized-crop + flip (training), resize + center crop (eval).

  Returns (features, labels): features {"image": float32 [h, w, 3] in
  [0, 255]}; labels {"label": int32 scalar}.
  """

  config_type = ClassificationParserConfig


  def _label(self, data):
    label = data["label"]
    n = self._config.num_classes
    if n is not None:
      check = tf.debugging.assert_equal(
          tf.logical_and(label >= 0, label < n), True,
          message=f"class label outside 0..{n - 1}")
      with tf.control_dependencies([check]):
        label = tf.identity(label)
    return {"label": label}

  def _parse_train_data(self, decoded_tensors):
    c = self._config
    image = decoded_tensors["image"]
    seeds = tf.random.experimental.stateless_split(
        _example_seed(decoded_tensors), 2)
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image), bounding_boxes=tf.constant([[[0., 0., 1., 1.]]]),
        seed=seeds[0], min_object_covered=0.1,
        aspect_ratio_range=(c.min_aspect_ratio, c.max_aspect_ratio),
        area_range=(c.min_area, c.max_area), max_attempts=10,
        use_image_if_no_bounding_boxes=True)
    image = tf.slice(image, begin, size)
    image = tf.image.resize(tf.cast(image, tf.float32), c.image_size,
                            method="bilinear")
    if c.flip_probability > 0:
      do_flip = tf.random.stateless_uniform([], seeds[1]) < c.flip_probability
      image = tf.cond(do_flip, lambda: tf.reverse(image, [1]), lambda: image)
    image.set_shape(list(c.image_size) + [3])
    return {"image": image}, self._label(decoded_tensors)

  def _parse_eval_data(self, decoded_tensors):
    c = self._config
    image = tf.cast(decoded_tensors["image"], tf.float32)
    size = tf.cast(tf.shape(image)[:2], tf.float32)
    out_h, out_w = c.image_size
    resize_short = max(out_h, out_w) / c.eval_crop_fraction
    scale = resize_short / tf.reduce_min(size)
    new_size = tf.maximum(tf.cast(tf.round(size * scale), tf.int32),
                          tf.constant([out_h, out_w]))
    image = tf.image.resize(image, new_size, method="bilinear")
    top = (new_size[0] - out_h) // 2
    left = (new_size[1] - out_w) // 2
    image = image[top:top + out_h, left:left + out_w]
    image.set_shape([out_h, out_w, 3])
    return {"image": image}, self._label(decoded_tensors)


def label_type_of(config: ParserConfig) -> str:
  """The record label type a parser config reads."""
  if isinstance(config, PanopticParserConfig):
    return "panoptic"
  if isinstance(config, SemanticParserConfig):
    return config.label_source
  if isinstance(config, ClassificationParserConfig):
    return "classification"
  raise TypeError(f"parser_config must be a PanopticParserConfig, "
                  f"SemanticParserConfig or ClassificationParserConfig, got "
                  f"{type(config).__name__}.")


def build_decoder(config: ParserConfig) -> Decoder:
  """The decoder matching a parser config."""
  return Decoder(label_type_of(config))


def build_parser(config: ParserConfig) -> parser_lib.Parser:
  """The parser of a parser config."""
  label_type_of(config)  # Type check with a clear message.
  if isinstance(config, PanopticParserConfig):
    return PanopticParser(config)
  if isinstance(config, SemanticParserConfig):
    return SemanticParser(config)
  return ClassificationParser(config)


def add_example_seeds(dataset: tf.data.Dataset, base_seed: int,
                      input_context: Optional[tf.distribute.InputContext] = None
                      ) -> tf.data.Dataset:
  """Adds a stateless seed pair [base_seed, stream index] to every example.

  The index counts examples of this input pipeline; with several pipelines
  the indices interleave (index * pipelines + pipeline id), so no two
  examples anywhere share a seed.
  """
  num = input_context.num_input_pipelines if input_context else 1
  pipeline = input_context.input_pipeline_id if input_context else 0

  def add(index, data):
    data = dict(data)
    data[SEED_KEY] = tf.stack([tf.constant(base_seed, tf.int64),
                               index * num + pipeline])
    return data

  return dataset.enumerate().map(add, num_parallel_calls=tf.data.AUTOTUNE)


def build_dataset(file_pattern: Union[str, Sequence[str]],
                  parser_config: ParserConfig, is_training: bool,
                  batch_size: int, *,
                  input_context: Optional[tf.distribute.InputContext] = None,
                  shuffle_buffer_size: int = 256, seed: Optional[int] = None,
                  deterministic: bool = False,
                  drop_remainder: Optional[bool] = None, cache: bool = False,
                  cycle_length: Optional[int] = None,
                  prefetch_buffer_size: Optional[int] = None,
                  skip_corrupt_records: bool = False
                  ) -> tf.data.Dataset:
  """Builds a batched dataset of (features, labels) from TFRecord shards.

  Uses Model Garden's InputReader: file-level sharding across input
  pipelines (record-level if there are fewer files than pipelines),
  shuffling and endless repetition in training, batching to the per-replica
  batch size.

  Usage under a strategy:
    strategy.distribute_datasets_from_function(
        lambda ctx: build_dataset(pattern, config, True, global_batch,
                                  input_context=ctx))

  Args:
    file_pattern: glob(s) of TFRecord shards, e.g. "/data/coco/train-*";
      comma-separated patterns or a list also work.
    parser_config: a Panoptic/Semantic/ClassificationParserConfig.
    is_training: training (augment, shuffle, repeat) or eval.
    batch_size: GLOBAL batch size (split over replicas via input_context).
    input_context: tf.distribute input context, if distributed.
    shuffle_buffer_size: example shuffle buffer (training).
    seed: dataset seed; required with deterministic=True.
    deterministic: reproducible training order and augmentation (slower);
      evaluation always reads in file order.
    drop_remainder: drop the last partial batch (default: is_training).
    cache: cache parsed examples (augmentation then repeats each epoch).
    cycle_length: files read in parallel.
    prefetch_buffer_size: batches to prefetch (default AUTOTUNE).
    skip_corrupt_records: skip the rest of a shard from a corrupt record on
      (logged with the count) instead of stopping (see data/shard_check.py).

  Returns:
    tf.data.Dataset of (features dict, labels dict), batched.

  Raises:
    errors.UserError: a shard is missing, empty, truncated, corrupt or of
      another schema (shard_check.check_shards), named in the message.
  """
  check_positive_int("batch_size", batch_size)
  if deterministic and seed is None:
    raise ValueError("deterministic=True needs a seed.")
  if seed is not None and not 0 <= int(seed) <= _INT31_MAX:
    raise ValueError(f"seed must lie in 0..2**31-1, got {seed}.")
  if input_context is not None and (
      batch_size % input_context.num_replicas_in_sync):
    raise ValueError(f"batch_size {batch_size} is not divisible by the "
                     f"{input_context.num_replicas_in_sync} replicas.")
  shard_check.check_shards(file_pattern, label_type_of(parser_config),
                           skip_corrupt_records)
  decoder = build_decoder(parser_config)
  parser = build_parser(parser_config)
  base_seed = (int(seed) if seed is not None
               else random.randint(0, _INT31_MAX))
  params = cfg.DataConfig(
      input_path=file_pattern, global_batch_size=batch_size,
      is_training=is_training,
      drop_remainder=is_training if drop_remainder is None else drop_remainder,
      shuffle_buffer_size=shuffle_buffer_size, cache=cache,
      cycle_length=cycle_length,
      # Evaluation always keeps the file order so results line up with files.
      deterministic=deterministic or not is_training, seed=seed,
      prefetch_buffer_size=prefetch_buffer_size)
  reader = input_reader.InputReader(
      params,
      dataset_fn=shard_check.tfrecord_dataset_fn(skip_corrupt_records),
      decoder_fn=decoder.decode,
      sample_fn=functools.partial(add_example_seeds, base_seed=base_seed,
                                  input_context=input_context),
      parser_fn=parser.parse_fn(is_training))
  return reader.read(input_context=input_context)


def dataset_metadata(file_pattern: str) -> metadata_lib.DatasetMetadata:
  """Loads metadata.json from the directory of the first matching shard."""
  first = input_reader.match_files(file_pattern)[0]
  return metadata_lib.DatasetMetadata.load(os.path.dirname(first))

