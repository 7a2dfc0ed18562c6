"""A synthetic panoptic dataset written in real COCO panoptic format.

The quickstart's data: three textured stuff classes (sky, grass, road) and
three thing classes with distinct shapes and colors (red circles, yellow
squares, purple triangles) at random sizes, some touching, some partly
occluding others, and now and then a crowd cluster. Colors are far apart and
instances moderately large, so a small model learns it in minutes on a CPU.

Written layout (COCO-like), for each split ("train", "val"):
  {output_dir}/{split}/{image_id:06d}.png|jpg              images
  {output_dir}/annotations/panoptic_{split}/{image_id:06d}.png   panoptic PNGs
  {output_dir}/annotations/panoptic_{split}.json           COCO panoptic JSON
  {output_dir}/categories.json                              the category list

Everything is deterministic given the seed: image i of a split depends only
on (seed, split, i), not on how many images are generated.
"""

import json
import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from axial_deeplab_tf.utils import io as io_lib


def make_categories(rows: Sequence[Tuple[int, str, int, Tuple[int, int, int],
                                         str]]) -> Tuple[Dict[str, Any], ...]:
  """COCO panoptic categories from (id, name, isthing, color, supercategory)
  rows."""
  return tuple({"id": i, "name": name, "isthing": isthing,
                "color": list(color), "supercategory": supercategory}
               for i, name, isthing, color, supercategory in rows)


CATEGORIES = make_categories([
    (1, "circle", 1, (220, 40, 40), "shape"),
    (2, "square", 1, (245, 205, 30), "shape"),
    (3, "triangle", 1, (150, 50, 220), "shape"),
    (11, "sky", 0, (120, 185, 245), "background"),
    (12, "grass", 0, (55, 145, 55), "background"),
    (13, "road", 0, (95, 95, 95), "background")])
_SHAPES = {1: "circle", 2: "square", 3: "triangle"}
_SKY, _GRASS, _ROAD = 11, 12, 13
SPLITS = ("train", "val")

# Reference image area for the default minimum visible instance area.
_REFERENCE_AREA = 128 * 128


def check_scene_args(height: int, width: int, min_size: int,
                     min_instances: int, max_instances: int) -> None:
  """ValueError unless the image is at least min_size square and
  0 <= min_instances <= max_instances."""
  if height < min_size or width < min_size:
    raise ValueError(f"image size must be at least {min_size}x{min_size}, "
                     f"got {height}x{width}.")
  if not 0 <= min_instances <= max_instances:
    raise ValueError(f"need 0 <= min_instances <= max_instances, got "
                     f"{min_instances}, {max_instances}.")


def _color(category_id: int) -> np.ndarray:
  for c in CATEGORIES:
    if c["id"] == category_id:
      return np.array(c["color"], dtype=np.float32)
  raise KeyError(category_id)


def _shape_mask(shape: str, cy: float, cx: float, radius: float, angle: float,
                yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
  """Boolean mask of a circle, rotated square or rotated triangle."""
  dy, dx = yy - cy, xx - cx
  if shape == "circle":
    return dy * dy + dx * dx <= radius * radius
  u = np.cos(angle) * dx + np.sin(angle) * dy
  v = -np.sin(angle) * dx + np.cos(angle) * dy
  if shape == "square":
    half = radius * 0.85
    return (np.abs(u) <= half) & (np.abs(v) <= half)
  # Equilateral triangle with circumradius `radius`: inside all three edges,
  # each edge at distance radius / 2 from the center.
  inside = np.ones_like(u, dtype=bool)
  for k in range(3):
    a = 2.0 * np.pi * k / 3.0
    inside &= np.cos(a) * u + np.sin(a) * v <= radius * 0.5
  return inside


def _boundary(mask: np.ndarray) -> np.ndarray:
  """Pixels of `mask` with a 4-neighbour outside it."""
  padded = np.pad(mask, 1, constant_values=False)
  eroded = (padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2]
            & padded[1:-1, 2:] & mask)
  return mask & ~eroded


