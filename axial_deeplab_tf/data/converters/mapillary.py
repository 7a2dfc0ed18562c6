"""Mapillary Vistas panoptic converter (category sets v1.2 and v2.0).

Layout of the v2.0 release (which also carries v1.2 labels):
  {root}/{split}/images/{key}.jpg
  {root}/{split}/v1.2/panoptic/panoptic_2018.json and {key}.png
  {root}/{split}/v2.0/panoptic/panoptic_2020.json and {key}.png
The v1.1/v1.2 release keeps v1.2 panoptic data in {root}/{split}/panoptic/.
The panoptic data is in COCO panoptic format.
"""

import os
from typing import Optional

from axial_deeplab_tf.data import metadata as metadata_lib
from axial_deeplab_tf.data.converters import coco_panoptic
from axial_deeplab_tf.data.converters import common
from axial_deeplab_tf.data.converters import writer
from axial_deeplab_tf.utils import errors

_JSON_NAMES = {"v1.2": "panoptic_2018.json", "v2.0": "panoptic_2020.json"}


def find_panoptic_json(root: str, split: str, version: str) -> str:
  """The panoptic JSON of `version` for `split` in either known layout."""
  dirs = [os.path.join(root, split, version, "panoptic")]
  if version == "v1.2":
    dirs.append(os.path.join(root, split, "panoptic"))
  candidates = [os.path.join(d, _JSON_NAMES[version]) for d in dirs]
  return common.first_file(
      candidates, f" (Mapillary Vistas {version} panoptic annotations).")


def convert_mapillary(*, mapillary_root: str, split: str, output_dir: str,
                      version: str = "v1.2",
                      panoptic_json: Optional[str] = None,
                      output_split: Optional[str] = None,
                      num_shards: int = 16, num_workers: int = 1,
                      strict: bool = False, label_divisor: int = 1000,
                      ignore_label: int = 255,
                      allow_outside_root: bool = False,
                      progress_stream=None) -> writer.ConversionSummary:
  """Converts one Mapillary Vistas split to panoptic TFRecords.

  Args:
    mapillary_root: dataset root (holding training/ and validation/).
    split: "training" or "validation".
    output_dir: where shards and metadata.json go.
    version: category set, "v1.2" (65 classes) or "v2.0" (from the JSON).
    panoptic_json: explicit panoptic JSON (PNGs beside it).
    output_split: shard name prefix (default: split).
    num_shards, num_workers, strict: see writer.write_records.
    label_divisor, ignore_label: panoptic encoding.
    allow_outside_root: accept JSON paths outside the image/PNG folders.
    progress_stream: progress bar stream.
  """
  if version not in metadata_lib.MAPILLARY_VERSIONS:
    raise ValueError(f"version must be one of "
                     f"{metadata_lib.MAPILLARY_VERSIONS}, got {version!r}.")
  json_path = panoptic_json or find_panoptic_json(mapillary_root, split,
                                                  version)
  categories = coco_panoptic.load_panoptic_json(
      json_path, require_categories=True)["categories"]
  if not categories:
    raise errors.UserError("no categories", json_path,
                           "'categories' is empty")
  meta = metadata_lib.mapillary_vistas(
      version, categories=categories, label_divisor=label_divisor,
      ignore_label=ignore_label)
  return coco_panoptic.convert_panoptic_json(
      dataset=meta.name, panoptic_json_path=json_path,
      image_dir=os.path.join(mapillary_root, split, "images"),
      panoptic_dir=os.path.dirname(json_path), metadata=meta,
      output_dir=output_dir, split=output_split or split,
      num_shards=num_shards, num_workers=num_workers, strict=strict,
      dataset_root=mapillary_root, allow_outside_root=allow_outside_root,
      progress_stream=progress_stream)
