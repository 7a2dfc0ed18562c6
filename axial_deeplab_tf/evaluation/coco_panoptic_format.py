"""COCO panoptic format (PNG + JSON) for panoptic id maps: write and read back.

The COCO panoptic format stores, per image, an RGB PNG whose colour encodes a
segment id (`id = R + 256 * G + 256**2 * B`, 0 = void) and a JSON
`segments_info` list with `id`, `category_id`, `iscrowd`, `area` and `bbox`
(`[x, y, width, height]`) per segment. A JSON file holds the `annotations`
(one per image: `image_id`, `file_name`, `segments_info`), `images` and
`categories` (`id`, `name`, `isthing`). The COCO panopticapi and the
Cityscapes panoptic scripts read this format.

Mapping to panoptic id maps (`semantic * label_divisor + instance`):
- `categories` is a sequence whose position k describes train id k.
- Written segment id = panoptic id + 1 (unique, deterministic, never 0);
  pixels whose semantic id is `ignored_label` are written as 0 (void).
- Ground truth: a thing segment with instance id 0 is written with
  `iscrowd=1` (the crowd region of its class); every other segment has
  `iscrowd=0`. Predictions are written with `iscrowd=0` throughout.
- Reading assigns instance ids: stuff segments 0, crowd thing segments 0 (so
  all crowd segments of a class form one region), other thing segments
  1, 2, ... per class in `segments_info` order. Files written here list
  segments by increasing id, so maps whose thing instances of each class are
  numbered 1..n read back identically; other numberings come back renumbered
  (the same segments, so every metric is unchanged).
"""

import json
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from axial_deeplab_tf.evaluation import panoptic_quality
from axial_deeplab_tf.utils.io import write_atomically

_MAX_SEGMENT_ID = 256**3 - 1


