"""Pictures of predictions: colorized label maps, overlays, attention maps.

Pure numpy (plus Pillow for text and PNG files and matplotlib for a color
map), so tools and notebooks can use it without TensorFlow. Every picture is
a uint8 RGB array [height, width, 3].

Panoptic coloring: stuff segments and crowd regions take their class color;
each thing instance takes its class color shifted by a deterministic
per-instance offset of at most 48 per channel, reflected where it would
leave 0..255 (so instances of a class differ from the class color and from
each other, and the same id always looks the same); void pixels take
`void_color`.
"""

from typing import Optional, Sequence, Tuple

import numpy as np

from axial_deeplab_tf.attention_math import check_positive_int
from axial_deeplab_tf.utils.io import write_atomically

Color = Tuple[int, int, int]


def _check_image(image: np.ndarray, name: str = "image") -> np.ndarray:
  image = np.asarray(image)
  if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
    raise ValueError(f"{name} must be a uint8 [height, width, 3] array, got "
                     f"dtype {image.dtype} and shape {image.shape}.")
  return image


def _check_label_map(labels: np.ndarray, name: str) -> np.ndarray:
  labels = np.asarray(labels)
  if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(f"{name} must be an integer [height, width] array, got "
                     f"dtype {labels.dtype} and shape {labels.shape}.")
  return labels.astype(np.int64)


def _check_colors(colors: Sequence[Color]) -> np.ndarray:
  table = np.asarray(colors)
  if table.ndim != 2 or table.shape[1] != 3 or table.shape[0] == 0 or (
      table.min() < 0 or table.max() > 255):
    raise ValueError(f"colors must be a non-empty list of RGB triples in "
                     f"0..255, got an array of shape {table.shape}.")
  return table.astype(np.int64)


def save_png(array: np.ndarray, path: str) -> None:
  """Writes a uint8/uint16 image array as PNG, atomically.

  Args:
    array: uint8 [height, width, 3] or [height, width], or uint16
      [height, width] (16-bit label maps).
    path: output file; its folder is created.
  """
  from PIL import Image  # pylint: disable=g-import-not-at-top
  array = np.asarray(array)
  if array.dtype not in (np.uint8, np.uint16) or array.ndim not in (2, 3) or (
      array.ndim == 3 and (array.shape[-1] != 3 or array.dtype != np.uint8)):
    raise ValueError(f"array must be uint8 [height, width, 3] or uint8/uint16"
                     f" [height, width], got dtype {array.dtype} and shape "
                     f"{array.shape}.")
  write_atomically(path, lambda tmp: Image.fromarray(array).save(
      tmp, format="PNG"))


def palette(num_colors: int) -> np.ndarray:
  """Distinct deterministic colors: hues spaced by the golden angle.

  Args:
    num_colors: how many colors.

  Returns:
    uint8 [num_colors, 3].
  """
  check_positive_int("num_colors", num_colors)
  hue = (np.arange(num_colors) * 0.618033988749895) % 1.0
  # Alternate two value levels so that consecutive classes also differ in
  # brightness.
  value = np.where(np.arange(num_colors) % 2 == 0, 0.95, 0.7)
  saturation = 0.75
  i = np.floor(hue * 6).astype(int) % 6
  f = hue * 6 - np.floor(hue * 6)
  p = value * (1 - saturation)
  q = value * (1 - f * saturation)
  t = value * (1 - (1 - f) * saturation)
  rgb = np.select([i[:, None] == k for k in range(6)], [
      np.stack([value, t, p], -1), np.stack([q, value, p], -1),
      np.stack([p, value, t], -1), np.stack([p, q, value], -1),
      np.stack([t, p, value], -1), np.stack([value, p, q], -1)
  ])
  return np.round(rgb * 255).astype(np.uint8)


def colorize_semantic(semantic: np.ndarray,
                      colors: Sequence[Color],
                      ignore_label: int = 255,
                      void_color: Color = (0, 0, 0)) -> np.ndarray:
  """Paints each class with its color.

  Args:
    semantic: integer [height, width] class ids in 0..len(colors)-1 or
      ignore_label.
    colors: RGB color of each class.
    ignore_label: class id painted with void_color.
    void_color: RGB of ignored pixels.

  Returns:
    uint8 [height, width, 3].

  Raises:
    ValueError: a class id without a color.
  """
  semantic = _check_label_map(semantic, "semantic")
  table = _check_colors(colors)
  void = semantic == ignore_label
  bad = ~void & ((semantic < 0) | (semantic >= len(table)))
  if bad.any():
    raise ValueError(f"semantic holds class ids {np.unique(semantic[bad])[:10]}"
                     f" outside 0..{len(table) - 1} and the ignore label "
                     f"{ignore_label}.")
  out = table[np.where(void, 0, semantic)]
  out[void] = void_color
  return out.astype(np.uint8)


