"""The TFRecord schema of the project: one tf.train.Example per image.

Keys common to every record (Model Garden names where they exist):

| key                  | type   | content                                      |
|----------------------|--------|----------------------------------------------|
| image/encoded        | bytes  | the RGB image, JPEG or PNG, 8 bits/channel   |
| image/format         | bytes  | b"jpeg" or b"png"                            |
| image/height         | int64  | image height in pixels                       |
| image/width          | int64  | image width in pixels                        |
| image/filename       | bytes  | source image path relative to the dataset    |
| image/source_id      | bytes  | the dataset's image id (COCO id, city frame) |

Panoptic records add:

| key                          | type  | content                              |
|------------------------------|-------|--------------------------------------|
| image/panoptic/encoded       | bytes | zlib(int32 little-endian, [H, W])    |
| image/panoptic/format        | bytes | b"raw_int32_zlib"                    |
| image/panoptic/label_divisor | int64 | the divisor used to build the ids    |
| image/panoptic/ignore_label  | int64 | the ignore label                     |

The panoptic label is the id map semantic * label_divisor + instance_id as
32-bit integers (no 255-instance or 16-bit limit), zlib-compressed raw
bytes; its shape is (image/height, image/width). Ignored pixels hold
ignore_label * label_divisor; crowd pixels of a thing class hold
class * label_divisor (instance 0).

Semantic records add (Model Garden's segmentation keys):

| key                              | type  | content                          |
|----------------------------------|-------|----------------------------------|
| image/segmentation/class/encoded | bytes | 8-bit single-channel PNG, [H, W] |
| image/segmentation/class/format  | bytes | b"png"                           |

with train ids 0..num_classes-1 and the ignore label (<= 255).

Classification records add `image/class/label` (int64, the train id) and
`image/class/text` (bytes, the synset / class name).

The dataset's metadata (classes, thing ids, divisor, ignore label, colors)
sits beside the shards in metadata.json (see metadata.py).

The pure-Python helpers here (feature dicts, label encoding) do not import
TensorFlow, so converter worker processes stay light; the TF helpers import
it when called.
"""

import zlib
from typing import Dict, List, Mapping, Union

import numpy as np

IMAGE_ENCODED = "image/encoded"
IMAGE_FORMAT = "image/format"
IMAGE_HEIGHT = "image/height"
IMAGE_WIDTH = "image/width"
IMAGE_FILENAME = "image/filename"
IMAGE_SOURCE_ID = "image/source_id"

PANOPTIC_ENCODED = "image/panoptic/encoded"
PANOPTIC_FORMAT = "image/panoptic/format"
PANOPTIC_LABEL_DIVISOR = "image/panoptic/label_divisor"
PANOPTIC_IGNORE_LABEL = "image/panoptic/ignore_label"
PANOPTIC_FORMAT_VALUE = b"raw_int32_zlib"

SEMANTIC_ENCODED = "image/segmentation/class/encoded"
SEMANTIC_FORMAT = "image/segmentation/class/format"

CLASS_LABEL = "image/class/label"
CLASS_TEXT = "image/class/text"

LABEL_TYPES = ("panoptic", "semantic", "classification")

FeatureValue = Union[bytes, str, int, List[int]]

# zlib level 6 is zlib's default: label maps are mostly flat regions, higher
# levels barely shrink them but cost converter time.
_ZLIB_LEVEL = 6


def encode_panoptic_label(panoptic: np.ndarray) -> bytes:
  """Encodes an int32 [H, W] panoptic id map as zlib(int32 little-endian)."""
  panoptic = np.asarray(panoptic)
  if panoptic.ndim != 2:
    raise ValueError(f"panoptic must be [height, width], got shape "
                     f"{panoptic.shape}.")
  if not np.issubdtype(panoptic.dtype, np.integer):
    raise TypeError(f"panoptic must be an integer array, got "
                    f"{panoptic.dtype}.")
  if panoptic.size and (panoptic.min() < 0 or panoptic.max() > 2**31 - 1):
    raise ValueError(f"panoptic ids must lie in 0..2**31-1, got "
                     f"{panoptic.min()}..{panoptic.max()}.")
  return zlib.compress(panoptic.astype("<i4").tobytes(), _ZLIB_LEVEL)


def decode_panoptic_label_numpy(encoded: bytes, height: int,
                                width: int) -> np.ndarray:
  """Numpy inverse of `encode_panoptic_label` (for tools and tests)."""
  raw = zlib.decompress(encoded)
  if len(raw) != 4 * height * width:
    raise ValueError(f"panoptic label holds {len(raw)} bytes, expected "
                     f"4 * {height} * {width}.")
  return np.frombuffer(raw, dtype="<i4").reshape(height, width).astype(
      np.int32)


def image_features(*, encoded: bytes, image_format: str, height: int,
                   width: int, filename: str,
                   source_id: str) -> Dict[str, FeatureValue]:
  """The keys every record carries."""
  if image_format not in ("jpeg", "png"):
    raise ValueError(f"image_format must be 'jpeg' or 'png', got "
                     f"{image_format!r}.")
  return {
      IMAGE_ENCODED: encoded,
      IMAGE_FORMAT: image_format.encode(),
      IMAGE_HEIGHT: int(height),
      IMAGE_WIDTH: int(width),
      IMAGE_FILENAME: filename.encode(),
      IMAGE_SOURCE_ID: str(source_id).encode(),
  }


