r"""Latency of one model as SavedModel, ONNX Runtime and LiteRT, same run.

  python scripts/benchmark_deploy.py --sizes=513x513,1025x2049 \
      --output=benchmarks/speed/deploy.json

Builds the quickstart Axial-DeepLab (seeded random weights unless
--checkpoint_path), exports it at each size as a SavedModel
(serving_default: network + post-processing), ONNX (network) and LiteRT
float32 / float16 / int8 (network), and times the network of each
(median of --repeats after --warmup runs, batch 1, this process's CPU
threads). The SavedModel time includes its in-graph post-processing; the
others are the network file alone. Also reports the largest relative
difference of the semantic logits from the in-process model and the share
of pixels whose panoptic id differs from the SavedModel's.

Parity on a dataset (`--parity_data`): a trained model (an experiment's
gin file and checkpoint, e.g. the quickstart's) is exported at the size of
the validation images as a SavedModel, ONNX float32 and LiteRT float32 /
float16 / int8; every format runs on every validation image of a COCO
panoptic folder (`make-synthetic` layout: val/*.png,
annotations/panoptic_val.json and annotations/panoptic_val/). Reported per
format: the largest relative difference of the semantic logits from the
model (max |difference| / max |logit| per image, then the largest over
the images), the number of images whose panoptic map differs from the
SavedModel's, PQ / SQ / RQ against the ground truth (the project's
evaluator, COCO panopticapi rules) and the network latency at that size:

  python scripts/benchmark_deploy.py --parity_data=runs/quickstart/raw \
      --gin_file=quickstart/axial_deeplab --checkpoint_path=runs/quickstart/model \
      --gin_param="train/data.input_path='runs/quickstart/tfrecord/train-*'" \
      --gin_param="eval/data.input_path='runs/quickstart/tfrecord/val-*'" \
      --output=benchmarks/speed/deploy_parity.json
"""

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
import tensorflow as tf  # pylint: disable=g-import-not-at-top,wrong-import-position

from axial_deeplab_tf.ops import fused_attention  # pylint: disable=g-import-not-at-top,wrong-import-position
from axial_deeplab_tf.serving import export_module as em  # pylint: disable=g-import-not-at-top,wrong-import-position
from axial_deeplab_tf.serving import portable_export as pe  # pylint: disable=g-import-not-at-top,wrong-import-position

QUICKSTART = {"width_multiplier": 0.25, "depth": 26, "semantic_channels": 64,
              "instance_channels": 32, "context_channels": 64,
              "stem_channels": (16, 16, 32)}
THINGS = [1, 2]
NUM_CLASSES = 4


def _time(fn, warmup, repeats):
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return float(np.median(times)), float(np.min(times))


