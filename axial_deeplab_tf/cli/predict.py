r"""Runs an exported SavedModel on image files.

  axial-deeplab predict --saved_model=/tmp/export \
      --images='/data/val/*.jpg' --output_dir=/tmp/predictions \
      [--categories=categories.json] [--save_semantic] [--save_instance]

Writes colorized overlays and, for panoptic models, COCO panoptic results
(panoptic/<name>.png + panoptic.json) that the COCO panopticapi and the
Cityscapes panoptic evaluation read, and with --save_semantic /
--save_instance the label maps; see axial_deeplab_tf/serving/predictor.py
for the layout and the evaluation command. Categories come from --categories (a JSON list or a COCO
JSON with "categories", position = train id), else from the dataset
metadata stored in the export, else generic ids 0..num_classes-1.

--saved_model may also be a .tflite or .onnx export (network at a fixed
size; the post-processing runs here). Output names are the file names
without extension, made plain (no path separators, no leading dots) and
given a short path hash when two inputs share a name, so nothing is
overwritten and nothing is written outside --output_dir.

Hostile or odd files: a header declaring more than --max_pixels pixels
(decompression bombs) is refused before decoding; empty, truncated and
non-image files are refused with their reason; EXIF orientation is applied,
alpha dropped, palette / grayscale / CMYK converted and 16-bit samples
scaled to 8 bits. A progress bar goes to stderr. An image that fails is
reported with its reason and the others continue; the exit status is 1 if
any image failed, 2 on a usage or setup error.
"""

import sys

from absl import app
from absl import flags

from axial_deeplab_tf.serving import cli

flags.DEFINE_string("saved_model", None,
                    "SavedModel export folder, or a .tflite / .onnx file "
                    "from `axial-deeplab export-tflite` / `export-onnx`.")
flags.DEFINE_multi_string("images", [], "Image file glob(s), repeatable.")
flags.DEFINE_string("output_dir", None, "Output folder.")
flags.DEFINE_string("categories", None,
                    "JSON categories (list, or COCO JSON with 'categories').")
flags.DEFINE_bool("save_semantic", False,
                  "Panoptic models: also write semantic train-id maps.")
flags.DEFINE_bool("save_instance", False,
                  "Panoptic models: also write instance-id maps.")
flags.DEFINE_float("overlay_alpha", 0.5, "Color weight of the overlays.")
flags.DEFINE_integer("max_pixels", 4096 * 4096,
                     "Images whose header declares more pixels (width x "
                     "height) are refused before decoding; the default "
                     "fits 4K frames.", lower_bound=1)
FLAGS = flags.FLAGS


def main(argv):
  status = cli.check_usage(argv, FLAGS,
                           required=("saved_model", "images", "output_dir"))
  if status is not None:
    return status
  try:
    images = cli.find_files("images", FLAGS.images)
  except ValueError as e:
    return cli.report_error(e)
  from axial_deeplab_tf.serving import predictor
  try:
    runner = predictor.load_predictor(FLAGS.saved_model)
    categories = (predictor.load_categories(FLAGS.categories)
                  if FLAGS.categories else None)
    categories = predictor.categories_for(runner.config, categories)
    writer = predictor.PredictionWriter(
        FLAGS.output_dir, runner.config, categories,
        save_semantic=FLAGS.save_semantic,
        save_instance=FLAGS.save_instance,
        overlay_alpha=FLAGS.overlay_alpha)
  except (ValueError, TypeError, OSError) as e:
    return cli.report_error(e)

  bar = cli.ProgressBar(len(images))
  summary = predictor.predict_files(images, runner, writer, bar.update,
                                    max_pixels=FLAGS.max_pixels)
  print(f"Predicted {summary.predicted} of {len(images)} images in "
        f"{summary.seconds:.1f} s into {FLAGS.output_dir}"
        + "".join(f"; {k}: {v}" for k, v in summary.written.items()) + ".",
        file=sys.stderr)
  if summary.failures:
    print(f"{len(summary.failures)} image(s) failed:", file=sys.stderr)
    for path, reason in summary.failures:
      print(f"  {path}: {reason}", file=sys.stderr)
    return 1
  return 0
