r"""Runs an exported SavedModel on image files.

  python tools/predict.py --saved_model=/tmp/export \
      --images='/data/val/*.jpg' --output_dir=/tmp/predictions \
      [--categories=categories.json] [--save_semantic] [--save_instance]

Writes colorized overlays and, for panoptic models, COCO panoptic results
(panoptic/<name>.png + panoptic.json) that the COCO panopticapi and the
Cityscapes panoptic evaluation read; see axial_deeplab_tf/serving/predictor.py
for the layout. Categories come from --categories (a JSON list or a COCO
JSON with "categories", position = train id), else from the dataset
metadata stored in the export, else generic ids 0..num_classes-1.

Progress goes to stderr. An image that fails (unreadable, wrong format,
inference error) is reported with its reason and the others continue; the
exit status is 1 if any image failed, 2 on a usage or setup error.
"""

import glob
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import flags  # pylint: disable=g-import-not-at-top,wrong-import-position

flags.DEFINE_string("saved_model", None, "Export folder.")
flags.DEFINE_multi_string("images", [], "Image file glob(s), repeatable.")
flags.DEFINE_string("output_dir", None, "Output folder.")
flags.DEFINE_string("categories", None,
                    "JSON categories (list, or COCO JSON with 'categories').")
flags.DEFINE_bool("save_semantic", False,
                  "Panoptic models: also write semantic train-id maps.")
flags.DEFINE_bool("save_instance", False,
                  "Panoptic models: also write instance-id maps.")
flags.DEFINE_float("overlay_alpha", 0.5, "Color weight of the overlays.")
FLAGS = flags.FLAGS


def _progress(done, total, text):
  width = 30
  filled = width * done // max(total, 1)
  bar = "#" * filled + "." * (width - filled)
  print(f"[{bar}] {done}/{total} {text}", file=sys.stderr, flush=True)


def main(argv):
  if len(argv) > 1:
    print(f"error: unexpected arguments {argv[1:]}", file=sys.stderr)
    return 2
  for name in ("saved_model", "output_dir"):
    if not getattr(FLAGS, name):
      print(f"error: --{name} is required.", file=sys.stderr)
      return 2
  if not FLAGS.images:
    print("error: --images is required.", file=sys.stderr)
    return 2
  paths = sorted({p for pattern in FLAGS.images
                  for p in glob.glob(os.path.expanduser(pattern))
                  if os.path.isfile(p)})
  if not paths:
    print(f"error: no files match --images {FLAGS.images}.", file=sys.stderr)
    return 2
  names = {}
  for path in paths:
    names.setdefault(os.path.splitext(os.path.basename(path))[0],
                     []).append(path)
  clashes = {n: p for n, p in names.items() if len(p) > 1}
  if clashes:
    print(f"error: images share output names (file name without "
          f"extension): {clashes}; rename them or predict the folders "
          f"separately.", file=sys.stderr)
    return 2

  from axial_deeplab_tf.serving import predictor  # pylint: disable=g-import-not-at-top
  try:
    runner = predictor.SavedModelPredictor(FLAGS.saved_model)
    categories = (predictor.load_categories(FLAGS.categories)
                  if FLAGS.categories else None)
    categories = predictor.categories_for(runner.config, categories)
    writer = predictor.PredictionWriter(
        FLAGS.output_dir, runner.config, categories,
        save_semantic=FLAGS.save_semantic,
        save_instance=FLAGS.save_instance,
        overlay_alpha=FLAGS.overlay_alpha)
  except (ValueError, TypeError, OSError) as e:
    message = " ".join(str(e).split())
    print(f"error: {type(e).__name__}: {message}", file=sys.stderr)
    return 2

  failures = []
  start = time.time()
  for i, path in enumerate(paths, 1):
    name = os.path.splitext(os.path.basename(path))[0]
    began = time.time()
    try:
      image = predictor.read_image(path)
      outputs = runner.predict(image)
      writer.write(name, os.path.basename(path), image, outputs)
    except Exception as e:  # pylint: disable=broad-except
      # One bad image must not stop the others; every failure is reported.
      reason = " ".join(f"{type(e).__name__}: {e}".split())[:500]
      failures.append((path, reason))
      _progress(i, len(paths), f"{path}: FAILED: {reason}")
      continue
    _progress(i, len(paths), f"{path} ({time.time() - began:.2f} s)")
  written = writer.finish()
  done = len(paths) - len(failures)
  print(f"Predicted {done} of {len(paths)} images in "
        f"{time.time() - start:.1f} s into {FLAGS.output_dir}"
        + "".join(f"; {k}: {v}" for k, v in written.items()) + ".",
        file=sys.stderr)
  if failures:
    print(f"{len(failures)} image(s) failed:", file=sys.stderr)
    for path, reason in failures:
      print(f"  {path}: {reason}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  app.run(lambda argv: sys.exit(main(argv)))
