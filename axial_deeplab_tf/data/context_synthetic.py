r"""A synthetic panoptic dataset whose thing classes need image-wide context.

Each image shows neutral grey tokens (circles, squares, triangles: things)
on a textured ground (stuff), and a banner (stuff) along one randomly chosen
image side whose color is warm (orange) or cool (blue). The class of every
token is "warm_token" or "cool_token" after the banner's color: the tokens of
both classes are drawn from the same distribution of shape, size, grey level
and texture, and are kept at least `gap_fraction` of the image away from the
banner. A pixel's class can therefore only be told by looking across the
image, which is the long-range context the scale stress test of the
Axial-DeepLab paper (figure 4) is about.

Written in COCO panoptic format, same layout as `synthetic.py`:
  {output_dir}/{split}/{image_id:06d}.png                       images
  {output_dir}/annotations/panoptic_{split}/{image_id:06d}.png  panoptic PNGs
  {output_dir}/annotations/panoptic_{split}.json                COCO JSON
  {output_dir}/categories.json                                   categories
Convert with tools/build_panoptic_data.py. Deterministic: image i of a split
depends only on (seed, split, i).

  python -m axial_deeplab_tf.data.context_synthetic --output_dir=/tmp/ctx \
      --num_train=400 --num_val=48 --image_size=128
"""

import argparse
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from axial_deeplab_tf.data import synthetic

CATEGORIES = synthetic.make_categories([
    (1, "warm_token", 1, (235, 130, 50), "token"),
    (2, "cool_token", 1, (60, 130, 235), "token"),
    (11, "banner", 0, (250, 230, 120), "background"),
    (12, "ground", 0, (110, 120, 100), "background")])
WARM_TOKEN, COOL_TOKEN, BANNER, GROUND = 1, 2, 11, 12
SIDES = ("top", "bottom", "left", "right")
# Banner colors of the two scenes; tokens never use them.
BANNER_COLORS = {WARM_TOKEN: (235, 130, 50), COOL_TOKEN: (60, 130, 235)}
_GROUND_COLOR = np.array([120, 125, 110], np.float32)
_TOKEN_GREY = 200.0
_SHAPES = ("circle", "square", "triangle")
# Shape, outline and texture helpers shared with the quickstart set.
# pylint: disable=protected-access
_shape_mask = synthetic._shape_mask
_boundary = synthetic._boundary
_smooth_noise = synthetic._smooth_noise
# pylint: enable=protected-access
_REFERENCE_AREA = 128 * 128


def banner_mask(height: int, width: int, side: str,
                thickness: int) -> np.ndarray:
  """Boolean [height, width] mask of a band `thickness` pixels along `side`."""
  if side not in SIDES:
    raise ValueError(f"side must be one of {SIDES}, got {side!r}.")
  mask = np.zeros((height, width), dtype=bool)
  if side == "top":
    mask[:thickness] = True
  elif side == "bottom":
    mask[height - thickness:] = True
  elif side == "left":
    mask[:, :thickness] = True
  else:
    mask[:, width - thickness:] = True
  return mask


