"""Cityscapes converters: panoptic (gtFine panoptic PNG + JSON) and semantic.

Panoptic input is the COCO-format output of cityscapesscripts'
createPanopticImgs: gtFine/cityscapes_panoptic_{split}.json (category ids
are labelIds) or gtFine/cityscapes_panoptic_{split}_trainId.json (ids are
trainIds, from --use-train-id), with the PNGs in the folder of the same
name. Images: leftImg8bit/{split}/{city}/{frame}_leftImg8bit.png.

Semantic input is gtFine/{split}/{city}/{frame}_gtFine_labelTrainIds.png
(from createTrainIdLabelImgs): values 0..18 and 255 (ignore).
"""

import glob
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence

from axial_deeplab_tf.data import metadata as metadata_lib
from axial_deeplab_tf.data.converters import coco_panoptic
from axial_deeplab_tf.data.converters import common
from axial_deeplab_tf.data.converters import semantic
from axial_deeplab_tf.data.converters import writer
from axial_deeplab_tf.utils import errors

MODES = ("panoptic", "semantic")


def cityscapes_category_map(categories: Sequence[Mapping[str, Any]],
                            meta: metadata_lib.DatasetMetadata,
                            source: str) -> Dict[int, int]:
  """Maps the JSON's category ids (labelIds or trainIds) to train ids.

  The JSON's names decide the class; its ids must then be either all
  labelIds or all trainIds of those names.

  Raises:
    ValueError: unknown names, or ids that are neither.
  """
  by_name = {n: i for i, n in enumerate(meta.class_names)}
  label_ids, train_ids = True, True
  mapping = {}
  for cat in categories:
    name = cat.get("name")
    if name not in by_name:
      raise ValueError(f"{source}: category {cat!r:.120} is not one of the "
                       f"19 Cityscapes classes {list(meta.class_names)}.")
    train_id = by_name[name]
    label_ids &= cat.get("id") == meta.original_category_ids[train_id]
    train_ids &= cat.get("id") == train_id
    if "isthing" in cat and bool(cat["isthing"]) != (
        train_id in meta.thing_class_ids):
      raise ValueError(f"{source}: category {name!r} has isthing="
                       f"{cat['isthing']}, expected "
                       f"{int(train_id in meta.thing_class_ids)}.")
    mapping[cat["id"]] = train_id
  if not (label_ids or train_ids):
    raise ValueError(f"{source}: category ids are neither all Cityscapes "
                     f"labelIds nor all trainIds.")
  return mapping


def _image_path_fn(root: str, split: str):
  # createPanopticImgs names the image "{frame}_gtFine_leftImg8bit.png" in
  # "images", which is not the real file name; the image "id" is the frame
  # ("{city}_{seq}_{frame}"), from which the real path follows.
  def image_path(entry: Mapping[str, Any]) -> str:
    frame = str(entry["id"])
    city = frame.split("_")[0]
    return os.path.join(root, "leftImg8bit", split, city,
                        f"{frame}_leftImg8bit.png")
  return image_path


def find_panoptic_json(root: str, split: str) -> str:
  """gtFine/cityscapes_panoptic_{split}[_trainId].json, whichever exists."""
  candidates = [os.path.join(root, "gtFine", f"cityscapes_panoptic_{split}"
                             f"{suffix}.json") for suffix in ("", "_trainId")]
  return common.first_file(
      candidates, "; create them with cityscapesscripts' createPanopticImgs "
      "(csCreatePanopticImgs).")


def convert_cityscapes(*, cityscapes_root: str, split: str, output_dir: str,
                       mode: str = "panoptic",
                       panoptic_json: Optional[str] = None,
                       output_split: Optional[str] = None,
                       num_shards: int = 10, num_workers: int = 1,
                       strict: bool = False, label_divisor: int = 1000,
                       ignore_label: int = 255,
                       allow_outside_root: bool = False,
                       progress_stream=None) -> writer.ConversionSummary:
  """Converts one Cityscapes split to TFRecords.

  Args:
    cityscapes_root: directory holding leftImg8bit/ and gtFine/.
    split: "train", "val" or "test".
    output_dir: where shards and metadata.json go.
    mode: "panoptic" or "semantic".
    panoptic_json: explicit panoptic JSON (its PNGs in the folder of the
      same name without .json).
    output_split: shard name prefix (default: split).
    num_shards, num_workers, strict: see writer.write_records.
    label_divisor, ignore_label: label encoding.
    allow_outside_root: accept image paths outside cityscapes_root and PNG
      paths outside the JSON's PNG folder.
    progress_stream: progress bar stream.
  """
  if mode not in MODES:
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")
  if mode == "panoptic":
    meta = metadata_lib.cityscapes("panoptic", label_divisor=label_divisor,
                                   ignore_label=ignore_label)
    json_path = panoptic_json or find_panoptic_json(cityscapes_root, split)
    categories = coco_panoptic.load_panoptic_json(
        json_path, require_categories=True)["categories"]
    if not categories:
      raise errors.UserError("no categories", json_path,
                             "'categories' is empty")
    mapping = cityscapes_category_map(categories, meta, json_path)
    return coco_panoptic.convert_panoptic_json(
        dataset="cityscapes", panoptic_json_path=json_path,
        image_dir=os.path.join(cityscapes_root, "leftImg8bit", split),
        panoptic_dir=os.path.splitext(json_path)[0], metadata=meta,
        output_dir=output_dir, split=output_split or split,
        num_shards=num_shards, num_workers=num_workers, strict=strict,
        dataset_root=cityscapes_root, category_to_train_id=mapping,
        image_path_fn=_image_path_fn(cityscapes_root, split),
        check_categories=False, allow_outside_root=allow_outside_root,
        progress_stream=progress_stream)

  meta = metadata_lib.cityscapes("semantic", ignore_label=ignore_label)
  tasks = semantic_tasks(cityscapes_root, split)
  value_to_label = {i: i for i in range(meta.num_classes)}
  value_to_label[255] = ignore_label
  return semantic.convert_semantic(
      dataset="cityscapes_semantic", tasks=tasks,
      value_to_label=value_to_label, metadata=meta, output_dir=output_dir,
      split=output_split or split, num_shards=num_shards,
      num_workers=num_workers, strict=strict,
      progress_stream=progress_stream)


def semantic_tasks(root: str, split: str) -> List[semantic.SemanticTask]:
  """One task per leftImg8bit image of `split`, label from gtFine."""
  pattern = os.path.join(root, "leftImg8bit", split, "*",
                         "*_leftImg8bit.png")
  images = sorted(glob.glob(pattern))
  if not images:
    raise FileNotFoundError(f"No images match {pattern}.")
  label_pattern = os.path.join(root, "gtFine", split, "*",
                               "*_gtFine_labelTrainIds.png")
  if not glob.glob(label_pattern):
    raise FileNotFoundError(
        f"No labels match {label_pattern}; create them with "
        f"cityscapesscripts' createTrainIdLabelImgs "
        f"(csCreateTrainIdLabelImgs).")
  tasks = []
  for image_path in images:
    frame = os.path.basename(image_path)[:-len("_leftImg8bit.png")]
    city = os.path.basename(os.path.dirname(image_path))
    label_path = os.path.join(root, "gtFine", split, city,
                              f"{frame}_gtFine_labelTrainIds.png")
    tasks.append(semantic.SemanticTask(
        image_path=image_path, label_path=label_path,
        filename=common.relative_path(image_path, root), source_id=frame))
  return tasks
