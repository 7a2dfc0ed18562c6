"""Shared converter pieces: bad-input reporting, image and label loading.

Everything here runs in converter worker processes, so it imports neither
TensorFlow nor anything that does.
"""

import dataclasses
import io
import os
from typing import Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from axial_deeplab_tf.data import tfrecord_schema

# Kinds of bad input, used to group the summary.
MISSING_FILE = "missing file"
CORRUPTED_IMAGE = "corrupted or truncated image"
UNSUPPORTED_IMAGE = "unsupported image"
SIZE_MISMATCH = "image/label size mismatch"
BAD_LABEL_FORMAT = "bad label format"
UNKNOWN_CATEGORY = "category id not in metadata"
SEGMENT_NOT_IN_PNG = "segment in JSON absent from PNG"
SEGMENT_NOT_IN_JSON = "segment in PNG absent from JSON"
BAD_SEGMENTS = "bad segments_info"
TOO_MANY_INSTANCES = "too many instances for label_divisor"
BAD_LABEL_VALUES = "label value not in metadata"
MISSING_ANNOTATION = "missing annotation"

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Modes with more than 8 bits per sample: converting them to 8-bit RGB needs
# a tone-mapping choice (scale? clip? window?) that we refuse to guess.
_HIGH_BIT_DEPTH_MODES = ("I", "F", "I;16", "I;16B", "I;16L", "I;16N")
# Modes converted to RGB (stated in the summary), with the note to give.
_CONVERTIBLE_MODES = {
    "L": "grayscale image converted to RGB",
    "LA": "grayscale+alpha image converted to RGB (alpha dropped)",
    "1": "1-bit image converted to RGB",
    "P": "palette image converted to RGB",
    "PA": "palette+alpha image converted to RGB (alpha dropped)",
    "RGBA": "RGBA image converted to RGB (alpha dropped)",
    "RGBX": "RGBX image converted to RGB",
    "CMYK": "CMYK image converted to RGB",
    "YCbCr": "YCbCr image converted to RGB",
}


class BadExample(Exception):
  """An input example that cannot be converted.

  Attributes:
    path: the offending file (or JSON) path.
    kind: one of the kind constants of this module (groups the summary).
    detail: what exactly is wrong.
  """

  def __init__(self, path: str, kind: str, detail: str):
    super().__init__(f"{path}: {kind}: {detail}")
    self.path = path
    self.kind = kind
    self.detail = detail


@dataclasses.dataclass(frozen=True)
class LoadedImage:
  """An image ready for a record: encoded bytes and its facts."""
  encoded: bytes
  image_format: str  # "jpeg" or "png".
  height: int
  width: int
  note: Optional[str]  # Set when the image was converted.


def png_bit_depth(data: bytes) -> Optional[int]:
  """Bit depth from a PNG header, or None if `data` is not a PNG."""
  if len(data) < 26 or not data.startswith(_PNG_SIGNATURE):
    return None
  return data[24]


def _open_fully(path: str, data: bytes) -> Image.Image:
  """Opens and fully decodes image bytes; BadExample on any decode error."""
  try:
    image = Image.open(io.BytesIO(data))
    # load() decodes every pixel, so a truncated or corrupted file fails
    # here rather than in the training input pipeline.
    image.load()
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError,
          EOFError) as e:
    raise BadExample(path, CORRUPTED_IMAGE, f"{type(e).__name__}: {e}") from e
  return image


def read_file(path: str) -> bytes:
  if not os.path.isfile(path):
    raise BadExample(path, MISSING_FILE, "file does not exist")
  with open(path, "rb") as f:
    return f.read()


