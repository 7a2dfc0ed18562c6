"""Runs an exported SavedModel on image files and writes the results.

`SavedModelPredictor` loads an export of `export_module` with plain
`tf.saved_model.load` and runs `serving_default` on one image at a time.
`PredictionWriter` turns the outputs into files under an output folder:

  panoptic models
    overlays/<name>.png   colorized segments blended over the image
    panoptic/<name>.png   COCO panoptic PNG (segment id = R + 256 G +
                          256^2 B; id = panoptic id + 1, 0 = void)
    panoptic.json         COCO panoptic JSON: images, annotations
                          (segments_info with id, category_id, iscrowd=0,
                          area, bbox), categories
    semantic/<name>.png   optional: train ids (8-bit, or 16-bit when a
                          class or the ignore label exceeds 255)
    instance/<name>.png   optional: 16-bit instance ids (0 = no instance)
  semantic models
    overlays/<name>.png, semantic/<name>.png
  classification models
    predictions.json      per image: top class, its name and probability

<name> is the image file name without its extension; image ids in the JSON
are these names. The COCO files are what the COCO panopticapi and the
Cityscapes panoptic evaluation read; the latter finds the PNGs of
<dir>/panoptic.json in <dir>/panoptic/ by itself:

  python -m cityscapesscripts.evaluation.evalPanopticSemanticLabeling \
      --gt-json-file=gt.json --gt-folder=gt/ \
      --prediction-json-file=<output_dir>/panoptic.json

`predict_files` runs an export over image files with a PredictionWriter,
reporting every image that fails and going on with the others.
"""

import dataclasses
import json
import os
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence
from typing import Tuple, Union

import numpy as np
from PIL import Image

from axial_deeplab_tf.attention_math import check_positive_int
from axial_deeplab_tf.evaluation import coco_panoptic_format
from axial_deeplab_tf.serving import export_module
from axial_deeplab_tf.utils import io as io_lib
from axial_deeplab_tf.utils import visualization


# Default pixel limit of `read_image`: 4096 x 4096, so every 4K frame
# (3840 x 2160, DCI 4096 x 2160) passes and a declared size beyond it is
# refused before any pixel is decoded.
DEFAULT_MAX_PIXELS = 4096 * 4096

_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


class ImageError(ValueError):
  """An image file that cannot be predicted; the message says why."""


def declared_size(head: bytes) -> Optional[Tuple[int, int]]:
  """(width, height) in a PNG, GIF or BMP header (its first 26 bytes)."""
  import struct  # pylint: disable=g-import-not-at-top
  if head.startswith(b"\x89PNG\r\n\x1a\n") and len(head) >= 24:
    return struct.unpack(">II", head[16:24])
  if head.startswith(b"GIF8") and len(head) >= 10:
    return struct.unpack("<HH", head[6:10])
  if head.startswith(b"BM") and len(head) >= 26:
    width, height = struct.unpack("<ii", head[18:26])
    return abs(width), abs(height)
  return None


def _check_pixels(path, width, height, max_pixels):
  if max_pixels is not None and width * height > max_pixels:
    raise ImageError(
        f"{path}: refused: the header declares {width}x{height} = "
        f"{width * height} pixels, above the limit of {max_pixels} "
        f"(--max_pixels); not decoded")


