"""Fixtures of the task tests: the tiny panoptic dataset, once per session.

The dataset is the project's synthetic shapes data (12 train / 4 val images,
64x64, real COCO panoptic format) converted by the real converter into one
TFRecord shard per split (see run_utils.TinyExperiment).
"""

import os

import pytest

from axial_deeplab_tf.data import synthetic
from axial_deeplab_tf.data.converters import coco_panoptic
from tests.tasks.run_utils import TinyExperiment


@pytest.fixture(scope="session")
def tiny_experiment(tmp_path_factory) -> TinyExperiment:
  """Writes the tiny dataset once per session."""
  root = str(tmp_path_factory.mktemp("tiny_panoptic"))
  raw = os.path.join(root, "raw")
  out = os.path.join(root, "tfrecord")
  paths = synthetic.generate_synthetic_panoptic(
      raw, num_train=12, num_val=4, image_size=(64, 64), seed=0)
  with open(os.devnull, "w") as quiet:
    for split, count in (("train", 12), ("val", 4)):
      summary = coco_panoptic.convert_own_panoptic(
          image_dir=paths[split]["image_dir"],
          panoptic_json=paths[split]["panoptic_json"],
          panoptic_dir=paths[split]["panoptic_dir"], output_dir=out,
          split=split, categories_json=paths["categories_json"],
          dataset_name="synthetic_shapes", num_shards=1, strict=True,
          progress_stream=quiet)
      assert summary.num_records == count and not summary.skipped
  return TinyExperiment(tfrecord_dir=out,
                        train_pattern=os.path.join(out, "train-*"),
                        val_pattern=os.path.join(out, "val-*"))