def load_rgb_image(path: str) -> LoadedImage:
  """Reads and checks an image; converts non-RGB 8-bit images to RGB PNG.

  RGB JPEG/PNG bytes are kept unchanged (no re-encoding loss). Grayscale,
  palette, RGBA, CMYK and other 8-bit modes are converted to RGB and
  re-encoded as PNG, with a note for the summary. 16-bit images are
  rejected: mapping them to 8 bits is a choice the user must make.

  Args:
    path: image file.

  Returns:
    LoadedImage.

  Raises:
    BadExample: missing, corrupted, truncated or 16-bit image.
  """
  data = read_file(path)
  depth = png_bit_depth(data)
  if depth is not None and depth > 8:
    raise BadExample(path, UNSUPPORTED_IMAGE,
                     f"{depth}-bit PNG; only 8-bit images are supported "
                     f"(convert it to 8 bits per channel first)")
  image = _open_fully(path, data)
  mode = image.mode
  fmt = (image.format or "").upper()
  if mode in _HIGH_BIT_DEPTH_MODES:
    raise BadExample(path, UNSUPPORTED_IMAGE,
                     f"high bit depth image (mode {mode}); only 8-bit images "
                     f"are supported")
  width, height = image.size
  if mode == "RGB" and fmt in ("JPEG", "PNG"):
    return LoadedImage(data, "jpeg" if fmt == "JPEG" else "png", height, width,
                       None)
  if mode == "RGB":
    note = f"{fmt or 'unknown'}-format image re-encoded as PNG"
  elif mode in _CONVERTIBLE_MODES:
    note = _CONVERTIBLE_MODES[mode]
  else:
    raise BadExample(path, UNSUPPORTED_IMAGE, f"image mode {mode} is not "
                     f"supported")
  rgb = image.convert("RGB")
  return LoadedImage(encode_png(np.asarray(rgb)), "png", height, width, note)


def encode_png(array: np.ndarray) -> bytes:
  """Encodes a uint8 [H, W] or [H, W, 3] array as PNG."""
  array = np.asarray(array)
  if array.dtype != np.uint8:
    raise TypeError(f"array must be uint8, got {array.dtype}.")
  buf = io.BytesIO()
  Image.fromarray(array).save(buf, format="PNG")
  return buf.getvalue()


def load_panoptic_png(path: str) -> np.ndarray:
  """Reads a COCO-format panoptic PNG as int64 segment ids [H, W].

  The segment id of a pixel is R + 256 * G + 256**2 * B.

  Raises:
    BadExample: missing/corrupted file or not an 8-bit RGB PNG.
  """
  data = read_file(path)
  depth = png_bit_depth(data)
  if depth is None:
    raise BadExample(path, BAD_LABEL_FORMAT, "panoptic label is not a PNG")
  if depth != 8:
    raise BadExample(path, BAD_LABEL_FORMAT,
                     f"panoptic PNG must be 8-bit RGB, got bit depth {depth}")
  image = _open_fully(path, data)
  if image.mode != "RGB":
    raise BadExample(path, BAD_LABEL_FORMAT,
                     f"panoptic PNG must be 8-bit RGB, got mode {image.mode}")
  rgb = np.asarray(image).astype(np.int64)
  return rgb[:, :, 0] + 256 * rgb[:, :, 1] + 65536 * rgb[:, :, 2]


def load_index_png(path: str) -> np.ndarray:
  """Reads an 8-bit single-channel (L or P) label PNG as uint8 [H, W].

  For palette PNGs the palette index is the label, as in VOC-style data.

  Raises:
    BadExample: missing/corrupted file or wrong PNG kind.
  """
  data = read_file(path)
  depth = png_bit_depth(data)
  if depth is None:
    raise BadExample(path, BAD_LABEL_FORMAT, "label is not a PNG")
  image = _open_fully(path, data)
  if image.mode not in ("L", "P") or depth != 8:
    raise BadExample(path, BAD_LABEL_FORMAT,
                     f"label PNG must be 8-bit single-channel (L or P), got "
                     f"mode {image.mode} with bit depth {depth}")
  return np.asarray(image, dtype=np.uint8)


def check_same_size(image: LoadedImage, label: np.ndarray, image_path: str,
                    label_path: str) -> None:
  if label.shape[:2] != (image.height, image.width):
    raise BadExample(
        label_path, SIZE_MISMATCH,
        f"label is {label.shape[0]}x{label.shape[1]} (HxW) but image "
        f"{image_path} is {image.height}x{image.width}")