def rgb2id(rgb: np.ndarray) -> np.ndarray:
  """Decodes a COCO panoptic RGB image into segment ids.

  Args:
    rgb: uint8 array `[height, width, 3]`.

  Returns:
    int64 array `[height, width]`, `R + 256 * G + 256**2 * B`.
  """
  rgb = np.asarray(rgb)
  if rgb.ndim != 3 or rgb.shape[-1] != 3 or rgb.dtype != np.uint8:
    raise ValueError(
        f"rgb must be a uint8 [height, width, 3] array; got dtype {rgb.dtype} "
        f"and shape {rgb.shape}.")
  rgb = rgb.astype(np.int64)
  return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def id2rgb(segment_ids: np.ndarray) -> np.ndarray:
  """Encodes `[height, width]` segment ids as uint8 `[height, width, 3]` RGB."""
  ids = np.asarray(segment_ids)
  if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
    raise ValueError(
        f"segment_ids must be an integer [height, width] array; got dtype "
        f"{ids.dtype} and shape {ids.shape}.")
  ids = ids.astype(np.int64)
  if ids.size and (ids.min() < 0 or ids.max() > _MAX_SEGMENT_ID):
    raise ValueError(
        f"segment_ids must lie in [0, {_MAX_SEGMENT_ID}]; got range "
        f"[{ids.min()}, {ids.max()}].")
  return np.stack([ids % 256, ids // 256 % 256, ids // 65536],
                  axis=-1).astype(np.uint8)


def check_categories(categories: Sequence[Mapping[str, Any]]) -> None:
  """Raises ValueError unless categories are dicts with id, name and isthing.

  Args:
    categories: sequence (position = train id) of dicts with an int `id`
      (unique), a str `name` and `isthing` in {0, 1}.
  """
  if isinstance(categories, Mapping) or not isinstance(categories, Sequence):
    raise ValueError(
        f"categories must be a sequence of dicts; got "
        f"{type(categories).__name__}.")
  if not categories:
    raise ValueError("categories is empty.")
  seen = set()
  for k, category in enumerate(categories):
    if not isinstance(category, Mapping):
      raise ValueError(f"categories[{k}] must be a dict; got {category!r}.")
    for key in ("id", "name", "isthing"):
      if key not in category:
        raise ValueError(f"categories[{k}] lacks {key!r}: {category!r}.")
    category_id = category["id"]
    if isinstance(category_id, bool) or not isinstance(
        category_id, (int, np.integer)):
      raise ValueError(
          f"categories[{k}]['id'] must be an int; got {category_id!r}.")
    if category_id in seen:
      raise ValueError(f"categories has duplicate id {category_id}.")
    seen.add(category_id)
    if category["isthing"] not in (0, 1) or isinstance(category["isthing"],
                                                        float):
      raise ValueError(
          f"categories[{k}]['isthing'] must be 0 or 1 (or a bool); got "
          f"{category['isthing']!r}.")


def thing_classes_of(categories: Sequence[Mapping[str, Any]]) -> List[int]:
  """Train ids (positions in `categories`) of the thing categories."""
  check_categories(categories)
  return [k for k, c in enumerate(categories) if int(c["isthing"]) == 1]


def panoptic_to_coco(
    panoptic: Any,
    categories: Sequence[Mapping[str, Any]],
    label_divisor: int = 256,
    ignored_label: int = 255,
    is_groundtruth: bool = True) -> Tuple[np.ndarray, List[Dict[str, Any]]]:
  """Converts a panoptic id map to COCO segment ids and `segments_info`.

  Args:
    panoptic: integer `[height, width]` panoptic ids.
    categories: sequence (position = train id) of category dicts.
    label_divisor: panoptic id = semantic * label_divisor + instance.
    ignored_label: semantic id of void pixels.
    is_groundtruth: mark thing segments with instance 0 as crowd.

  Returns:
    int64 `[height, width]` segment ids (0 = void) and the `segments_info`
    list sorted by id.
  """
  check_categories(categories)
  num_classes = len(categories)
  panoptic_quality.check_label_args(num_classes, ignored_label, label_divisor)
  batch = panoptic_quality.as_label_batch(panoptic, "panoptic")
  if batch.shape[0] != 1 or np.ndim(panoptic) != 2:
    raise ValueError(
        f"panoptic must have shape [height, width]; got {np.shape(panoptic)}.")
  panoptic = batch[0]
  panoptic_quality.check_panoptic_classes(panoptic, num_classes, ignored_label,
                                          label_divisor, "panoptic")
  void = panoptic // label_divisor == ignored_label
  segment_map = np.where(void, 0, panoptic + 1)
  if segment_map.max() > _MAX_SEGMENT_ID:
    raise ValueError(
        f"panoptic ids up to {panoptic[~void].max()} do not fit in the 24-bit "
        "COCO panoptic PNG (segment id = panoptic id + 1).")
  # One stable sort of the row-major ids groups every segment's pixels in
  # increasing position: rows come out sorted, columns need a reduction.
  flat = segment_map.ravel()
  order = np.argsort(flat, kind="stable")
  sorted_ids = flat[order]
  begins = np.concatenate([[0], np.flatnonzero(np.diff(sorted_ids)) + 1])
  segment_ids = sorted_ids[begins]
  areas = np.diff(np.concatenate([begins, [flat.size]]))
  rows, cols = np.divmod(order, panoptic.shape[1])
  y_min = rows[begins]
  y_max = rows[begins + areas - 1]
  x_min = np.minimum.reduceat(cols, begins)
  x_max = np.maximum.reduceat(cols, begins)
  segments_info = []
  for k, segment_id in enumerate(segment_ids):
    if segment_id == 0:
      continue
    semantic, instance = divmod(int(segment_id) - 1, label_divisor)
    is_thing = int(categories[semantic]["isthing"]) == 1
    segments_info.append({
        "id": int(segment_id),
        "category_id": int(categories[semantic]["id"]),
        "iscrowd": int(is_groundtruth and is_thing and instance == 0),
        "area": int(areas[k]),
        "bbox": [int(x_min[k]), int(y_min[k]),
                 int(x_max[k] - x_min[k] + 1), int(y_max[k] - y_min[k] + 1)],
    })
  return segment_map, segments_info


def coco_to_panoptic(segment_map: Any,
                     segments_info: Sequence[Mapping[str, Any]],
                     categories: Sequence[Mapping[str, Any]],
                     label_divisor: int = 256,
                     ignored_label: int = 255) -> np.ndarray:
  """Converts COCO segment ids and `segments_info` to a panoptic id map.

  Args:
    segment_map: `[height, width]` integer segment ids, or the uint8
      `[height, width, 3]` RGB encoding.
    segments_info: the image's segments (`id`, `category_id`, `iscrowd`).
    categories: sequence (position = train id) of category dicts.
    label_divisor: panoptic id = semantic * label_divisor + instance.
    ignored_label: semantic id written for void (segment id 0).

  Returns:
    int64 `[height, width]` panoptic ids.

  Raises:
    ValueError: ids in the map missing from `segments_info` or the reverse,
      unknown category ids, two segments of one stuff class, or more thing
      instances of a class than `label_divisor - 1`.
  """
  check_categories(categories)
  panoptic_quality.check_label_args(len(categories), ignored_label,
                                    label_divisor)
  segment_map = np.asarray(segment_map)
  if segment_map.ndim == 3:
    segment_map = rgb2id(segment_map)
  if segment_map.ndim != 2 or not np.issubdtype(segment_map.dtype,
                                                np.integer):
    raise ValueError(
        f"segment_map must be integer [height, width] or uint8 "
        f"[height, width, 3]; got dtype {segment_map.dtype}, shape "
        f"{segment_map.shape}.")
  train_id = {int(c["id"]): k for k, c in enumerate(categories)}
  present, inverse = np.unique(segment_map.ravel(), return_inverse=True)
  listed = [int(s["id"]) for s in segments_info]
  if len(set(listed)) != len(listed):
    raise ValueError(f"segments_info has duplicate ids: {sorted(listed)}.")
  unlisted = sorted(set(present.tolist()) - set(listed) - {0})
  if unlisted:
    raise ValueError(
        f"segment ids {unlisted[:10]} are in the PNG but not in "
        "segments_info.")
  absent = sorted(set(listed) - set(present.tolist()))
  if absent:
    raise ValueError(
        f"segment ids {absent[:10]} are in segments_info but not in the PNG.")
  if 0 in listed:
    raise ValueError("segments_info lists segment id 0, which is void.")

  value = {0: ignored_label * label_divisor}
  next_instance = {}
  stuff_seen = set()
  for segment in segments_info:
    category_id = int(segment["category_id"])
    if category_id not in train_id:
      raise ValueError(
          f"segment {segment['id']} has unknown category_id {category_id}.")
    semantic = train_id[category_id]
    if int(categories[semantic]["isthing"]) != 1:
      if semantic in stuff_seen:
        raise ValueError(
            f"two segments of stuff category {category_id} in one image.")
      stuff_seen.add(semantic)
      instance = 0
    elif int(segment.get("iscrowd", 0)) == 1:
      instance = 0
    else:
      instance = next_instance.get(semantic, 1)
      if instance >= label_divisor:
        raise ValueError(
            f"category {category_id} has more than {label_divisor - 1} "
            "instances; they do not fit below label_divisor.")
      next_instance[semantic] = instance + 1
    value[int(segment["id"])] = semantic * label_divisor + instance
  lookup = np.array([value[int(i)] for i in present], dtype=np.int64)
  return lookup[inverse].reshape(segment_map.shape)


def write_annotation(png_dir: str,
                     file_name: str,
                     image_id: Any,
                     panoptic: Any,
                     categories: Sequence[Mapping[str, Any]],
                     label_divisor: int = 256,
                     ignored_label: int = 255,
                     is_groundtruth: bool = True) -> Dict[str, Any]:
  """Writes one panoptic map as a COCO panoptic PNG and returns its annotation.

  Args:
    png_dir: folder of the PNG files.
    file_name: PNG file name inside `png_dir` (must end with .png).
    image_id: the image id (int or str) shared with the images list.
    panoptic, categories, label_divisor, ignored_label, is_groundtruth: as
      for `panoptic_to_coco`.

  Returns:
    annotation dict `{"image_id", "file_name", "segments_info"}`.
  """
  if not str(file_name).lower().endswith(".png"):
    raise ValueError(f"file_name must end with .png; got {file_name!r}.")
  segment_map, segments_info = panoptic_to_coco(
      panoptic, categories, label_divisor, ignored_label, is_groundtruth)
  rgb = id2rgb(segment_map)
  write_atomically(os.path.join(png_dir, file_name),
                lambda p: Image.fromarray(rgb).save(p, format="PNG"))
  return {"image_id": image_id, "file_name": str(file_name),
          "segments_info": segments_info}


def read_annotation(png_dir: str,
                    annotation: Mapping[str, Any],
                    categories: Sequence[Mapping[str, Any]],
                    label_divisor: int = 256,
                    ignored_label: int = 255) -> np.ndarray:
  """Reads one COCO panoptic PNG + annotation back into a panoptic id map.

  Returns:
    int64 `[height, width]` panoptic ids (see the module docstring for how
    instance ids are assigned).
  """
  path = os.path.join(png_dir, annotation["file_name"])
  with Image.open(path) as image:
    if image.mode != "RGB":
      raise ValueError(f"{path} has mode {image.mode}; expected RGB.")
    rgb = np.array(image, dtype=np.uint8)
  return coco_to_panoptic(rgb, annotation["segments_info"], categories,
                          label_divisor, ignored_label)


def write_json(json_path: str,
               annotations: Sequence[Mapping[str, Any]],
               categories: Sequence[Mapping[str, Any]],
               images: Optional[Sequence[Mapping[str, Any]]] = None) -> None:
  """Writes the COCO panoptic JSON (atomically).

  Args:
    json_path: output path.
    annotations: per-image annotations from `write_annotation`.
    categories: sequence (position = train id) of category dicts; written
      with `id`, `name`, `isthing` (and any other keys they carry).
    images: the `images` list; default one `{"id", "file_name"}` entry per
      annotation.
  """
  check_categories(categories)
  if images is None:
    images = [{"id": a["image_id"], "file_name": a["file_name"]}
              for a in annotations]
  content = {
      "images": [dict(i) for i in images],
      "annotations": [dict(a) for a in annotations],
      "categories": [
          dict(c, id=int(c["id"]), isthing=int(c["isthing"]))
          for c in categories
      ],
  }

  def write(path):
    with open(path, "w") as f:
      json.dump(content, f)

  write_atomically(json_path, write)


def read_json(json_path: str) -> Dict[str, Any]:
  """Reads a COCO panoptic JSON and checks its top-level keys."""
  with open(json_path) as f:
    content = json.load(f)
  for key in ("annotations", "categories"):
    if key not in content:
      raise ValueError(f"{json_path} lacks the {key!r} list.")
  return content