def render_context_example(
    rng: np.random.Generator, height: int = 128, width: int = 128,
    min_instances: int = 2, max_instances: int = 5,
    banner_fraction: float = 0.15, gap_fraction: float = 0.15,
    min_radius: float = 0.08, max_radius: float = 0.2,
    min_visible_area: Optional[int] = None
) -> Tuple[np.ndarray, np.ndarray, List[Dict[str, Any]], Dict[str, Any]]:
  """Draws one image whose token class is given by the banner color.

  Args:
    rng: numpy random generator (all randomness comes from it).
    height, width: image size, at least 32x32.
    min_instances, max_instances: range of tokens per image.
    banner_fraction: banner thickness as a fraction of the image side across
      it.
    gap_fraction: no token pixel lies within this fraction of min(height,
      width) of the banner.
    min_radius, max_radius: token radius range as fractions of min(height,
      width).
    min_visible_area: smallest visible token area in pixels; default 60 at
      128x128, scaled with the image area.

  Returns:
    image: uint8 [height, width, 3].
    segment_ids: int32 [height, width]; every pixel is in a segment.
    segments: dicts with "id", "category_id", "iscrowd", in id order.
    scene: {"token_class": category id of all tokens, "side": banner side}.

  Raises:
    ValueError: on a bad size, count or fraction.
  """
  synthetic.check_scene_args(height, width, 32, min_instances, max_instances)
  for name, value in (("banner_fraction", banner_fraction),
                      ("gap_fraction", gap_fraction)):
    if not 0 < value < 0.5:
      raise ValueError(f"{name} must lie in (0, 0.5), got {value!r}.")
  if not 0 < min_radius <= max_radius < 0.5:
    raise ValueError(f"need 0 < min_radius <= max_radius < 0.5, got "
                     f"{min_radius}, {max_radius}.")
  if min_visible_area is None:
    min_visible_area = max(20, int(60 * height * width / _REFERENCE_AREA))
  size = min(height, width)
  token_class = int(rng.choice([WARM_TOKEN, COOL_TOKEN]))
  side = SIDES[int(rng.integers(len(SIDES)))]
  across = height if side in ("top", "bottom") else width
  thickness = max(2, int(round(banner_fraction * across)))
  banner = banner_mask(height, width, side, thickness)
  gap = int(round(gap_fraction * size))
  forbidden = banner_mask(height, width, side, thickness + gap)

  yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
  image = (_GROUND_COLOR
           + 12.0 * _smooth_noise(rng, height, width, 6)[..., None]
           + rng.normal(0, 8, (height, width, 1))).astype(np.float32)
  banner_color = np.array(BANNER_COLORS[token_class], np.float32)
  image[banner] = (banner_color + rng.normal(0, 6, (height, width, 1)))[banner]

  objects: List[np.ndarray] = []
  target = int(rng.integers(min_instances, max_instances + 1))
  attempts = 0
  while len(objects) < target and attempts < 8 * max(target, 1):
    attempts += 1
    r = rng.uniform(min_radius, max_radius) * size
    cy = rng.uniform(0.05, 0.95) * height
    cx = rng.uniform(0.05, 0.95) * width
    mask = _shape_mask(
        _SHAPES[int(rng.integers(len(_SHAPES)))], cy, cx, r,
        rng.uniform(0, 2 * np.pi), yy, xx)
    if mask.sum() < min_visible_area or (mask & forbidden).any():
      continue
    # Keep every earlier token well visible under the new one.
    if any((other & ~mask).sum() < max(min_visible_area, 0.4 * other.sum())
           for other in objects):
      continue
    objects = [other & ~mask for other in objects]
    objects.append(mask)

  segment_ids = np.zeros((height, width), dtype=np.int32)
  segments: List[Dict[str, Any]] = []
  thing_pixels = np.zeros((height, width), dtype=bool)
  for mask in objects:
    thing_pixels |= mask
  for category, mask in ((GROUND, ~banner & ~thing_pixels), (BANNER, banner)):
    synthetic.add_segment(segment_ids, segments, mask, category)
  for mask in objects:
    synthetic.add_segment(segment_ids, segments, mask, token_class)
    grey = _TOKEN_GREY + rng.uniform(-25, 25)
    fill = grey + rng.normal(0, 5, (height, width, 1))
    image[mask] = np.broadcast_to(fill, (height, width, 3))[mask]
    # A darker outline lets touching tokens be told apart.
    image[_boundary(mask)] = 0.55 * grey
  image = np.clip(np.round(image), 0, 255).astype(np.uint8)
  return image, segment_ids, segments, {"token_class": token_class,
                                        "side": side}


def write_split(output_dir: str, split: str, num_images: int,
                image_size: Tuple[int, int], seed: int,
                **render_kwargs) -> Dict[str, str]:
  """Writes one split in COCO panoptic format (PNG images); returns paths.

  Args:
    output_dir: dataset root.
    split: split name ("train", "val", ...).
    num_images: number of images (>= 0).
    image_size: (height, width).
    seed: dataset seed.
    **render_kwargs: passed to render_context_example.

  Returns:
    dict with "image_dir", "panoptic_dir", "panoptic_json".
  """
  stream = synthetic.split_index(split)

  def render(index, height, width):
    rng = np.random.default_rng([seed, stream, index, 7])
    image, segment_ids, segments, scene = render_context_example(
        rng, height, width, **render_kwargs)
    return image, segment_ids, segments, {"banner_side": scene["side"]}

  return synthetic.write_panoptic_split(
      output_dir, split, num_images, image_size, render, CATEGORIES,
      f"synthetic context tokens, split {split}, seed {seed}")


def generate_context_panoptic(
    output_dir: str, num_train: int = 400, num_val: int = 48,
    image_size: Tuple[int, int] = (128, 128), seed: int = 0,
    splits: Sequence[str] = ("train", "val"),
    **render_kwargs) -> Dict[str, Any]:
  """Writes the context dataset (train and val) and categories.json.

  Args:
    output_dir: dataset root.
    num_train, num_val: images per split.
    image_size: (height, width).
    seed: dataset seed.
    splits: the two split names for (num_train, num_val).
    **render_kwargs: passed to render_context_example.

  Returns:
    {split: paths as returned by write_split, "categories_json": path}.
  """
  return synthetic.write_panoptic_dataset(
      output_dir, CATEGORIES, splits, (num_train, num_val),
      lambda split, count: write_split(output_dir, split, count, image_size,
                                       seed, **render_kwargs))


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(
      description="Writes the synthetic context-token panoptic dataset.")
  parser.add_argument("--output_dir", required=True)
  parser.add_argument("--num_train", type=int, default=400)
  parser.add_argument("--num_val", type=int, default=48)
  parser.add_argument("--image_size", type=int, default=128)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--min_instances", type=int, default=2)
  parser.add_argument("--max_instances", type=int, default=5)
  args = parser.parse_args(argv)
  try:
    generate_context_panoptic(
        args.output_dir, num_train=args.num_train, num_val=args.num_val,
        image_size=(args.image_size, args.image_size), seed=args.seed,
        min_instances=args.min_instances, max_instances=args.max_instances)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(f"Wrote {args.num_train} train and {args.num_val} val images "
        f"({args.image_size}x{args.image_size}) to {args.output_dir}.",
        file=sys.stderr)
  return 0


if __name__ == "__main__":
  sys.exit(main())
