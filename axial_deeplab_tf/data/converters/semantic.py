"""Shared converter for semantic segmentation data (image + label PNG)."""

import dataclasses
import functools
from typing import Dict, Sequence

import numpy as np

from axial_deeplab_tf.data import metadata as metadata_lib
from axial_deeplab_tf.data import tfrecord_schema
from axial_deeplab_tf.data.converters import common
from axial_deeplab_tf.data.converters import writer


@dataclasses.dataclass(frozen=True)
class SemanticTask:
  """One image and its 8-bit label PNG."""
  image_path: str
  label_path: str
  filename: str
  source_id: str


@dataclasses.dataclass(frozen=True)
class SemanticContext:
  """Label value -> train id (or ignore) table; -1 marks invalid values."""
  table: np.ndarray


def process_semantic_task(context: SemanticContext, task: SemanticTask):
  """Reads, checks and maps one image + label PNG to record features.

  Raises:
    common.BadExample: on any bad input.
  """
  image = common.load_rgb_image(task.image_path)
  label = common.load_index_png(task.label_path)
  common.check_same_size(image, label, task.image_path, task.label_path)
  mapped = common.map_semantic_label(label, context.table, task.label_path)
  features = common.image_record_features(image, task.filename,
                                          task.source_id)
  features.update(tfrecord_schema.semantic_features(common.encode_png(mapped)))
  notes = [(task.image_path, image.note)] if image.note else []
  return features, notes


def convert_semantic(*, dataset: str, tasks: Sequence[SemanticTask],
                     value_to_label: Dict[int, int],
                     metadata: metadata_lib.DatasetMetadata, output_dir: str,
                     split: str, num_shards: int, num_workers: int,
                     strict: bool, pre_skipped=(),
                     progress_stream=None) -> writer.ConversionSummary:
  """Writes semantic records, mapping label values with `value_to_label`.

  Args:
    dataset: dataset name for the summary.
    tasks: the examples.
    value_to_label: every allowed 8-bit label value -> its train id or the
      ignore label; other values make the example bad.
    metadata: dataset metadata (semantic task, ignore label <= 255).
    output_dir, split, num_shards, num_workers, strict, pre_skipped,
      progress_stream: see writer.write_records.
  """
  if metadata.task != "semantic":
    raise ValueError(f"metadata must be of a semantic dataset, got task "
                     f"{metadata.task!r} ({metadata.name}).")
  if not 0 <= metadata.ignore_label <= 255:
    raise ValueError(f"ignore_label must fit the 8-bit label PNG (0..255), "
                     f"got {metadata.ignore_label}.")
  allowed = set(range(metadata.num_classes)) | {metadata.ignore_label}
  for value, label in value_to_label.items():
    if not 0 <= value <= 255 or label not in allowed:
      raise ValueError(f"value_to_label maps {value} -> {label}; expected "
                       f"values 0..255 mapped to train ids or the ignore "
                       f"label.")
  context = SemanticContext(common.semantic_lookup_table(value_to_label))
  return writer.write_records(
      dataset=dataset, tasks=list(tasks),
      process_fn=functools.partial(process_semantic_task, context),
      output_dir=output_dir, split=split, num_shards=num_shards,
      num_workers=num_workers, strict=strict, metadata=metadata,
      pre_skipped=pre_skipped, progress_stream=progress_stream)
