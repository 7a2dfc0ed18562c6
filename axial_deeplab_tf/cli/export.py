r"""Exports a trained model as a SavedModel for serving.

From an experiment (its gin files give the model, post-processing and
dataset metadata) and a trainer checkpoint:

  axial-deeplab export --gin_file=coco/axial_deeplab_l \
      --checkpoint_path=/tmp/run --export_dir=/tmp/export

or from a zoo model with builder overrides (no experiment needed):

  axial-deeplab export --model=axial_deeplab_s \
      --set=num_classes=19 --dataset_metadata=/data/cityscapes/metadata.json \
      --checkpoint_path=/tmp/run/ckpt-1000 --export_dir=/tmp/export \
      --scales=0.75,1.0,1.25 --flip

Signatures: serving_default (uint8 images [batch, height, width, 3]),
serve_image_bytes (encoded images), serve_tf_example (serialized
tf.train.Example); see axial_deeplab_tf/serving/export_module.py for the
outputs. The export runs with plain `tf.saved_model.load`. Prints a JSON
summary on stdout; errors go to stderr with exit status 2.
"""

import json
import logging
import sys

from absl import app
from absl import flags

from axial_deeplab_tf.serving import cli

cli.define_model_flags("without it the model keeps its initial weights.")
flags.DEFINE_string("dataset_metadata", None,
                    "metadata.json (or its folder) of the dataset, for "
                    "--model: classes, thing ids, label divisor, colors.")
flags.DEFINE_string("export_dir", None, "Output SavedModel folder.")
flags.DEFINE_list("signatures", ["image_tensor", "image_bytes", "tf_example"],
                  "Signatures to write: image_tensor (serving_default), "
                  "image_bytes, tf_example.")
flags.DEFINE_list("scales", ["1.0"], "Test-time input scales.")
flags.DEFINE_bool("flip", False, "Also average over left-right flips.")
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"],
                  "Compute dtype of the exported model.")
flags.DEFINE_list("thing_class_ids", None,
                  "Panoptic --model without metadata: thing train ids.")
flags.DEFINE_integer("label_divisor", None, "Panoptic label divisor.")
flags.DEFINE_integer("ignore_label", None, "Panoptic ignore label.")
flags.DEFINE_float("center_threshold", None, "Post-processing: heatmap "
                   "threshold of centers (default 0.1).")
flags.DEFINE_integer("nms_kernel", None, "Post-processing: center NMS window "
                     "(default 7).")
flags.DEFINE_integer("keep_k_centers", None, "Post-processing: center slots "
                     "(default 200).")
flags.DEFINE_integer("stuff_area_limit", None, "Post-processing: smallest "
                     "stuff area in pixels (default 4096).")
flags.DEFINE_bool("overwrite", False, "Replace an existing --export_dir.")
FLAGS = flags.FLAGS


class _DropCaptureRenames(logging.Filter):
  """Drops TensorFlow's note that signature inputs are renamed on save.

  Saving a signature that reads the model's variables wraps it with one
  placeholder per variable, named by number; TensorFlow lists every one as
  "renamed" (tens of kilobytes for one model). The signature's own inputs
  keep their names (the serving config checks them), so nothing is lost.
  """

  def filter(self, record):
    return not str(record.msg).startswith(
        "Function `%s` contains input name(s) %s with unsupported "
        "characters which will be renamed")


def main(argv):
  status = cli.check_usage(argv, FLAGS, required=("export_dir",),
                           model_flags=True)
  if status is not None:
    return status
  try:
    scales = cli.parse_list("scales", FLAGS.scales, float, "numbers")
    things = cli.parse_list("thing_class_ids", FLAGS.thing_class_ids, int,
                            "integers")
  except ValueError as e:
    return cli.report_error(e)
  from axial_deeplab_tf.serving import export_module
  try:
    export_module.check_replaceable_export_dir(FLAGS.export_dir,
                                               FLAGS.overwrite)
    loaded = cli.load_model_from_flags(
        FLAGS, dataset_metadata=FLAGS.dataset_metadata, dtype=FLAGS.dtype)
    post_processor_args = {
        "thing_class_ids": things,
        "label_divisor": FLAGS.label_divisor,
        "ignore_label": FLAGS.ignore_label,
        "center_threshold": FLAGS.center_threshold,
        "nms_kernel": FLAGS.nms_kernel,
        "keep_k_centers": FLAGS.keep_k_centers,
        "stuff_area_limit": FLAGS.stuff_area_limit,
    }
    # TensorFlow's saved_model code logs through absl's logger.
    loggers = [logging.getLogger(name) for name in ("absl", "tensorflow")]
    quiet = _DropCaptureRenames()
    for logger in loggers:
      logger.addFilter(quiet)
    try:
      export_dir = export_module.export_loaded_model(
          loaded, FLAGS.export_dir, scales=scales, flip=FLAGS.flip,
          function_keys=FLAGS.signatures,
          post_processor_args=post_processor_args, overwrite=FLAGS.overwrite)
    finally:
      for logger in loggers:
        logger.removeFilter(quiet)
  except (ValueError, TypeError, OSError, AssertionError) as e:
    return cli.report_error(e)
  if not FLAGS.checkpoint_path:
    print("warning: no --checkpoint_path; exported the initial weights.",
          file=sys.stderr)
  config = export_module.read_serving_config(export_dir)
  print(json.dumps({"export_dir": export_dir, "task": config["task"],
                    "signatures": sorted(config["signatures"])},
                   sort_keys=True))
  return 0
