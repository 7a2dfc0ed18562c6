"""Converter for panoptic data in COCO panoptic format (PNG + JSON).

COCO panoptic format: one RGB PNG per image whose pixel color encodes a
segment id (R + 256 G + 256^2 B, 0 = unlabeled), and a JSON with "images",
"annotations" (per image: file_name of the PNG, segments_info with id,
category_id, iscrowd) and "categories" (id, name, isthing). COCO panoptic,
Cityscapes (createPanopticImgs), Mapillary Vistas and the synthetic
quickstart data all use it, so they share this converter.
"""

import dataclasses
import functools
import os
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from axial_deeplab_tf.data import metadata as metadata_lib
from axial_deeplab_tf.data import tfrecord_schema
from axial_deeplab_tf.data.converters import common
from axial_deeplab_tf.data.converters import schema
from axial_deeplab_tf.data.converters import writer
from axial_deeplab_tf.utils import errors


@dataclasses.dataclass(frozen=True)
class PanopticTask:
  """One image to convert."""
  image_path: str
  label_path: str
  filename: str  # Image path relative to the dataset root (image/filename).
  source_id: str
  segments: Tuple[Tuple[int, int, int], ...]  # (segment id, category, crowd)
  json_size: Optional[Tuple[int, int]]  # (height, width) stated by the JSON.


@dataclasses.dataclass(frozen=True)
class PanopticContext:
  """Settings every worker needs (picklable)."""
  category_to_train_id: Dict[int, int]
  thing_train_ids: frozenset
  label_divisor: int
  ignore_label: int


def process_panoptic_task(context: PanopticContext, task: PanopticTask):
  """Reads, checks and converts one image + panoptic PNG to record features.

  Returns:
    (features, notes) for writer.write_records.

  Raises:
    common.BadExample: on any bad input.
  """
  image = common.load_rgb_image(task.image_path)
  if task.json_size is not None and task.json_size != (image.height,
                                                       image.width):
    raise common.BadExample(
        task.image_path, common.SIZE_MISMATCH,
        f"image is {image.height}x{image.width} (HxW) but the JSON says "
        f"{task.json_size[0]}x{task.json_size[1]}")
  segment_ids = common.load_panoptic_png(task.label_path)
  common.check_same_size(image, segment_ids, task.image_path, task.label_path)
  panoptic = common.panoptic_from_segments(
      segment_ids, task.segments, context.category_to_train_id,
      context.thing_train_ids, context.label_divisor, context.ignore_label,
      task.label_path)
  features = common.image_record_features(image, task.filename,
                                          task.source_id)
  features.update(tfrecord_schema.panoptic_features(
      panoptic, context.label_divisor, context.ignore_label))
  notes = [(task.image_path, image.note)] if image.note else []
  return features, notes


def load_json(path: str) -> Any:
  """Loads a JSON file (see schema.load_json)."""
  return schema.load_json(path)


def load_panoptic_json(path: str, require_categories: bool = False) -> Any:
  """Loads and checks a COCO panoptic JSON (schema.validate_panoptic_json)."""
  data = schema.load_json(path)
  schema.validate_panoptic_json(data, path, require_categories)
  return data