def instance_color_offsets(instance_ids: np.ndarray) -> np.ndarray:
  """Deterministic RGB offsets in -48..48 for instance ids (0 -> no offset).

  Args:
    instance_ids: integer array of any shape.

  Returns:
    int64 array [..., 3].
  """
  ids = np.asarray(instance_ids, np.int64)
  # Multipliers coprime with 97: no positive id gets a zero offset on all
  # three channels.
  multipliers = np.array([41, 59, 31], np.int64)
  offsets = (ids[..., None] * multipliers) % 97 - 48
  return np.where(ids[..., None] > 0, offsets, 0)


def colorize_panoptic(panoptic: np.ndarray,
                      label_divisor: int,
                      colors: Sequence[Color],
                      thing_class_ids: Sequence[int] = (),
                      ignore_label: int = 255,
                      void_color: Color = (0, 0, 0)) -> np.ndarray:
  """Paints panoptic ids: class colors, thing instances shaded apart.

  Args:
    panoptic: integer [height, width] ids semantic * label_divisor +
      instance.
    label_divisor: panoptic id divisor.
    colors: RGB color of each class.
    thing_class_ids: classes whose instances get their own shade.
    ignore_label: semantic id painted with void_color.
    void_color: RGB of void pixels.

  Returns:
    uint8 [height, width, 3].
  """
  panoptic = _check_label_map(panoptic, "panoptic")
  check_positive_int("label_divisor", label_divisor)
  semantic = panoptic // label_divisor
  instance = panoptic % label_divisor
  out = colorize_semantic(semantic, colors, ignore_label,
                          void_color).astype(np.int64)
  is_thing = np.isin(semantic, np.asarray(list(thing_class_ids), np.int64))
  shaded = is_thing & (instance > 0) & (semantic != ignore_label)
  offsets = instance_color_offsets(instance)
  moved = out + offsets
  # A channel that would leave 0..255 moves the other way instead, so every
  # instance color differs from its class color.
  moved = np.where((moved < 0) | (moved > 255), out - offsets, moved)
  out = np.where(shaded[..., None], moved, out)
  return out.astype(np.uint8)


def overlay(image: np.ndarray,
            color_map: np.ndarray,
            alpha: float = 0.5,
            mask: Optional[np.ndarray] = None) -> np.ndarray:
  """Blends color_map over image: round((1 - alpha) image + alpha color).

  Args:
    image: uint8 [height, width, 3].
    color_map: uint8 [height, width, 3].
    alpha: weight of the color map, in [0, 1].
    mask: optional bool [height, width]; pixels outside keep the image.

  Returns:
    uint8 [height, width, 3].
  """
  image = _check_image(image)
  color_map = _check_image(color_map, "color_map")
  if image.shape != color_map.shape:
    raise ValueError(f"image {image.shape} and color_map {color_map.shape} "
                     f"must have the same shape.")
  if not 0.0 <= alpha <= 1.0:
    raise ValueError(f"alpha must be in [0, 1], got {alpha!r}.")
  blend = np.round(image.astype(np.float64) * (1.0 - alpha) +
                   color_map.astype(np.float64) * alpha).astype(np.uint8)
  if mask is None:
    return blend
  mask = np.asarray(mask, bool)
  if mask.shape != image.shape[:2]:
    raise ValueError(f"mask must have shape {image.shape[:2]}, got "
                     f"{mask.shape}.")
  return np.where(mask[..., None], blend, image)


def segment_boundaries(ids: np.ndarray) -> np.ndarray:
  """Pixels whose right or lower neighbour belongs to another segment.

  Both pixels of a differing pair are marked, so boundaries are two pixels
  wide and symmetric.

  Args:
    ids: integer [height, width] segment ids.

  Returns:
    bool [height, width].
  """
  ids = _check_label_map(ids, "ids")
  edge = np.zeros(ids.shape, bool)
  dx = ids[:, 1:] != ids[:, :-1]
  dy = ids[1:, :] != ids[:-1, :]
  edge[:, 1:] |= dx
  edge[:, :-1] |= dx
  edge[1:, :] |= dy
  edge[:-1, :] |= dy
  return edge


def panoptic_overlay(image: np.ndarray,
                     panoptic: np.ndarray,
                     label_divisor: int,
                     colors: Sequence[Color],
                     thing_class_ids: Sequence[int] = (),
                     ignore_label: int = 255,
                     alpha: float = 0.5,
                     boundary_color: Optional[Color] = (255, 255, 255)
                    ) -> np.ndarray:
  """The image with colorized segments blended over it and their outlines.

  Void pixels keep the image. Returns uint8 [height, width, 3].
  """
  image = _check_image(image)
  panoptic = _check_label_map(panoptic, "panoptic")
  if panoptic.shape != image.shape[:2]:
    raise ValueError(f"panoptic {panoptic.shape} must match the image size "
                     f"{image.shape[:2]}.")
  colored = colorize_panoptic(panoptic, label_divisor, colors,
                              thing_class_ids, ignore_label)
  void = panoptic // label_divisor == ignore_label
  out = overlay(image, colored, alpha, mask=~void)
  if boundary_color is not None:
    out[segment_boundaries(panoptic)] = boundary_color
  return out