def panoptic_features(panoptic: np.ndarray, label_divisor: int,
                      ignore_label: int) -> Dict[str, FeatureValue]:
  """The panoptic label keys for an int32 [H, W] panoptic id map."""
  return {
      PANOPTIC_ENCODED: encode_panoptic_label(panoptic),
      PANOPTIC_FORMAT: PANOPTIC_FORMAT_VALUE,
      PANOPTIC_LABEL_DIVISOR: int(label_divisor),
      PANOPTIC_IGNORE_LABEL: int(ignore_label),
  }


def semantic_features(png_bytes: bytes) -> Dict[str, FeatureValue]:
  """The semantic label keys for an 8-bit single-channel PNG."""
  return {SEMANTIC_ENCODED: png_bytes, SEMANTIC_FORMAT: b"png"}


def classification_features(label: int, text: str) -> Dict[str, FeatureValue]:
  """The classification label keys."""
  return {CLASS_LABEL: int(label), CLASS_TEXT: text.encode()}


def to_tf_example(features: Mapping[str, FeatureValue]):
  """Builds a tf.train.Example from a feature dict of bytes/int/[int]."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  feature = {}
  for key, value in features.items():
    if isinstance(value, str):
      value = value.encode()
    if isinstance(value, bytes):
      feature[key] = tf.train.Feature(
          bytes_list=tf.train.BytesList(value=[value]))
    elif isinstance(value, (int, np.integer)):
      feature[key] = tf.train.Feature(
          int64_list=tf.train.Int64List(value=[int(value)]))
    elif isinstance(value, (list, tuple)):
      feature[key] = tf.train.Feature(
          int64_list=tf.train.Int64List(value=[int(v) for v in value]))
    else:
      raise TypeError(f"feature {key!r} must be bytes, str, int or a list of "
                      f"ints, got {type(value).__name__}.")
  return tf.train.Example(features=tf.train.Features(feature=feature))


def feature_spec(label_type: str):
  """The tf.io.parse_single_example spec of a record with `label_type`."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if label_type not in LABEL_TYPES:
    raise ValueError(f"label_type must be one of {LABEL_TYPES}, got "
                     f"{label_type!r}.")
  spec = {
      IMAGE_ENCODED: tf.io.FixedLenFeature((), tf.string),
      IMAGE_FORMAT: tf.io.FixedLenFeature((), tf.string, default_value=""),
      IMAGE_HEIGHT: tf.io.FixedLenFeature((), tf.int64),
      IMAGE_WIDTH: tf.io.FixedLenFeature((), tf.int64),
      IMAGE_FILENAME: tf.io.FixedLenFeature((), tf.string, default_value=""),
      IMAGE_SOURCE_ID: tf.io.FixedLenFeature((), tf.string, default_value=""),
  }
  if label_type == "panoptic":
    spec.update({
        PANOPTIC_ENCODED: tf.io.FixedLenFeature((), tf.string),
        PANOPTIC_FORMAT: tf.io.FixedLenFeature((), tf.string),
        PANOPTIC_LABEL_DIVISOR: tf.io.FixedLenFeature((), tf.int64),
        PANOPTIC_IGNORE_LABEL: tf.io.FixedLenFeature((), tf.int64),
    })
  elif label_type == "semantic":
    spec[SEMANTIC_ENCODED] = tf.io.FixedLenFeature((), tf.string)
  else:
    spec[CLASS_LABEL] = tf.io.FixedLenFeature((), tf.int64)
    spec[CLASS_TEXT] = tf.io.FixedLenFeature((), tf.string, default_value="")
  return spec


def decode_image(encoded, height, width):
  """Decodes image/encoded to uint8 [height, width, 3], checking its size."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  image = tf.io.decode_image(encoded, channels=3, dtype=tf.uint8,
                             expand_animations=False)
  with tf.control_dependencies([
      tf.debugging.assert_equal(
          tf.shape(image)[:2],
          tf.cast(tf.stack([height, width]), tf.int32),
          message="image/encoded size differs from image/height, width")]):
    image = tf.identity(image)
  image.set_shape([None, None, 3])
  return image


def decode_panoptic_label(encoded, height, width):
  """Decodes image/panoptic/encoded to int32 [height, width]."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  raw = tf.io.decode_compressed(encoded, compression_type="ZLIB")
  values = tf.io.decode_raw(raw, tf.int32, little_endian=True)
  shape = tf.cast(tf.stack([height, width]), tf.int32)
  with tf.control_dependencies([
      tf.debugging.assert_equal(
          tf.size(values), shape[0] * shape[1],
          message="image/panoptic/encoded size differs from height * width")]):
    return tf.reshape(values, shape)


def decode_semantic_label(encoded, height, width):
  """Decodes image/segmentation/class/encoded to int32 [height, width]."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  label = tf.io.decode_png(encoded, channels=1, dtype=tf.uint8)
  shape = tf.cast(tf.stack([height, width]), tf.int32)
  with tf.control_dependencies([
      tf.debugging.assert_equal(
          tf.shape(label)[:2], shape,
          message="semantic label size differs from image/height, width")]):
    return tf.cast(label[:, :, 0], tf.int32)