def index_panoptic_json(
    panoptic_json: Mapping[str, Any], json_path: str, image_dir: str,
    panoptic_dir: str, dataset_root: str,
    image_path_fn: Optional[Callable[[Mapping[str, Any]], str]] = None,
    category_to_train_id: Optional[Mapping[int, int]] = None,
    allow_outside_root: bool = False
) -> Tuple[List[PanopticTask], List[common.BadExample]]:
  """Turns a COCO panoptic JSON into tasks (sorted by image file name).

  The JSON is checked first (schema.validate_panoptic_json: every problem
  listed at once), then every image and PNG path must lie inside its
  folder (image_dir, panoptic_dir or dataset_root) unless
  allow_outside_root.

  Args:
    panoptic_json: the loaded JSON.
    json_path: its path (for messages).
    image_dir: directory of the images (unless image_path_fn is given).
    panoptic_dir: directory of the panoptic PNGs.
    dataset_root: root used to make image/filename relative.
    image_path_fn: maps an "images" entry to its image path.
    category_to_train_id: known category ids; annotations with another
      category are reported as problems (skipped), all before any work.
    allow_outside_root: accept paths outside their folders.

  Returns:
    (tasks, problems): problems are annotations without an image entry,
    images without an annotation and annotations with unknown categories.

  Raises:
    errors.UserError: the JSON breaks the format or names outside paths.
  """
  schema.validate_panoptic_json(panoptic_json, json_path)

  def image_path_of(entry):
    return (image_path_fn(entry) if image_path_fn is not None
            else os.path.join(image_dir, entry["file_name"]))

  images = {entry["id"]: entry for entry in panoptic_json["images"]}
  image_root = dataset_root if image_path_fn is not None else image_dir
  outside_checks = {}
  for i, entry in enumerate(panoptic_json["images"]):
    outside_checks[f"images[{i}] (id {entry['id']!r})"] = image_path_of(entry)
  schema.check_inside(outside_checks, image_root, allow_outside_root,
                      json_path)
  label_paths = {f"annotations[{i}].file_name {ann['file_name']!r}":
                 os.path.join(panoptic_dir, ann["file_name"])
                 for i, ann in enumerate(panoptic_json["annotations"])}
  schema.check_inside(label_paths, panoptic_dir, allow_outside_root,
                      json_path)
  tasks, problems = [], []
  annotated = set()
  for ann in panoptic_json["annotations"]:
    label_path = os.path.join(panoptic_dir, ann["file_name"])
    entry = images.get(ann["image_id"])
    if entry is None:
      problems.append(common.BadExample(
          label_path, common.MISSING_ANNOTATION,
          f"annotation for image id {ann['image_id']!r} has no entry in "
          f"'images' of {json_path}"))
      continue
    annotated.add(ann["image_id"])
    segments = tuple((seg["id"], seg["category_id"],
                      int(bool(seg.get("iscrowd", 0))))
                     for seg in ann["segments_info"])
    if category_to_train_id is not None:
      unknown = sorted({c for _, c, _ in segments
                        if c not in category_to_train_id})
      if unknown:
        problems.append(common.BadExample(
            label_path, common.UNKNOWN_CATEGORY,
            f"segments_info has category id(s) {unknown[:10]}, which are "
            f"not in the metadata"))
        continue
    image_path = image_path_of(entry)
    json_size = ((entry["height"], entry["width"])
                 if "height" in entry and "width" in entry else None)
    tasks.append(PanopticTask(
        image_path=image_path, label_path=label_path,
        filename=common.relative_path(image_path, dataset_root),
        source_id=str(entry["id"]), segments=segments,
        json_size=json_size))
  for image_id, entry in images.items():
    if image_id not in annotated:
      problems.append(common.BadExample(
          image_path_of(entry), common.MISSING_ANNOTATION,
          f"image id {image_id!r} has no annotation in {json_path}"))
  tasks.sort(key=lambda t: t.filename)
  return tasks, problems


def convert_panoptic_json(
    *, dataset: str, panoptic_json_path: str, image_dir: str,
    panoptic_dir: str, metadata: metadata_lib.DatasetMetadata,
    output_dir: str, split: str, num_shards: int, num_workers: int,
    strict: bool, dataset_root: Optional[str] = None,
    category_to_train_id: Optional[Dict[int, int]] = None,
    image_path_fn: Optional[Callable[[Mapping[str, Any]], str]] = None,
    check_categories: bool = True, allow_outside_root: bool = False,
    progress_stream=None) -> writer.ConversionSummary:
  """Converts one split of a COCO-format panoptic dataset to TFRecords.

  Args:
    dataset: dataset name for the summary.
    panoptic_json_path: the panoptic JSON.
    image_dir: directory of the images.
    panoptic_dir: directory of the panoptic PNGs.
    metadata: the dataset's metadata (panoptic task).
    output_dir, split, num_shards, num_workers, strict: see
      writer.write_records.
    dataset_root: root for image/filename (default: parent of image_dir).
    category_to_train_id: JSON category id -> train id (default: the
      metadata's original_category_ids).
    image_path_fn: maps an "images" entry to its image path.
    check_categories: check the JSON "categories" against the metadata.
    allow_outside_root: accept image and PNG paths outside their folders.
    progress_stream: progress bar stream.

  Returns:
    writer.ConversionSummary.
  """
  if metadata.task != "panoptic":
    raise ValueError(f"metadata must be of a panoptic dataset, got task "
                     f"{metadata.task!r} ({metadata.name}).")
  data = load_panoptic_json(panoptic_json_path)
  if check_categories and "categories" in data:
    metadata_lib.check_categories_match(metadata, data["categories"],
                                        source=panoptic_json_path)
  if category_to_train_id is None:
    category_to_train_id = metadata.original_to_train_id()
  tasks, problems = index_panoptic_json(
      data, panoptic_json_path, image_dir, panoptic_dir,
      dataset_root or os.path.dirname(os.path.abspath(image_dir)),
      image_path_fn, category_to_train_id, allow_outside_root)
  context = PanopticContext(
      category_to_train_id=dict(category_to_train_id),
      thing_train_ids=frozenset(metadata.thing_class_ids),
      label_divisor=metadata.label_divisor,
      ignore_label=metadata.ignore_label)
  return writer.write_records(
      dataset=dataset, tasks=tasks,
      process_fn=functools.partial(process_panoptic_task, context),
      output_dir=output_dir, split=split, num_shards=num_shards,
      num_workers=num_workers, strict=strict, metadata=metadata,
      pre_skipped=problems, progress_stream=progress_stream)