def read_image(path: str, max_pixels: Optional[int] = DEFAULT_MAX_PIXELS
              ) -> np.ndarray:
  """Reads an image file as uint8 RGB [height, width, 3], defensively.

  The header is read first: a file declaring more than `max_pixels` pixels
  (a decompression bomb, or just too large) is refused before decoding.
  EXIF orientation is applied, alpha is dropped (the color channels are
  kept as they are), palette, grayscale, CMYK and other modes are
  converted to RGB, 16-bit samples are scaled to 8 bits (v / 257, rounded)
  and animations give their first frame.

  Args:
    path: the image file.
    max_pixels: the largest width * height accepted; None: no limit.

  Returns:
    uint8 [height, width, 3].

  Raises:
    ImageError: empty, not an image, too large, truncated or corrupt, or a
      mode without an RGB conversion; the message names the file.
  """
  if max_pixels is not None:
    check_positive_int("max_pixels", max_pixels)
  from PIL import ImageOps  # pylint: disable=g-import-not-at-top
  from PIL import UnidentifiedImageError  # pylint: disable=g-import-not-at-top
  try:
    size = os.path.getsize(path)
  except OSError as e:
    raise ImageError(f"{path}: cannot read it ({e.strerror or e})") from e
  if size == 0:
    raise ImageError(f"{path}: empty file (0 bytes)")
  try:
    with open(path, "rb") as f:
      head = f.read(26)
  except OSError as e:
    raise ImageError(f"{path}: cannot read it ({e.strerror or e})") from e
  # Our own header reading first: Pillow does not identify a PNG whose
  # header is followed by nothing, yet its declared size is the story.
  declared = declared_size(head)
  if declared is not None:
    _check_pixels(path, *declared, max_pixels)
  previous_limit = Image.MAX_IMAGE_PIXELS
  try:
    # Our own limit applies (below); Pillow's would warn or refuse first.
    Image.MAX_IMAGE_PIXELS = None
    with Image.open(path) as image:
      width, height = image.size
      _check_pixels(path, width, height, max_pixels)
      if width < 1 or height < 1:
        raise ImageError(f"{path}: the header declares an empty image "
                         f"({width}x{height})")
      image.load()
      image = ImageOps.exif_transpose(image)
      if image.mode in _SIXTEEN_BIT_MODES:
        samples = np.asarray(image).astype(np.float64)
        if image.mode == "I" and samples.max(initial=0) > 65535:
          raise ImageError(f"{path}: 32-bit integer samples (mode I) "
                           f"beyond 16 bits are not supported")
        gray = np.clip(np.round(samples / 257.0), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=-1)
      if image.mode == "F":
        raise ImageError(f"{path}: floating-point samples (mode F) are "
                         f"not supported")
      if image.mode == "P":
        image = image.convert("RGBA")
      rgb = np.asarray(image.convert("RGB"), dtype=np.uint8)
  except ImageError:
    raise
  except UnidentifiedImageError as e:
    raise ImageError(f"{path}: not an image (no known format "
                     f"recognised)") from e
  except Image.DecompressionBombError as e:
    raise ImageError(f"{path}: refused as a decompression bomb: "
                     f"{e}") from e
  except (OSError, SyntaxError, ValueError, EOFError) as e:
    raise ImageError(f"{path}: truncated or corrupt image data "
                     f"({type(e).__name__}: {e})") from e
  finally:
    Image.MAX_IMAGE_PIXELS = previous_limit
  if rgb.ndim != 3 or rgb.shape[-1] != 3:
    raise ImageError(f"{path}: decoded to shape {rgb.shape}, not RGB")
  return rgb


def _write_json(content: Any, path: str) -> None:
  io_lib.write_text_atomically(path, json.dumps(content, indent=1))


