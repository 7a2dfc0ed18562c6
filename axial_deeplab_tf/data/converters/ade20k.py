"""ADE20K (SceneParsing, ADEChallengeData2016) semantic converter.

Layout: {root}/images/{training,validation}/ADE_*.jpg and
{root}/annotations/{training,validation}/ADE_*.png (8-bit, values 0..150).
Label 0 ("other objects") becomes the ignore label; 1..150 become 0..149.
"""

import glob
import os
from typing import Optional

from axial_deeplab_tf.data import metadata as metadata_lib
from axial_deeplab_tf.data.converters import common
from axial_deeplab_tf.data.converters import semantic
from axial_deeplab_tf.data.converters import writer

SPLITS = ("training", "validation")


def convert_ade20k(*, ade20k_root: str, split: str, output_dir: str,
                   output_split: Optional[str] = None, num_shards: int = 4,
                   num_workers: int = 1, strict: bool = False,
                   ignore_label: int = 255,
                   progress_stream=None) -> writer.ConversionSummary:
  """Converts one ADE20K split to semantic TFRecords.

  Args:
    ade20k_root: the ADEChallengeData2016 directory.
    split: "training" or "validation".
    output_dir: where shards and metadata.json go.
    output_split: shard name prefix (default: split).
    num_shards, num_workers, strict: see writer.write_records.
    ignore_label: label written for value 0.
    progress_stream: progress bar stream.
  """
  if split not in SPLITS:
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}.")
  meta = metadata_lib.ade20k(ignore_label=ignore_label)
  pattern = os.path.join(ade20k_root, "images", split, "*.jpg")
  images = sorted(glob.glob(pattern))
  if not images:
    raise FileNotFoundError(f"No images match {pattern}.")
  tasks = []
  for image_path in images:
    stem = os.path.splitext(os.path.basename(image_path))[0]
    tasks.append(semantic.SemanticTask(
        image_path=image_path,
        label_path=os.path.join(ade20k_root, "annotations", split,
                                f"{stem}.png"),
        filename=common.relative_path(image_path, ade20k_root),
        source_id=stem))
  value_to_label = {0: ignore_label}
  value_to_label.update({v: v - 1 for v in range(1, meta.num_classes + 1)})
  return semantic.convert_semantic(
      dataset="ade20k", tasks=tasks, value_to_label=value_to_label,
      metadata=meta, output_dir=output_dir, split=output_split or split,
      num_shards=num_shards, num_workers=num_workers, strict=strict,
      progress_stream=progress_stream)