def convert_coco_panoptic(
    *, coco_root: Optional[str] = None, split: str = "train2017",
    image_dir: Optional[str] = None, panoptic_json: Optional[str] = None,
    panoptic_dir: Optional[str] = None, output_dir: str,
    output_split: Optional[str] = None, num_shards: int = 8,
    num_workers: int = 1, strict: bool = False, label_divisor: int = 256,
    ignore_label: int = 255, allow_outside_root: bool = False,
    progress_stream=None) -> writer.ConversionSummary:
  """Converts COCO panoptic 2017 (133 classes) to TFRecords.

  Default layout under coco_root: {split}/*.jpg,
  annotations/panoptic_{split}.json, annotations/panoptic_{split}/*.png.
  Explicit image_dir / panoptic_json / panoptic_dir override it.

  Args:
    coco_root: COCO root directory.
    split: COCO split name, e.g. "train2017" or "val2017".
    image_dir, panoptic_json, panoptic_dir: explicit paths.
    output_dir: where shards and metadata.json go.
    output_split: shard name prefix (default: split).
    num_shards, num_workers, strict: see writer.write_records.
    label_divisor, ignore_label: panoptic encoding.
    allow_outside_root: accept JSON paths outside image_dir/panoptic_dir.
    progress_stream: progress bar stream.
  """
  if coco_root is None and None in (image_dir, panoptic_json, panoptic_dir):
    raise ValueError("Give coco_root, or all of image_dir, panoptic_json and "
                     "panoptic_dir.")
  if coco_root is not None:
    image_dir = image_dir or os.path.join(coco_root, split)
    panoptic_json = panoptic_json or os.path.join(
        coco_root, "annotations", f"panoptic_{split}.json")
    panoptic_dir = panoptic_dir or os.path.join(
        coco_root, "annotations", f"panoptic_{split}")
  meta = metadata_lib.coco_panoptic(label_divisor=label_divisor,
                                    ignore_label=ignore_label)
  return convert_panoptic_json(
      dataset="coco_panoptic", panoptic_json_path=panoptic_json,
      image_dir=image_dir, panoptic_dir=panoptic_dir, metadata=meta,
      output_dir=output_dir, split=output_split or split,
      num_shards=num_shards, num_workers=num_workers, strict=strict,
      dataset_root=coco_root, allow_outside_root=allow_outside_root,
      progress_stream=progress_stream)


def convert_own_panoptic(
    *, image_dir: str, panoptic_json: str, panoptic_dir: str, output_dir: str,
    split: str, categories_json: Optional[str] = None,
    dataset_name: str = "custom_panoptic", label_divisor: int = 1000,
    ignore_label: int = 255, num_shards: int = 4, num_workers: int = 1,
    strict: bool = False, allow_outside_root: bool = False,
    progress_stream=None) -> writer.ConversionSummary:
  """Converts your own COCO-format panoptic data with your own categories.

  Args:
    image_dir: directory of the images ("images" file_name is relative).
    panoptic_json: the panoptic JSON.
    panoptic_dir: directory of the panoptic PNGs.
    output_dir: where shards and metadata.json go.
    split: shard name prefix.
    categories_json: a JSON list of categories ({"id", "name", "isthing",
      optional "color"}) or a JSON object holding such a list under
      "categories"; train ids follow its order. Default: the "categories" of
      panoptic_json.
    dataset_name: name stored in the metadata.
    label_divisor, ignore_label: panoptic encoding.
    num_shards, num_workers, strict: see writer.write_records.
    allow_outside_root: accept JSON paths outside image_dir/panoptic_dir.
    progress_stream: progress bar stream.
  """
  if categories_json is not None:
    categories = load_json(categories_json)
    source = categories_json
  else:
    categories = load_panoptic_json(panoptic_json).get("categories")
    source = panoptic_json
  if isinstance(categories, Mapping):
    categories = categories.get("categories")
  if not isinstance(categories, list) or not categories:
    raise errors.UserError(
        "no category list", source, "expected a JSON list of {'id', "
        "'name', 'isthing'} or an object with 'categories'")
  schema.validate_categories(categories, source)
  meta = metadata_lib.from_categories(
      categories, name=dataset_name, label_divisor=label_divisor,
      ignore_label=ignore_label)
  return convert_panoptic_json(
      dataset=dataset_name, panoptic_json_path=panoptic_json,
      image_dir=image_dir, panoptic_dir=panoptic_dir, metadata=meta,
      output_dir=output_dir, split=split, num_shards=num_shards,
      num_workers=num_workers, strict=strict,
      allow_outside_root=allow_outside_root, progress_stream=progress_stream)