class SavedModelPredictor:
  """Runs `serving_default` of an export on single images."""

  def __init__(self, export_dir: str):
    """Loads the SavedModel and its serving description.

    Raises:
      FileNotFoundError: not an export of export_module.
    """
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    self._tf = tf
    self.config = export_module.read_serving_config(export_dir)
    self._loaded = tf.saved_model.load(export_dir)
    name = export_module.SIGNATURE_NAMES["image_tensor"]
    if name not in self._loaded.signatures:
      raise ValueError(f"{export_dir} has no {name!r} signature; it has "
                       f"{sorted(self._loaded.signatures)}.")
    self._fn = self._loaded.signatures[name]
    self._input_name = export_module.INPUT_NAMES["image_tensor"]

  @property
  def task(self) -> str:
    return self.config["task"]

  def predict(self, image: np.ndarray) -> Dict[str, np.ndarray]:
    """Outputs for one uint8 [height, width, 3] image, batch axis removed."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
      raise ValueError(f"image must be uint8 [height, width, 3], got dtype "
                       f"{image.dtype} and shape {image.shape}.")
    outputs = self._fn(**{self._input_name: self._tf.constant(image[None])})
    return {k: v.numpy()[0] for k, v in outputs.items()}


Predictor = Union[SavedModelPredictor, "portable_export.PortablePredictor"]


def load_predictor(path: str, num_threads: Optional[int] = None
                  ) -> "Predictor":
  """A SavedModel export folder, or a .tflite / .onnx export file.

  LiteRT and ONNX files run through `portable_export.PortablePredictor`
  (network file + post-processing step); both have `config`, `task` and
  `predict(image)`.
  """
  if os.path.isdir(path):
    return SavedModelPredictor(path)
  if path.endswith((".tflite", ".onnx")):
    from axial_deeplab_tf.serving import portable_export  # pylint: disable=g-import-not-at-top
    return portable_export.PortablePredictor(path, num_threads)
  raise ValueError(f"{path!r} is neither a SavedModel export folder nor a "
                   f".tflite / .onnx export file.")


def load_categories(path: str) -> List[Dict[str, Any]]:
  """Reads categories: a JSON list, or a COCO JSON with a "categories" list.

  Position k of the list describes train id k.
  """
  with open(path) as f:
    content = json.load(f)
  if isinstance(content, Mapping):
    if "categories" not in content:
      raise ValueError(f"{path} holds a JSON object without 'categories'.")
    content = content["categories"]
  coco_panoptic_format.check_categories(content)
  return [dict(c) for c in content]


def categories_for(config: Mapping[str, Any],
                   categories: Optional[Sequence[Mapping[str, Any]]] = None
                  ) -> List[Dict[str, Any]]:
  """COCO categories (position = train id) of an export.

  From `categories` if given (checked against the export's class count and
  thing classes), else from the dataset metadata stored in the export, else
  generic ones: id = train id, name "class_<id>".
  """
  num_classes = config["num_classes"]
  things = set(config.get("thing_class_ids", []))
  if categories is not None:
    categories = [dict(c) for c in categories]
    coco_panoptic_format.check_categories(categories)
    if len(categories) != num_classes:
      raise ValueError(f"categories has {len(categories)} entries but the "
                       f"model predicts {num_classes} classes.")
    if config["task"] == "panoptic":
      given = {k for k, c in enumerate(categories) if int(c["isthing"])}
      if given != things:
        raise ValueError(f"categories mark train ids {sorted(given)} as "
                         f"things but the export's post-processor uses "
                         f"{sorted(things)}.")
    return categories
  meta = config.get("dataset")
  if meta is not None:
    thing_ids = set(meta["thing_class_ids"])
    return [{"id": meta["original_category_ids"][k],
             "name": meta["class_names"][k],
             "isthing": int(k in thing_ids),
             "color": list(meta["colors"][k])} for k in range(num_classes)]
  colors = visualization.palette(num_classes)
  return [{"id": k, "name": f"class_{k}", "isthing": int(k in things),
           "color": [int(v) for v in colors[k]]} for k in range(num_classes)]


class PredictionWriter:
  """Writes overlays, COCO panoptic files and label maps of predictions."""

  def __init__(self,
               output_dir: str,
               config: Mapping[str, Any],
               categories: Sequence[Mapping[str, Any]],
               save_semantic: bool = False,
               save_instance: bool = False,
               overlay_alpha: float = 0.5):
    """Creates the writer.

    Args:
      output_dir: output folder (created).
      config: the export's serving description.
      categories: from `categories_for`.
      save_semantic: panoptic models: also write semantic maps.
      save_instance: panoptic models: also write instance maps.
      overlay_alpha: weight of the colors in the overlays.
    """
    if not 0.0 <= overlay_alpha <= 1.0:
      raise ValueError(f"overlay_alpha must be in [0, 1], got "
                       f"{overlay_alpha!r}.")
    self.output_dir = output_dir
    self.config = dict(config)
    self.task = config["task"]
    self.categories = [dict(c) for c in categories]
    fallback = visualization.palette(len(self.categories))
    self.colors = [
        tuple(int(v) for v in c["color"]) if len(c.get("color", ())) == 3
        else tuple(int(v) for v in fallback[k])
        for k, c in enumerate(self.categories)
    ]
    self.save_semantic = save_semantic or self.task == "semantic"
    self.save_instance = save_instance
    self.overlay_alpha = overlay_alpha
    self.annotations: List[Dict[str, Any]] = []
    self.images: List[Dict[str, Any]] = []
    self.classifications: List[Dict[str, Any]] = []
    os.makedirs(output_dir, exist_ok=True)

  def _path(self, folder: str, name: str) -> str:
    path = os.path.join(self.output_dir, folder, f"{name}.png")
    root = os.path.realpath(self.output_dir)
    if os.path.commonpath([root, os.path.realpath(path)]) != root:
      raise ValueError(f"output name {name!r} would write {path}, outside "
                       f"the output folder {self.output_dir}.")
    return path

  def _label_png(self, labels: np.ndarray) -> np.ndarray:
    labels = labels.astype(np.int64)
    if labels.min() < 0 or labels.max() > 65535:
      raise ValueError(f"labels in [{labels.min()}, {labels.max()}] do not "
                       f"fit a 16-bit PNG.")
    return labels.astype(np.uint8 if labels.max() <= 255 else np.uint16)

  def write(self, name: str, file_name: str, image: np.ndarray,
            outputs: Mapping[str, np.ndarray]) -> None:
    """Writes the files of one image.

    Args:
      name: output name (unique per run), also the image id.
      file_name: the source image's file name (for the JSON images list).
      image: uint8 [height, width, 3].
      outputs: the export's outputs for this image (batch axis removed).
    """
    height, width = image.shape[:2]
    if not name or name in (".", "..") or os.sep in name or (
        os.altsep and os.altsep in name):
      raise ValueError(f"output name {name!r} must be a plain file name.")
    if self.task == "classification":
      probs = np.asarray(outputs["probabilities"])
      top = int(outputs["classes"])
      self.classifications.append({
          "image_id": name, "file_name": file_name, "class_id": top,
          "class_name": self.categories[top]["name"],
          "category_id": self.categories[top]["id"],
          "probability": float(probs[top])})
      return
    semantic = np.asarray(outputs["semantic_pred"])
    if semantic.shape != (height, width):
      raise ValueError(f"prediction of shape {semantic.shape} does not match "
                       f"the image size {(height, width)}.")
    entry = {"id": name, "file_name": file_name, "height": height,
             "width": width}
    if self.task == "semantic":
      dataset = self.config.get("dataset") or {}
      ignore = int(dataset.get("ignore_label", 255))
      overlay = visualization.semantic_overlay(
          image, semantic, self.colors, ignore, self.overlay_alpha)
      visualization.save_png(self._label_png(semantic),
                             self._path("semantic", name))
      visualization.save_png(overlay, self._path("overlays", name))
      self.images.append(entry)
      return
    panoptic = np.asarray(outputs["panoptic_pred"])
    divisor = int(self.config["label_divisor"])
    ignore = int(self.config["ignore_label"])
    annotation = coco_panoptic_format.write_annotation(
        os.path.join(self.output_dir, "panoptic"), f"{name}.png", name,
        panoptic, self.categories, divisor, ignore, is_groundtruth=False)
    overlay = visualization.panoptic_overlay(
        image, panoptic, divisor, self.colors,
        self.config.get("thing_class_ids", []), ignore, self.overlay_alpha)
    visualization.save_png(overlay, self._path("overlays", name))
    if self.save_semantic:
      visualization.save_png(self._label_png(semantic),
                             self._path("semantic", name))
    if self.save_instance:
      visualization.save_png(
          self._label_png(np.asarray(outputs["instance_pred"])),
          self._path("instance", name))
    self.annotations.append(annotation)
    self.images.append(entry)

  def finish(self) -> Dict[str, str]:
    """Writes the JSON files; returns {kind: path}."""
    written = {}
    if self.task == "panoptic":
      path = os.path.join(self.output_dir, "panoptic.json")
      coco_panoptic_format.write_json(path, self.annotations, self.categories,
                                      images=self.images)
      written["panoptic_json"] = path
    elif self.task == "classification":
      path = os.path.join(self.output_dir, "predictions.json")
      _write_json({"predictions": self.classifications,
                          "categories": self.categories}, path)
      written["predictions_json"] = path
    return written


@dataclasses.dataclass
class PredictionSummary:
  """What `predict_files` did.

  Attributes:
    predicted: images written.
    failures: (path, reason) of every image that failed.
    written: {kind: path} of the JSON files (from PredictionWriter.finish).
    seconds: wall time.
  """
  predicted: int
  failures: List[Tuple[str, str]]
  written: Dict[str, str]
  seconds: float


def predict_files(images: Mapping[str, str],
                  runner: "Predictor",
                  writer: PredictionWriter,
                  progress: Optional[Callable[..., None]] = None,
                  max_pixels: Optional[int] = DEFAULT_MAX_PIXELS
                 ) -> PredictionSummary:
  """Predicts image files one by one; a failing image does not stop the rest.

  Args:
    images: {output name: path}, e.g. from `cli.find_files`.
    runner: the loaded export.
    writer: where the results go; finished (JSON written) at the end.
    progress: optional callable(done, text="", message="") called after
      every image (e.g. `cli.ProgressBar.update`); failures come as
      `message`.
    max_pixels: images declaring more pixels are refused unread (see
      `read_image`).

  Returns:
    A PredictionSummary.
  """
  start = time.monotonic()
  failures = []
  for done, (name, path) in enumerate(images.items(), 1):
    began = time.monotonic()
    try:
      image = read_image(path, max_pixels)
      outputs = runner.predict(image)
      writer.write(name, os.path.basename(path), image, outputs)
    except Exception as e:  # pylint: disable=broad-except
      # One bad image must not stop the others; every failure is reported.
      reason = " ".join(f"{type(e).__name__}: {e}".split())[:500]
      failures.append((path, reason))
      if progress is not None:
        progress(done, message=f"{path}: FAILED: {reason}")
      continue
    if progress is not None:
      progress(done, text=f"{path} ({time.monotonic() - began:.2f} s)")
  written = writer.finish()
  return PredictionSummary(predicted=len(images) - len(failures),
                           failures=failures, written=written,
                           seconds=time.monotonic() - start)