def _smooth_noise(rng: np.random.Generator, height: int, width: int,
                  cell: int) -> np.ndarray:
  """Blotchy noise: coarse normal noise upsampled by `cell` pixels."""
  coarse = rng.normal(size=(height // cell + 2, width // cell + 2))
  fine = np.kron(coarse, np.ones((cell, cell)))
  return fine[:height, :width]


def _stuff_layout(rng: np.random.Generator, height: int,
                  width: int) -> np.ndarray:
  """Category id per pixel: sky above a wavy horizon, grass and a road."""
  yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
  horizon = (rng.uniform(0.25, 0.5) * height
             + 0.05 * height * np.sin(2 * np.pi * xx / width
                                      * rng.uniform(0.5, 2.0)
                                      + rng.uniform(0, 2 * np.pi)))
  layout = np.full((height, width), _GRASS, dtype=np.int32)
  layout[yy < horizon] = _SKY
  if rng.uniform() < 0.8:
    # A road narrowing towards the horizon.
    top = float(horizon.min())
    cx_bottom = rng.uniform(0.3, 0.7) * width
    cx_top = cx_bottom + rng.uniform(-0.2, 0.2) * width
    half_bottom = rng.uniform(0.2, 0.35) * width
    half_top = rng.uniform(0.02, 0.06) * width
    t = np.clip((yy - top) / max(height - top, 1.0), 0.0, 1.0)
    center = cx_top + (cx_bottom - cx_top) * t
    half = half_top + (half_bottom - half_top) * t
    layout[(yy >= horizon) & (np.abs(xx - center) <= half)] = _ROAD
  return layout


def _stuff_texture(rng: np.random.Generator, layout: np.ndarray) -> np.ndarray:
  height, width = layout.shape
  image = np.zeros((height, width, 3), dtype=np.float32)
  rows = np.linspace(-1.0, 1.0, height, dtype=np.float32)[:, None, None]
  textures = {
      # Sky: vertical gradient, little noise.
      _SKY: _color(_SKY) + 20.0 * rows + rng.normal(0, 3, (height, width, 1)),
      # Grass: blotchy, grainy texture.
      _GRASS: (_color(_GRASS)
               + 14.0 * _smooth_noise(rng, height, width, 6)[:, :, None]
               + rng.normal(0, 10, (height, width, 1))),
      # Road: fine grain.
      _ROAD: _color(_ROAD) + rng.normal(0, 6, (height, width, 1)),
  }
  for category_id, texture in textures.items():
    mask = layout == category_id
    image[mask] = np.broadcast_to(texture, (height, width, 3))[mask]
  return image


def render_example(rng: np.random.Generator, height: int = 128,
                   width: int = 128, min_instances: int = 3,
                   max_instances: int = 8, crowd_probability: float = 0.1,
                   min_visible_area: Optional[int] = None
                   ) -> Tuple[np.ndarray, np.ndarray, List[Dict[str, Any]]]:
  """Draws one synthetic image with its segment id map.

  Args:
    rng: numpy random generator (all randomness comes from it).
    height, width: image size.
    min_instances, max_instances: range of thing instances (crowd excluded).
    crowd_probability: chance of one crowd cluster in the image.
    min_visible_area: smallest visible area of an instance in pixels;
      default 60 at 128x128, scaled with the image area.

  Returns:
    image: uint8 [height, width, 3].
    segment_ids: int32 [height, width]; every pixel belongs to a segment.
    segments: dicts with "id", "category_id", "iscrowd", in id order.
  """
  check_scene_args(height, width, 16, min_instances, max_instances)
  if min_visible_area is None:
    min_visible_area = max(20, int(60 * height * width / _REFERENCE_AREA))
  yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
  layout = _stuff_layout(rng, height, width)
  image = _stuff_texture(rng, layout)
  size = min(height, width)

  # Things, bottom to top: (category, mask, iscrowd).
  objects: List[Tuple[int, np.ndarray, int]] = []
  centers: List[Tuple[float, float, float]] = []
  if rng.uniform() < crowd_probability:
    category = int(rng.choice(list(_SHAPES)))
    r = 0.045 * size
    cy, cx = rng.uniform(0.3, 0.8) * height, rng.uniform(0.2, 0.8) * width
    mask = np.zeros((height, width), dtype=bool)
    for k in range(int(rng.integers(4, 7))):
      a = 2 * np.pi * k / 6 + rng.uniform(-0.2, 0.2)
      mask |= _shape_mask(_SHAPES[category], cy + 1.9 * r * np.sin(a),
                          cx + 1.9 * r * np.cos(a), r, a, yy, xx)
    objects.append((category, mask, 1))

  target = int(rng.integers(min_instances, max_instances + 1))
  attempts = 0
  while len(centers) < target and attempts < 6 * max(target, 1):
    attempts += 1
    category = int(rng.choice(list(_SHAPES)))
    r = rng.uniform(0.07, 0.16) * size
    placement = rng.uniform()
    if centers and placement < 0.35:
      # Touching a previous instance.
      py, px, pr = centers[int(rng.integers(len(centers)))]
      a = rng.uniform(0, 2 * np.pi)
      cy, cx = py + (pr + r) * np.sin(a), px + (pr + r) * np.cos(a)
    elif centers and placement < 0.6:
      # Partly occluding a previous instance.
      py, px, pr = centers[int(rng.integers(len(centers)))]
      a = rng.uniform(0, 2 * np.pi)
      cy, cx = py + 0.7 * (pr + r) * np.sin(a), px + 0.7 * (pr + r) * np.cos(a)
    else:
      cy, cx = rng.uniform(0.1, 0.9) * height, rng.uniform(0.1, 0.9) * width
    mask = _shape_mask(_SHAPES[category], cy, cx, r,
                       rng.uniform(0, 2 * np.pi), yy, xx)
    if mask.sum() < min_visible_area:
      continue
    # Keep every earlier instance well visible under the new one.
    ok = True
    for _, other, _ in objects:
      remaining = other & ~mask
      if remaining.sum() < max(min_visible_area, 0.4 * other.sum()):
        ok = False
        break
    if not ok:
      continue
    objects = [(c, m & ~mask, crowd) for c, m, crowd in objects]
    objects.append((category, mask, 0))
    centers.append((cy, cx, r))

  segment_ids = np.zeros((height, width), dtype=np.int32)
  segments: List[Dict[str, Any]] = []
  thing_pixels = np.zeros((height, width), dtype=bool)
  for _, mask, _ in objects:
    thing_pixels |= mask
  for category in (_SKY, _GRASS, _ROAD):
    add_segment(segment_ids, segments, (layout == category) & ~thing_pixels,
                category)
  for category, mask, crowd in objects:
    if not add_segment(segment_ids, segments, mask, category, crowd):
      continue
    shade = rng.uniform(-20, 20)
    color = _color(category) + shade
    fill = color + rng.normal(0, 5, (height, width, 1))
    image[mask] = fill[mask]
    # A darker outline lets touching instances of a class be told apart.
    edge = _boundary(mask)
    image[edge] = 0.55 * color
  return (np.clip(np.round(image), 0, 255).astype(np.uint8), segment_ids,
          segments)


def add_segment(segment_ids: np.ndarray, segments: List[Dict[str, Any]],
                mask: np.ndarray, category_id: int, iscrowd: int = 0) -> bool:
  """Gives the pixels of `mask` the next segment id, unless it is empty.

  Args:
    segment_ids: int32 [height, width] id map, updated in place.
    segments: the segments so far (dicts with "id", "category_id",
      "iscrowd"), appended to in place; ids are 1, 2, ... in order.
    mask: bool [height, width] pixels of the new segment.
    category_id: its category.
    iscrowd: 1 for a crowd region.

  Returns:
    Whether a segment was added (False for an empty mask).
  """
  if not mask.any():
    return False
  segments.append({"id": len(segments) + 1, "category_id": category_id,
                   "iscrowd": iscrowd})
  segment_ids[mask] = len(segments)
  return True


def segment_ids_to_rgb(segment_ids: np.ndarray) -> np.ndarray:
  """COCO panoptic PNG colors: id = R + 256 G + 256^2 B."""
  ids = segment_ids.astype(np.int64)
  return np.stack([ids % 256, (ids // 256) % 256, (ids // 65536) % 256],
                  axis=-1).astype(np.uint8)


def _bbox(mask: np.ndarray) -> List[int]:
  rows, cols = np.nonzero(mask)
  return [int(cols.min()), int(rows.min()), int(cols.max() - cols.min() + 1),
          int(rows.max() - rows.min() + 1)]


def split_index(split: str) -> int:
  """A number per split name, stable across Python runs (unlike hash())."""
  return sum(ord(c) * 31**i for i, c in enumerate(split)) % (2**31)


# render(index, height, width) -> (image uint8 [h, w, 3], segment_ids int32
# [h, w], segments, extra fields of the image's JSON entry).
Renderer = Callable[[int, int, int], Tuple[np.ndarray, np.ndarray,
                                           List[Dict[str, Any]],
                                           Dict[str, Any]]]


def write_panoptic_split(output_dir: str, split: str, num_images: int,
                         image_size: Tuple[int, int], render: Renderer,
                         categories: Sequence[Dict[str, Any]],
                         description: str,
                         image_format: str = "png") -> Dict[str, str]:
  """Writes rendered images of one split in COCO panoptic format.

  Args:
    output_dir: dataset root (layout in the module docstring).
    split: split name ("train", "val", ...).
    num_images: number of images (>= 0); image i + 1 is render(i, ...).
    image_size: (height, width).
    render: draws image `index`, see `Renderer`.
    categories: the category list written into the JSON.
    description: the JSON's info.description.
    image_format: "png" (lossless) or "jpeg" (quality 95).

  Returns:
    dict with "image_dir", "panoptic_dir", "panoptic_json".
  """
  if image_format not in ("png", "jpeg"):
    raise ValueError(f"image_format must be 'png' or 'jpeg', got "
                     f"{image_format!r}.")
  if num_images < 0:
    raise ValueError(f"num_images must be >= 0, got {num_images}.")
  height, width = image_size
  image_dir = os.path.join(output_dir, split)
  panoptic_dir = os.path.join(output_dir, "annotations", f"panoptic_{split}")
  json_path = os.path.join(output_dir, "annotations",
                           f"panoptic_{split}.json")
  os.makedirs(image_dir, exist_ok=True)
  os.makedirs(panoptic_dir, exist_ok=True)
  images, annotations = [], []
  extension = "png" if image_format == "png" else "jpg"
  for index in range(num_images):
    image, segment_ids, segments, image_fields = render(index, height, width)
    image_id = index + 1
    stem = f"{image_id:06d}"
    pil_image = Image.fromarray(image)
    if image_format == "png":
      pil_image.save(os.path.join(image_dir, f"{stem}.png"), format="PNG")
    else:
      pil_image.save(os.path.join(image_dir, f"{stem}.jpg"), format="JPEG",
                     quality=95)
    Image.fromarray(segment_ids_to_rgb(segment_ids)).save(
        os.path.join(panoptic_dir, f"{stem}.png"), format="PNG")
    segments_info = []
    for seg in segments:
      mask = segment_ids == seg["id"]
      segments_info.append(dict(seg, area=int(mask.sum()), bbox=_bbox(mask)))
    images.append(dict({"id": image_id, "file_name": f"{stem}.{extension}",
                        "height": height, "width": width}, **image_fields))
    annotations.append({"image_id": image_id, "file_name": f"{stem}.png",
                        "segments_info": segments_info})
  data = {
      "info": {"description": description},
      "licenses": [],
      "images": images,
      "annotations": annotations,
      "categories": [dict(c) for c in categories],
  }
  io_lib.write_text_atomically(json_path, json.dumps(data))
  return {"image_dir": image_dir, "panoptic_dir": panoptic_dir,
          "panoptic_json": json_path}


def write_panoptic_dataset(
    output_dir: str, categories: Sequence[Dict[str, Any]],
    splits: Sequence[str], counts: Sequence[int],
    write: Callable[[str, int], Dict[str, str]]) -> Dict[str, Any]:
  """Writes categories.json and a train and a val split.

  Args:
    output_dir: dataset root.
    categories: the category list.
    splits: the two split names (train, val).
    counts: images per split, in the order of `splits`.
    write: write(split, count) writes one split and returns its paths.

  Returns:
    {split: paths returned by `write`, "categories_json": path}.
  """
  if len(splits) != 2:
    raise ValueError(f"splits must name (train, val), got {splits!r}.")
  os.makedirs(output_dir, exist_ok=True)
  categories_json = os.path.join(output_dir, "categories.json")
  with open(categories_json, "w") as f:
    json.dump([dict(c) for c in categories], f, indent=1)
  result: Dict[str, Any] = {"categories_json": categories_json}
  for split, count in zip(splits, counts):
    result[split] = write(split, count)
  return result


def write_split(output_dir: str, split: str, num_images: int,
                image_size: Tuple[int, int], seed: int,
                image_format: str = "png", **render_kwargs) -> Dict[str, str]:
  """Writes one split in COCO panoptic format; returns its paths.

  Args:
    output_dir: dataset root.
    split: split name ("train", "val", ...).
    num_images: number of images.
    image_size: (height, width).
    seed: dataset seed.
    image_format: "png" (lossless) or "jpeg" (quality 95).
    **render_kwargs: passed to render_example.

  Returns:
    dict with "image_dir", "panoptic_dir", "panoptic_json".
  """
  stream = split_index(split)

  def render(index, height, width):
    rng = np.random.default_rng([seed, stream, index])
    return render_example(rng, height, width, **render_kwargs) + ({},)

  return write_panoptic_split(
      output_dir, split, num_images, image_size, render, CATEGORIES,
      f"synthetic panoptic shapes, split {split}, seed {seed}", image_format)


def generate_synthetic_panoptic(
    output_dir: str, num_train: int = 300, num_val: int = 50,
    image_size: Tuple[int, int] = (128, 128), seed: int = 0,
    image_format: str = "png", splits: Sequence[str] = SPLITS,
    **render_kwargs) -> Dict[str, Dict[str, str]]:
  """Writes the synthetic dataset (train and val) and categories.json.

  Args:
    output_dir: dataset root.
    num_train, num_val: images per split.
    image_size: (height, width).
    seed: dataset seed.
    image_format: "png" or "jpeg".
    splits: the two split names for (num_train, num_val).
    **render_kwargs: passed to render_example (min_instances,
      max_instances, crowd_probability, min_visible_area).

  Returns:
    {split: paths} as returned by write_split, plus "categories_json".
  """
  return write_panoptic_dataset(
      output_dir, CATEGORIES, splits, (num_train, num_val),
      lambda split, count: write_split(output_dir, split, count, image_size,
                                       seed, image_format, **render_kwargs))
