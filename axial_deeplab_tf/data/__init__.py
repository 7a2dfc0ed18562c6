"""Datasets: TFRecord schema, metadata, converters, input pipeline, targets.

  metadata          dataset label facts (classes, things, divisor, colors)
  tfrecord_schema   the record keys and label encodings
  converters        dataset formats -> TFRecord shards (tools/build_*_data.py)
  synthetic         the synthetic quickstart dataset (COCO panoptic format)
  input_pipeline    Decoder / Parsers / build_dataset (Model Garden pattern)
  targets           Panoptic-DeepLab targets from a panoptic label

The TensorFlow-based names (build_dataset, parser configs) load on first
use, so that converter worker processes importing this package do not pay
for TensorFlow.
"""

import importlib

from axial_deeplab_tf.data.metadata import DatasetMetadata  # pylint: disable=unused-import

_LAZY = {
    "build_dataset": "axial_deeplab_tf.data.input_pipeline",
    "build_decoder": "axial_deeplab_tf.data.input_pipeline",
    "build_parser": "axial_deeplab_tf.data.input_pipeline",
    "PanopticParserConfig": "axial_deeplab_tf.data.input_pipeline",
    "SemanticParserConfig": "axial_deeplab_tf.data.input_pipeline",
    "ClassificationParserConfig": "axial_deeplab_tf.data.input_pipeline",
    "PanopticTargetGenerator": "axial_deeplab_tf.data.targets",
}


def __getattr__(name):
  if name in _LAZY:
    return getattr(importlib.import_module(_LAZY[name]), name)
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
