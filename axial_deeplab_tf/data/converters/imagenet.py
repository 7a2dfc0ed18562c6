"""ImageNet-style classification converter (one folder per class).

Layout: {image_dir}/{synset}/*.{JPEG,jpg,jpeg,png}. The label of a synset is
its index in the synset list: a file with one synset per line (optionally
followed by a readable name, as in LOC_synset_mapping.txt), or, without a
file, the sorted folder names (the usual ImageNet label order).
"""

import dataclasses
import os
from typing import List, Optional, Sequence

from axial_deeplab_tf.data import metadata as metadata_lib
from axial_deeplab_tf.data import tfrecord_schema
from axial_deeplab_tf.data.converters import common
from axial_deeplab_tf.data.converters import writer

_IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png")


@dataclasses.dataclass(frozen=True)
class ClassificationTask:
  image_path: str
  filename: str
  label: int
  synset: str


def process_classification_task(task: ClassificationTask):
  """Reads and checks one image; returns record features and notes."""
  image = common.load_rgb_image(task.image_path)
  source_id = os.path.splitext(os.path.basename(task.image_path))[0]
  features = common.image_record_features(image, task.filename, source_id)
  features.update(tfrecord_schema.classification_features(task.label,
                                                          task.synset))
  notes = [(task.image_path, image.note)] if image.note else []
  return features, notes


def classification_tasks(image_dir: str, synsets: Sequence[str]):
  """Tasks for every image in the synset folders, plus problems found.

  Returns:
    (tasks, problems): problems are folders not in the synset list and
    files with an unknown extension.
  """
  label_of = {s: i for i, s in enumerate(synsets)}
  tasks: List[ClassificationTask] = []
  problems: List[common.BadExample] = []
  for folder in sorted(os.listdir(image_dir)):
    folder_path = os.path.join(image_dir, folder)
    if not os.path.isdir(folder_path):
      continue
    if folder not in label_of:
      problems.append(common.BadExample(
          folder_path, common.UNKNOWN_CATEGORY,
          f"class folder {folder!r} is not in the synset list"))
      continue
    for name in sorted(os.listdir(folder_path)):
      path = os.path.join(folder_path, name)
      if not os.path.isfile(path):
        continue
      if os.path.splitext(name)[1].lower() not in _IMAGE_EXTENSIONS:
        problems.append(common.BadExample(
            path, common.UNSUPPORTED_IMAGE,
            f"file extension is not one of {_IMAGE_EXTENSIONS}"))
        continue
      tasks.append(ClassificationTask(
          image_path=path, filename=os.path.join(folder, name),
          label=label_of[folder], synset=folder))
  return tasks, problems


def convert_imagenet(*, image_dir: str, split: str, output_dir: str,
                     synsets_file: Optional[str] = None,
                     num_shards: int = 16, num_workers: int = 1,
                     strict: bool = False,
                     progress_stream=None) -> writer.ConversionSummary:
  """Converts a class-folder image tree to classification TFRecords.

  Args:
    image_dir: directory with one sub-folder per class.
    split: shard name prefix, e.g. "train" or "validation".
    output_dir: where shards and metadata.json go.
    synsets_file: label order (see module doc); default sorted folders.
    num_shards, num_workers, strict: see writer.write_records.
    progress_stream: progress bar stream.
  """
  if not os.path.isdir(image_dir):
    raise FileNotFoundError(f"image_dir {image_dir} is not a directory.")
  if synsets_file is not None:
    synsets, names = metadata_lib.read_synsets_file(synsets_file)
  else:
    synsets = sorted(d for d in os.listdir(image_dir)
                     if os.path.isdir(os.path.join(image_dir, d)))
    names = None
    if not synsets:
      raise FileNotFoundError(f"image_dir {image_dir} has no class folders.")
  meta = metadata_lib.imagenet(synsets, names)
  tasks, problems = classification_tasks(image_dir, synsets)
  return writer.write_records(
      dataset="imagenet", tasks=tasks,
      process_fn=process_classification_task,
      output_dir=output_dir, split=split, num_shards=num_shards,
      num_workers=num_workers, strict=strict, metadata=meta,
      pre_skipped=problems, progress_stream=progress_stream)