def panoptic_from_segments(
    segment_ids: np.ndarray,
    segments: Sequence[Tuple[int, int, int]],
    category_to_train_id: dict,
    thing_train_ids: frozenset,
    label_divisor: int,
    ignore_label: int,
    label_path: str) -> np.ndarray:
  """Builds the project panoptic id map from a COCO-format segment id map.

  Instance ids of a thing class are 1, 2, ... in segments_info order;
  crowd thing segments get instance 0; stuff segments get instance 0;
  pixels of segment id 0 (void) get ignore_label * label_divisor.

  Args:
    segment_ids: int [H, W] ids decoded from the panoptic PNG.
    segments: (segment id, category id, iscrowd) per JSON segment.
    category_to_train_id: dataset category id -> train id.
    thing_train_ids: train ids of thing classes.
    label_divisor: panoptic label divisor.
    ignore_label: ignore label.
    label_path: PNG path for error messages.

  Returns:
    int32 [H, W] panoptic ids.

  Raises:
    BadExample: unknown category, segments missing from the PNG or the
      JSON, duplicate ids, or more instances than label_divisor allows.
  """
  ignore_id = ignore_label * label_divisor
  uniques, inverse = np.unique(segment_ids.ravel(), return_inverse=True)
  position = {int(u): i for i, u in enumerate(uniques)}
  lut = np.full(len(uniques), ignore_id, dtype=np.int64)
  seen = set()
  instance_count = {}
  for segment_id, category_id, iscrowd in segments:
    if segment_id in seen:
      raise BadExample(label_path, BAD_SEGMENTS,
                       f"segment id {segment_id} is listed twice")
    seen.add(segment_id)
    if segment_id == 0:
      raise BadExample(label_path, BAD_SEGMENTS,
                       "segment id 0 is reserved for unlabeled pixels")
    if category_id not in category_to_train_id:
      raise BadExample(
          label_path, UNKNOWN_CATEGORY,
          f"segment {segment_id} has category id {category_id}, which is not "
          f"in the metadata")
    if segment_id not in position:
      raise BadExample(
          label_path, SEGMENT_NOT_IN_PNG,
          f"segment {segment_id} (category {category_id}) is listed in the "
          f"JSON but has no pixel in the PNG")
    train_id = category_to_train_id[category_id]
    if train_id in thing_train_ids and not iscrowd:
      instance = instance_count.get(train_id, 0) + 1
      if instance >= label_divisor:
        raise BadExample(
            label_path, TOO_MANY_INSTANCES,
            f"class {train_id} has more than {label_divisor - 1} instances, "
            f"the most label_divisor={label_divisor} can encode")
      instance_count[train_id] = instance
    else:
      instance = 0
    lut[position[segment_id]] = train_id * label_divisor + instance
  unlisted = sorted(set(position) - seen - {0})
  if unlisted:
    raise BadExample(
        label_path, SEGMENT_NOT_IN_JSON,
        f"PNG segment ids {unlisted[:10]}{'...' if len(unlisted) > 10 else ''}"
        f" are not listed in the JSON segments_info")
  panoptic = lut[inverse].reshape(segment_ids.shape)
  return panoptic.astype(np.int32)


def semantic_lookup_table(mapping: dict) -> np.ndarray:
  """A 256-entry table: label value -> output value, -1 where not allowed."""
  table = np.full(256, -1, dtype=np.int64)
  for value, out in mapping.items():
    table[value] = out
  return table


def map_semantic_label(label: np.ndarray, table: np.ndarray,
                       label_path: str) -> np.ndarray:
  """Maps 8-bit label values through `table`; BadExample on unknown values."""
  mapped = table[label]
  if (mapped < 0).any():
    bad = sorted(int(v) for v in np.unique(label[mapped < 0]))
    raise BadExample(label_path, BAD_LABEL_VALUES,
                     f"label values {bad[:10]} are not in the metadata")
  return mapped.astype(np.uint8)


def image_record_features(image: LoadedImage, filename: str,
                          source_id: str) -> dict:
  return tfrecord_schema.image_features(
      encoded=image.encoded, image_format=image.image_format,
      height=image.height, width=image.width, filename=filename,
      source_id=source_id)


def relative_path(path: str, root: str) -> str:
  """`path` relative to `root` when inside it, else the path itself."""
  try:
    rel = os.path.relpath(path, root)
  except ValueError:
    return path
  return path if rel.startswith("..") else rel


def first_file(candidates: Sequence[str], hint: str) -> str:
  """The first of `candidates` that is a file; FileNotFoundError naming
  them all, followed by `hint`, if none is."""
  for path in candidates:
    if os.path.isfile(path):
      return path
  raise FileNotFoundError(f"None of {list(candidates)} exists{hint}")
