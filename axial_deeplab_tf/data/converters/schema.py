"""Checks of annotation JSON (COCO panoptic format) before any work.

Annotation files are untrusted data: `validate_panoptic_json` checks the
whole file against the format (types, required fields, duplicate ids and
annotations, segments) and raises one `UserError` listing every problem
found, not only the first. `check_inside` keeps the paths a JSON names
inside the dataset folder unless the user allows otherwise.

No TensorFlow here (converter worker processes import this package).
"""

import json
import os
from typing import Any, Callable, Dict, List, Mapping

from axial_deeplab_tf.utils import errors

# At most this many problems are spelled out; the count is always given.
MAX_LISTED = 20


def load_json(path: str) -> Any:
  """Loads a JSON file; UserError when missing, unreadable or malformed."""
  if not os.path.isfile(path):
    raise errors.UserError("JSON file not found", path,
                           "no such file" if not os.path.exists(path)
                           else "not a regular file")
  try:
    with open(path, "rb") as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise errors.UserError("malformed JSON", path,
                           f"line {e.lineno} column {e.colno}: {e.msg}") from e
  except UnicodeDecodeError as e:
    raise errors.UserError("malformed JSON", path,
                           f"not UTF-8 text: {e}") from e
  except RecursionError as e:
    raise errors.UserError("malformed JSON", path,
                           "nested too deeply (recursion limit)") from e