def _image(rng, height, width):
  image = np.empty((height, width, 3), np.uint8)
  image[:] = rng.integers(0, 256, 3)
  for _ in range(12):
    y, x = rng.integers(0, height), rng.integers(0, width)
    image[y:y + height // 4, x:x + width // 4] = rng.integers(0, 256, 3)
  return image


def run(size, args, model, workdir):
  height, width = size
  rng = np.random.default_rng(0)
  image = _image(rng, height, width)
  post = em.panoptic_post_processor(NUM_CLASSES, thing_class_ids=THINGS,
                                    stuff_area_limit=64)
  loaded = em.LoadedModel(model=model, task="panoptic", dtype="float32",
                          post_processor=post, dataset_metadata=None,
                          input_size=None,
                          description={"model_name": "axial_deeplab_s"})
  result = {"size": [height, width]}
  network = tf.function(fused_attention.without_fused(
      lambda x: model(x, training=False)))
  reference_logits = network(image[None])["semantic_logits"].numpy()

  start = time.perf_counter()
  saved = em.export_loaded_model(loaded, os.path.join(workdir, "saved"),
                                 function_keys=["image_tensor"])
  result["savedmodel_export_s"] = time.perf_counter() - start
  from axial_deeplab_tf.serving import predictor  # pylint: disable=g-import-not-at-top
  saved_runner = predictor.SavedModelPredictor(saved)
  reference = saved_runner.predict(image)
  result["savedmodel_ms"] = [1000 * t for t in _time(
      lambda: saved_runner.predict(image), args.warmup, args.repeats)]
  formats = [("onnx", "float32")] + [("tflite", q) for q in args.quant]
  for fmt, quant in formats:
    key = fmt if fmt == "onnx" else f"litert_{quant}"
    path = os.path.join(workdir, f"model_{quant}.{fmt}")
    start = time.perf_counter()
    pe.export_portable(loaded, path, fmt=fmt, input_size=size,
                       quantization=quant)
    result[f"{key}_export_s"] = time.perf_counter() - start
    result[f"{key}_bytes"] = os.path.getsize(path)
    runner = pe.PortablePredictor(path)
    outputs = runner.network_outputs(image)
    result[f"{key}_ms"] = [1000 * t for t in _time(
        lambda: runner.network(image[None]), args.warmup, args.repeats)]
    logits = outputs["semantic_logits"]
    result[f"{key}_logits_rel_diff"] = float(
        np.abs(logits - reference_logits).max() /
        np.abs(reference_logits).max())
    panoptic = runner.predict(image)["panoptic_pred"]
    result[f"{key}_panoptic_pixels_differing"] = float(
        np.mean(panoptic != reference["panoptic_pred"]))
    print(json.dumps({k: v for k, v in result.items() if k.startswith(key)}),
          flush=True)
  return result


FORMATS = (("onnx", "float32"), ("tflite", "float32"), ("tflite", "float16"),
           ("tflite", "int8"))


def format_key(fmt, quant):
  return "onnx_float32" if fmt == "onnx" else f"litert_{quant}"


def read_validation_set(data_dir, metadata):
  """(file name, uint8 image, panoptic ground truth) of the val split."""
  from axial_deeplab_tf.evaluation import coco_panoptic_format as coco  # pylint: disable=g-import-not-at-top
  from axial_deeplab_tf.serving import predictor  # pylint: disable=g-import-not-at-top
  annotations = coco.read_json(os.path.join(data_dir, "annotations",
                                            "panoptic_val.json"))
  by_id = {int(c["id"]): c for c in annotations["categories"]}
  # Train id = position in the dataset's metadata.
  categories = [by_id[int(i)] for i in metadata.original_category_ids]
  images = {int(im["id"]): im["file_name"] for im in annotations["images"]}
  result = []
  for annotation in sorted(annotations["annotations"],
                           key=lambda a: a["file_name"]):
    image = predictor.read_image(os.path.join(
        data_dir, "val", images[int(annotation["image_id"])]))
    truth = coco.read_annotation(
        os.path.join(data_dir, "annotations", "panoptic_val"), annotation,
        categories, metadata.label_divisor, metadata.ignore_label)
    result.append((annotation["file_name"], image, truth))
  return result


def parity(args):
  """Exports a trained model to every format and compares them."""
  from axial_deeplab_tf import evaluation  # pylint: disable=g-import-not-at-top
  from axial_deeplab_tf.serving import predictor  # pylint: disable=g-import-not-at-top
  loaded = em.load_model(gin_files=[args.gin_file],
                         gin_params=args.gin_param,
                         checkpoint_path=args.checkpoint_path)
  meta = loaded.dataset_metadata
  data = read_validation_set(args.parity_data, meta)[:args.parity_images]
  sizes = {image.shape[:2] for _, image, _ in data}
  if len(sizes) != 1:
    raise ValueError(f"--parity_data: validation images of one size "
                     f"expected, got sizes {sorted(sizes)}.")
  size = sizes.pop()
  network = tf.function(fused_attention.without_fused(
      lambda x: loaded.model(x, training=False)))
  model_logits = [network(image[None])["semantic_logits"].numpy()
                  for _, image, _ in data]

  def quality():
    return evaluation.PanopticQuality(
        meta.num_classes, meta.thing_class_ids,
        ignored_label=meta.ignore_label, label_divisor=meta.label_divisor)

  def pq_of(maps):
    metric = quality()
    for (_, _, truth), panoptic in zip(data, maps):
      metric.update(truth, panoptic)
    return _pq_summary(metric)

  result = {"size": list(size), "images": len(data)}
  with tempfile.TemporaryDirectory() as workdir:
    start = time.perf_counter()
    saved_dir = em.export_loaded_model(loaded, os.path.join(workdir, "saved"),
                                       function_keys=["image_tensor"])
    result["savedmodel_export_s"] = time.perf_counter() - start
    saved = predictor.SavedModelPredictor(saved_dir)
    reference = [saved.predict(image)["panoptic_pred"]
                 for _, image, _ in data]
    result["savedmodel"] = {"pq": pq_of(reference), "ms": [
        1000 * t for t in _time(lambda: saved.predict(data[0][1]),
                                args.warmup, args.repeats)]}
    print(json.dumps({"savedmodel": result["savedmodel"]}), flush=True)
    for fmt, quant in FORMATS:
      if fmt == "tflite" and quant not in args.quant:
        continue
      key = format_key(fmt, quant)
      path = os.path.join(workdir, f"model_{quant}.{fmt}")
      start = time.perf_counter()
      pe.export_portable(loaded, path, fmt=fmt, input_size=size,
                         quantization=quant)
      entry = {"export_s": time.perf_counter() - start,
               "bytes": os.path.getsize(path)}
      runner = pe.PortablePredictor(path)
      differences, maps = [], []
      for (_, image, _), logits in zip(data, model_logits):
        got = runner.network_outputs(image)["semantic_logits"]
        differences.append(float(np.abs(got - logits).max() /
                                 np.abs(logits).max()))
        maps.append(runner.predict(image)["panoptic_pred"])
      entry["logits_rel_diff_max"] = max(differences)
      entry["logits_rel_diff_median"] = float(np.median(differences))
      differing = [name for (name, _, _), got, want in zip(
          data, maps, reference) if not np.array_equal(got, want)]
      entry["images_with_different_panoptic_map"] = len(differing)
      entry["panoptic_pixels_differing"] = float(np.mean(
          [np.mean(g != w) for g, w in zip(maps, reference)]))
      entry["pq"] = pq_of(maps)
      entry["ms"] = [1000 * t for t in _time(
          lambda: runner.network(data[0][1][None]), args.warmup,
          args.repeats)]
      result[key] = entry
      print(json.dumps({key: entry}), flush=True)
  if "litert_int8" in result and "litert_float32" in result:
    result["int8_minus_float32_pq"] = (result["litert_int8"]["pq"]["pq"] -
                                       result["litert_float32"]["pq"]["pq"])
  return result


def _pq_summary(metric):
  """PQ / SQ / RQ over all classes, things and stuff (the evaluator's)."""
  r = metric.result()
  return {f"{k}{part}": r[f"{k}{part}"] for part in ("", "_th", "_st")
          for k in ("pq", "sq", "rq")}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--parity_data", default=None,
                      help="COCO panoptic folder (make-synthetic layout): "
                      "parity and PQ of every format on its val split.")
  parser.add_argument("--parity_images", type=int, default=None,
                      help="--parity_data: the first N images only.")
  parser.add_argument("--gin_file", default="quickstart/axial_deeplab",
                      help="--parity_data: the experiment of the model.")
  parser.add_argument("--gin_param", action="append", default=[],
                      help="--parity_data: extra gin bindings.")
  parser.add_argument("--checkpoint_path", default=None,
                      help="--parity_data: the trained model.")
  parser.add_argument("--sizes", default="513x513,1025x2049")
  parser.add_argument("--quant", default="float32,float16,int8")
  parser.add_argument("--warmup", type=int, default=1)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--output", default="benchmarks/speed/deploy.json")
  args = parser.parse_args(argv)
  args.quant = args.quant.split(",")
  if args.parity_data:
    if not args.checkpoint_path:
      print("error: --parity_data needs --checkpoint_path (a trained "
            "model).", file=sys.stderr)
      return 2
    try:
      result = parity(args)
    except (ValueError, OSError) as e:
      print(f"error: {e}", file=sys.stderr)
      return 2
    _write(args, [result], model={"gin_file": args.gin_file,
                                  "gin_params": args.gin_param,
                                  "checkpoint_path": args.checkpoint_path})
    print(json.dumps(result), flush=True)
    return 0
  from axial_deeplab_tf.modeling import registry  # pylint: disable=g-import-not-at-top
  import axial_deeplab_tf.modeling.zoo  # pylint: disable=g-import-not-at-top,unused-import
  import tf_keras  # pylint: disable=g-import-not-at-top
  tf_keras.utils.set_random_seed(0)
  model = registry.build("axial_deeplab_s", num_classes=NUM_CLASSES,
                         **QUICKSTART)
  results = []
  for text in args.sizes.split(","):
    height, width = (int(v) for v in text.split("x"))
    model(tf.zeros([1, height, width, 3], tf.uint8), training=False)
    with tempfile.TemporaryDirectory() as workdir:
      results.append(run((height, width), args, model, workdir))
    print(json.dumps(results[-1]), flush=True)
    _write(args, results)


def _write(args, results, model=None):
  """Writes the report (after every size, so a long run keeps its part)."""
  report = {
      "command": "python " + " ".join(sys.argv),
      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(
          timespec="seconds"),
      "machine": {"cpu": platform.processor() or platform.machine(),
                  "cores": os.cpu_count(), "tensorflow": tf.__version__},
      "model": model or {"name": "axial_deeplab_s", "overrides": {
          k: repr(v) for k, v in QUICKSTART.items()},
                         "num_classes": NUM_CLASSES},
      "results": results,
      "load_average": list(os.getloadavg()),
  }
  os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
  with open(args.output, "w") as f:
    json.dump(report, f, indent=1)


if __name__ == "__main__":
  sys.exit(main())