def semantic_overlay(image: np.ndarray,
                     semantic: np.ndarray,
                     colors: Sequence[Color],
                     ignore_label: int = 255,
                     alpha: float = 0.5,
                     boundary_color: Optional[Color] = (255, 255, 255)
                    ) -> np.ndarray:
  """The image with class colors blended over it; uint8 [h, w, 3]."""
  image = _check_image(image)
  semantic = _check_label_map(semantic, "semantic")
  if semantic.shape != image.shape[:2]:
    raise ValueError(f"semantic {semantic.shape} must match the image size "
                     f"{image.shape[:2]}.")
  colored = colorize_semantic(semantic, colors, ignore_label)
  out = overlay(image, colored, alpha, mask=semantic != ignore_label)
  if boundary_color is not None:
    out[segment_boundaries(semantic)] = boundary_color
  return out


def _heat_colors(values: np.ndarray) -> np.ndarray:
  """Maps values in [0, 1] to RGB uint8 with matplotlib's inferno map."""
  from matplotlib import colormaps  # pylint: disable=g-import-not-at-top
  rgba = colormaps["inferno"](np.clip(values, 0.0, 1.0))
  return np.round(rgba[..., :3] * 255).astype(np.uint8)


def axis_band_overlay(image: np.ndarray,
                      weights: np.ndarray,
                      axis: str,
                      query: Tuple[int, int],
                      feature_size: Tuple[int, int],
                      dim: float = 0.35) -> np.ndarray:
  """Draws one axial attention map over the image.

  The image is dimmed; the band of feature cells that holds the query pixel
  (its feature column for the height axis, its feature row for the width
  axis) is painted with the attention weights (inferno color map, scaled to
  the largest weight); the query pixel is marked with a cross.

  Args:
    image: uint8 [height, width, 3].
    weights: [feature_length] attention weights along the axis.
    axis: "height" or "width".
    query: (y, x) query pixel in image coordinates.
    feature_size: (feature_height, feature_width) of the attention layer;
      image pixel y lies in feature row floor(y * feature_height / height).
    dim: brightness factor of the image outside the band.

  Returns:
    uint8 [height, width, 3].
  """
  image = _check_image(image)
  height, width = image.shape[:2]
  fh, fw = (int(v) for v in feature_size)
  weights = np.asarray(weights, np.float64)
  if axis not in ("height", "width"):
    raise ValueError(f"axis must be 'height' or 'width', got {axis!r}.")
  expected = fh if axis == "height" else fw
  if weights.shape != (expected,):
    raise ValueError(f"weights of the {axis} axis must have shape "
                     f"({expected},), got {weights.shape}.")
  y, x = (int(v) for v in query)
  if not (0 <= y < height and 0 <= x < width):
    raise ValueError(f"query {query} is outside the image {height}x{width}.")
  rows = np.minimum(np.arange(height) * fh // height, fh - 1)
  cols = np.minimum(np.arange(width) * fw // width, fw - 1)
  scale = weights.max() if weights.max() > 0 else 1.0
  out = np.round(image.astype(np.float64) * dim).astype(np.uint8)
  if axis == "height":
    band = cols == cols[x]
    heat = _heat_colors(weights[rows] / scale)  # [height, 3]
    out[:, band] = heat[:, None, :]
  else:
    band = rows == rows[y]
    heat = _heat_colors(weights[cols] / scale)  # [width, 3]
    out[band, :] = heat[None, :, :]
  arm = max(2, min(height, width) // 40)
  out[max(0, y - arm):y + arm + 1, x] = (0, 255, 0)
  out[y, max(0, x - arm):x + arm + 1] = (0, 255, 0)
  return out


def attention_figure(image: np.ndarray,
                     height_weights: np.ndarray,
                     width_weights: np.ndarray,
                     query: Tuple[int, int],
                     feature_size: Tuple[int, int],
                     title: str = "") -> np.ndarray:
  """Height-axis and width-axis maps side by side with captions.

  Returns:
    uint8 [height + 28, 2 * width + 8, 3] (height + 16 without a title).
  """
  from PIL import Image, ImageDraw  # pylint: disable=g-import-not-at-top
  left = axis_band_overlay(image, height_weights, "height", query,
                           feature_size)
  right = axis_band_overlay(image, width_weights, "width", query,
                            feature_size)
  height, width = left.shape[:2]
  gap = 8
  caption = 28 if title else 16
  canvas = np.full((height + caption, 2 * width + gap, 3), 255, np.uint8)
  canvas[caption:, :width] = left
  canvas[caption:, width + gap:] = right
  picture = Image.fromarray(canvas)
  draw = ImageDraw.Draw(picture)
  if title:
    draw.text((2, 2), title, fill=(0, 0, 0))
  draw.text((2, caption - 13), "height axis", fill=(0, 0, 0))
  draw.text((width + gap + 2, caption - 13), "width axis", fill=(0, 0, 0))
  return np.asarray(picture)