def _is_int(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def _id_ok(value: Any) -> bool:
  # COCO ids are ints; Cityscapes and Mapillary use strings.
  return _is_int(value) or (isinstance(value, str) and bool(value))


def _text(value: Any) -> str:
  return f"{value!r:.60}"


class _Problems:
  """Collects problems; raises them all at once."""

  def __init__(self, path: str):
    self.path = path
    self.items: List[str] = []

  def add(self, message: str) -> None:
    self.items.append(message)

  def objects(self, entries: List[Any], where: str):
    """Yields (index, label, entry) of the objects; the rest are problems."""
    for i, entry in enumerate(entries):
      at = f"{where}[{i}]"
      if isinstance(entry, Mapping):
        yield i, at, entry
      else:
        self.add(f"{at} must be an object, got {type(entry).__name__}")

  def unique(self, seen: Dict[Any, int], value: Any, index: int, valid: bool,
             invalid: str, duplicate: Callable[[int], str]) -> None:
    """Records `value` as seen at `index` unless it is invalid (problem
    `invalid`) or seen before (problem `duplicate(first index)`)."""
    if not valid:
      self.add(invalid)
    elif value in seen:
      self.add(duplicate(seen[value]))
    else:
      seen[value] = index

  def unique_id(self, seen: Dict[Any, int], value: Any, index: int,
                field: str, duplicate: Callable[[int], str]) -> None:
    """`unique` for an image id (an int or a non-empty string)."""
    self.unique(seen, value, index, _id_ok(value),
                f"{field} must be an int or a non-empty string, got "
                f"{_text(value)}", duplicate)

  def non_empty_string(self, entry: Mapping[str, Any], at: str,
                       key: str) -> bool:
    """Whether entry[key] is a non-empty string (a problem if not)."""
    value = entry.get(key)
    if isinstance(value, str) and value:
      return True
    self.add(f"{at}.{key} must be a non-empty string, got {_text(value)}")
    return False

  def raise_if_any(self, what: str) -> None:
    if not self.items:
      return
    listed = "; ".join(self.items[:MAX_LISTED])
    more = (f"; ... {len(self.items) - MAX_LISTED} more"
            if len(self.items) > MAX_LISTED else "")
    raise errors.UserError(what, self.path,
                           f"{len(self.items)} problem(s): {listed}{more}")


def validate_categories(categories: Any, path: str,
                        where: str = "categories") -> None:
  """A list of {id: int, name: str, isthing: 0/1 (optional)}, unique ids."""
  problems = _Problems(path)
  if not isinstance(categories, list):
    problems.add(f"'{where}' must be a list, got "
                 f"{type(categories).__name__}")
    problems.raise_if_any("bad categories")
  seen: Dict[Any, int] = {}
  for i, at, cat in problems.objects(categories, where):
    problems.unique(seen, cat.get("id"), i, _is_int(cat.get("id")),
                    f"{at}.id must be an int, got {_text(cat.get('id'))}",
                    lambda _, at=at, cat=cat: f"{at}.id {cat['id']} is a "
                    "duplicate")
    if not isinstance(cat.get("name"), str):
      problems.add(f"{at}.name must be a string, got "
                   f"{_text(cat.get('name'))}")
    if "isthing" in cat and cat["isthing"] not in (0, 1, True, False):
      problems.add(f"{at}.isthing must be 0 or 1, got "
                   f"{_text(cat['isthing'])}")
  problems.raise_if_any("bad categories")


def validate_panoptic_json(data: Any, path: str,
                           require_categories: bool = False) -> None:
  """Checks a COCO panoptic JSON; raises UserError listing every problem.

  Checks: an object with lists 'images' and 'annotations' (and
  'categories' if present or required); images are objects with a unique
  id (int or non-empty string), a string file_name and, when given, int
  height/width > 0; annotations are objects with an image_id, a string
  file_name and a segments_info list of objects with an int id > 0
  (unique in the annotation), an int category_id and iscrowd 0/1; no two
  annotations for the same image or the same PNG. Whether a category id
  exists is checked per example by the converter (reported, not fatal).

  Args:
    data: the loaded JSON.
    path: its file, for messages.
    require_categories: 'categories' must be present.

  Raises:
    errors.UserError: naming the file and listing the problems.
  """
  problems = _Problems(path)
  if not isinstance(data, Mapping):
    problems.add(f"the top level must be an object with 'images' and "
                 f"'annotations', got a {type(data).__name__}")
    problems.raise_if_any("not a COCO panoptic JSON")
  keys = ["images", "annotations"]
  if require_categories or "categories" in data:
    keys.append("categories")
  for key in keys:
    if key not in data:
      problems.add(f"missing the '{key}' list")
    elif not isinstance(data[key], list):
      problems.add(f"'{key}' must be a list, got "
                   f"{type(data[key]).__name__}")
  problems.raise_if_any("not a COCO panoptic JSON")
  if "categories" in data:
    validate_categories(data["categories"], path)

  image_ids: Dict[Any, int] = {}
  for i, at, entry in problems.objects(data["images"], "images"):
    image_id = entry.get("id")
    problems.unique_id(image_ids, image_id, i, f"{at}.id",
                       lambda first, at=at, image_id=image_id:
                       f"{at}.id {image_id!r} duplicates images[{first}]")
    problems.non_empty_string(entry, at, "file_name")
    for key in ("height", "width"):
      if key in entry and not (_is_int(entry[key]) and entry[key] > 0):
        problems.add(f"{at}.{key} must be an int > 0, got "
                     f"{_text(entry[key])}")

  annotated: Dict[Any, int] = {}
  label_files: Dict[str, int] = {}
  for i, at, ann in problems.objects(data["annotations"], "annotations"):
    image_id = ann.get("image_id")
    problems.unique_id(annotated, image_id, i, f"{at}.image_id",
                       lambda first, at=at, image_id=image_id:
                    f"{at} is a second annotation of image id {image_id!r} "
                    f"(first: annotations[{first}])")
    if problems.non_empty_string(ann, at, "file_name"):
      file_name = ann["file_name"]
      problems.unique(label_files, file_name, i, True, "",
                      lambda first, at=at, file_name=file_name:
                      f"{at}.file_name {file_name!r} is also the PNG of "
                      f"annotations[{first}]")
    segments = ann.get("segments_info")
    if not isinstance(segments, list):
      problems.add(f"{at}.segments_info must be a list, got "
                   f"{_text(segments)}")
      continue
    segment_ids: Dict[Any, int] = {}
    for j, sat, seg in problems.objects(segments, f"{at}.segments_info"):
      seg_id = seg.get("id")
      problems.unique(segment_ids, seg_id, j,
                      _is_int(seg_id) and seg_id > 0,
                      f"{sat}.id must be an int > 0, got {_text(seg_id)}",
                      lambda _, sat=sat, seg_id=seg_id:
                      f"{sat}.id {seg_id} is listed twice")
      if not _is_int(seg.get("category_id")):
        problems.add(f"{sat}.category_id must be an int, got "
                     f"{_text(seg.get('category_id'))}")
      if "iscrowd" in seg and seg["iscrowd"] not in (0, 1, True, False):
        problems.add(f"{sat}.iscrowd must be 0 or 1, got "
                     f"{_text(seg['iscrowd'])}")
  problems.raise_if_any("invalid COCO panoptic JSON")


def check_inside(paths: Mapping[str, str], root: str, allow_outside: bool,
                 json_path: str) -> None:
  """Refuses every path of {where: path} outside root, all listed at once."""
  if allow_outside:
    return
  problems = _Problems(json_path)
  base = os.path.normpath(os.path.abspath(root))
  for where, path in paths.items():
    full = os.path.normpath(os.path.abspath(path))
    if os.path.commonpath([base, full]) != base:
      problems.add(f"{where} resolves to {full}")
  problems.raise_if_any(f"path outside the dataset folder {base} (pass "
                        f"--allow_outside_root to read it anyway)")
