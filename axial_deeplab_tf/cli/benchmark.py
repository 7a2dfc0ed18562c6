r"""Benchmarks layers and models; writes JSON, PNG plots and BENCHMARKS.md.

Suites (--suite, comma separated):
  resnet_ratio  axial_resnet_50l (--model) against
                tf_keras.applications.ResNet50(weights=None) in the same
                process: forward and forward+backward latency, interleaved,
                XLA off/on, plus achieved GFLOP/s against a float32 matmul.
  layers        attention layers (axial global / local span, local 2D,
                global 2D, ISSA, MSCA): time and peak memory against
                feature-map size, fitted exponents, plots.
  models        every zoo model (--models): params, M-Adds, latency at
                batch 1, throughput, XLA off/on, float32 and bfloat16.
  issa_dense    ISSA against dense attention with ISSA's channels
                (--issa_sizes, --issa_channels): forward time and peak
                memory, ratios ISSA/dense.
  recompute_memory
                one training step of --panoptic_model at --recompute_crop
                with recompute_grad off and on (same weights): peak memory,
                time, largest loss and gradient differences.
  input_pipeline
                examples/s of the panoptic training input pipeline on
                synthetic TFRecords (--pipeline_*) beside the train-step
                time of --panoptic_model at the same crop.
  large_inference
                --panoptic_model inference at --large_size (latency, peak
                memory) and GFLOP/s at --large_gflops_size against a matmul.

  axial-deeplab benchmark --suite=resnet_ratio --runs=11 \
      --output_dir=/tmp/bench --markdown=BENCHMARKS.md
  axial-deeplab benchmark --suite=layers --layer_sizes=32,48,64,96,128 \
      --output_dir=/tmp/bench --markdown=BENCHMARKS.md
  axial-deeplab benchmark --suite=models --model_input_size=64 \
      --output_dir=/tmp/bench --markdown=BENCHMARKS.md
  axial-deeplab benchmark --suite=issa_dense --runs=5 --warmup=1 \
      --output_dir=/tmp/bench --markdown=BENCHMARKS.md
  axial-deeplab benchmark --suite=recompute_memory --runs=3 --warmup=1 \
      --output_dir=/tmp/bench --markdown=BENCHMARKS.md
  axial-deeplab benchmark --suite=input_pipeline --runs=3 --warmup=1 \
      --output_dir=/tmp/bench --markdown=BENCHMARKS.md
  axial-deeplab benchmark --suite=large_inference --runs=5 --warmup=1 \
      --output_dir=/tmp/bench --markdown=BENCHMARKS.md

Each suite writes <output_dir>/<suite>.json (or <section>.json with
--section) and its PNGs; with --markdown it replaces only its own generated
section of that file (other sections are kept). --render_json re-renders a
saved result without running anything. The protocol is described in axial_deeplab_tf/benchmarks/benchmark.py.
"""

import ast
import os
import shlex
import sys

from absl import app
from absl import flags
from absl import logging

# Peak memory is read from TensorFlow's CPU allocator statistics, which only
# its BFC allocator keeps; set before TensorFlow loads.
os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")

# axial_deeplab_tf.benchmarks.benchmark.SUITES, spelled out so that flag errors are
# reported before TensorFlow loads.
_SUITES = ("resnet_ratio", "layers", "models", "issa_dense",
           "recompute_memory", "input_pipeline", "large_inference")

flags.DEFINE_list("suite", ["resnet_ratio"],
                  "Suites to run: " + ", ".join(_SUITES) + ".")
flags.DEFINE_string("output_dir", None, "Directory for JSON and PNG files.")
flags.DEFINE_string("markdown", None,
                    "Markdown file whose generated sections to rewrite "
                    "(e.g. BENCHMARKS.md); unset: none.")
flags.DEFINE_integer("runs", 7, "Timed (interleaved) rounds per case.")
flags.DEFINE_integer("warmup", 2, "Untimed calls per function first.")
flags.DEFINE_list("xla", ["off", "on"],
                  "jit_compile settings for resnet_ratio and models.")
# resnet_ratio
flags.DEFINE_string("model", "axial_resnet_50l",
                    "Zoo model compared with ResNet-50.")
flags.DEFINE_integer("input_size", 224, "Square input side (resnet_ratio).")
flags.DEFINE_integer("batch_size", 1, "Batch size (resnet_ratio).")
flags.DEFINE_list("modes", ["forward", "forward_backward"],
                  "resnet_ratio modes: forward, forward_backward.")
flags.DEFINE_integer("matmul_size", 2048,
                     "Side of the reference float32 matmul (resnet_ratio, "
                     "models, large_inference).")
# layers
flags.DEFINE_list("layer_sizes", ["32", "48", "64", "96", "128"],
                  "Square feature-map sides (layers).")
flags.DEFINE_list("layer_kinds",
                  ["axial_global", "axial_local", "local_2d", "global_2d",
                   "issa", "msca"], "Layer kinds (layers).")
flags.DEFINE_integer("layer_channels", 64, "Input channels (layers).")
flags.DEFINE_integer("local_span", 15, "Span of the local axial layer.")
flags.DEFINE_integer("max_dense_pixels", 4096,
                     "Largest pixel count for global_2d (layers).")
# models
flags.DEFINE_list("models", ["all"], "Zoo models (models suite); 'all'.")
flags.DEFINE_integer("model_input_size", 64, "Square input side (models).")
flags.DEFINE_list("dtypes", ["float32", "bfloat16"],
                  "Compute dtypes (models): float32, bfloat16.")
flags.DEFINE_integer("throughput_batch", 4,
                     "Batch size of the throughput measurement (models); 0 "
                     "skips it; -1 finds the largest power-of-two batch "
                     "whose peak memory fits --throughput_memory_gib.")
flags.DEFINE_float("throughput_memory_gib", None,
                   "Memory budget of --throughput_batch=-1 (models); default "
                   "half of the memory available at the start.")
flags.DEFINE_integer("default_num_classes", None,
                     "num_classes for zoo models without a default (models);"
                     " unset: those models report an error.")
# issa_dense
flags.DEFINE_list("issa_sizes", ["64x64", "128x256"],
                  "Feature-map sizes HxW (issa_dense).")
flags.DEFINE_integer("issa_channels", 512,
                     "Input, value and output channels (issa_dense).")
flags.DEFINE_integer("issa_key_channels", 256,
                     "Query/key channels (issa_dense).")
flags.DEFINE_list("issa_partition", ["8", "8"],
                  "ISSA partition factors P_h,P_w (issa_dense).")
# recompute_memory, input_pipeline, large_inference
flags.DEFINE_string("panoptic_model", "axial_deeplab_s",
                    "Zoo model of recompute_memory, input_pipeline and "
                    "large_inference.")
flags.DEFINE_integer("num_classes", 133,
                     "num_classes of --panoptic_model (at least 6, the "
                     "synthetic data's classes).")
flags.DEFINE_list("model_overrides", [],
                  "Further builder arguments of --panoptic_model as "
                  "key=value (Python literals), e.g. depth=26,"
                  "width_multiplier=0.25.")
flags.DEFINE_string("recompute_crop", "513x513",
                    "Training crop HxW (recompute_memory).")
flags.DEFINE_string("pipeline_crop", "1025x1025",
                    "Training crop HxW (input_pipeline).")
flags.DEFINE_string("pipeline_image_size", "1024x2048",
                    "Size HxW of the written images (input_pipeline).")
flags.DEFINE_integer("pipeline_images", 8,
                     "Images written (input_pipeline; repeated).")
flags.DEFINE_enum("pipeline_image_format", "png", ["png", "jpeg"],
                  "Encoding of the written images (input_pipeline).")
flags.DEFINE_float("pipeline_min_scale", 0.5,
                   "Random scale minimum (input_pipeline).")
flags.DEFINE_float("pipeline_max_scale", 1.5,
                   "Random scale maximum (input_pipeline; COCO 1.5, "
                   "Cityscapes 2.0).")
flags.DEFINE_integer("pipeline_batches", 40,
                     "Timed batches (input_pipeline).")
flags.DEFINE_integer("pipeline_warmup_batches", 3,
                     "Untimed batches first (input_pipeline).")
flags.DEFINE_string("large_size", "1025x2049",
                    "Input HxW of the latency and memory measurement "
                    "(large_inference).")
flags.DEFINE_string("large_gflops_size", "1025x1025",
                    "Input HxW of the GFLOP/s measurement "
                    "(large_inference).")
flags.DEFINE_string("section", None,
                    "Name of the JSON file and markdown section (default: "
                    "the suite name); lets runs with different flags keep "
                    "separate sections. Only with a single --suite.")
flags.DEFINE_string("render_json", None,
                    "Instead of running: re-render the plots and markdown "
                    "section of a saved <section>.json (keeps its machine, "
                    "date and command).")
flags.mark_flag_as_required("output_dir")
flags.register_validator(
    "suite", lambda v: bool(v) and all(s in _SUITES for s in v),
    message="--suite takes some of " + ", ".join(_SUITES) + ".")
flags.register_validator(
    "xla", lambda v: bool(v) and all(s in ("off", "on") for s in v),
    message="--xla takes off and/or on.")
FLAGS = flags.FLAGS

_TITLES = {
    "resnet_ratio": "### Axial-ResNet against ResNet-50 (generated)",
    "layers": "### Attention layers against feature-map size (generated)",
    "models": "### Model zoo (generated)",
    "issa_dense": "### ISSA against dense attention (generated)",
    "recompute_memory": "### Gradient recomputation: memory and results "
                        "(generated)",
    "input_pipeline": "### Input pipeline against the train step "
                      "(generated)",
    "large_inference": "### Inference on large inputs (generated)",
}


def _xla_flag(values):
  modes = []
  for v in values:
    if v not in ("off", "on"):
      raise ValueError(f"--xla takes 'off' and/or 'on', got {v!r}.")
    modes.append(v == "on")
  return modes


def _ints(name, values):
  try:
    return [int(v) for v in values]
  except ValueError:
    raise ValueError(f"--{name} takes integers, got {values!r}.") from None


def _size(name, value):
  """Parses "HxW" into (H, W)."""
  parts = value.lower().split("x")
  try:
    height, width = (int(p) for p in parts)
  except ValueError:
    raise ValueError(f"--{name} takes HxW (e.g. 128x256), got "
                     f"{value!r}.") from None
  if height < 1 or width < 1:
    raise ValueError(f"--{name} takes positive sizes, got {value!r}.")
  return (height, width)


def _overrides(values):
  """Parses key=value items; values are Python literals, else strings."""
  out = {}
  for item in values:
    key, sep, text = item.partition("=")
    if not sep or not key.isidentifier():
      raise ValueError(f"--model_overrides takes key=value items, got "
                       f"{item!r}.")
    try:
      out[key] = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      out[key] = text
  return out


def _command() -> str:
  return "python tools/benchmark.py " + " ".join(
      shlex.quote(a) for a in sys.argv[1:])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if FLAGS.render_json:
    # Re-renders a saved result (its machine, date and command are kept).
    import json
    from axial_deeplab_tf.benchmarks import report
    try:
      with open(FLAGS.render_json) as f:
        result = json.load(f)
      result.setdefault("section", result["suite"])
      os.makedirs(FLAGS.output_dir, exist_ok=True)
      _write(report, result)
    except (OSError, KeyError, ValueError) as e:
      sys.exit(f"ERROR: --render_json={FLAGS.render_json}: {e}")
    return
  if FLAGS.section is not None:
    if len(FLAGS.suite) != 1:
      raise app.UsageError("--section needs exactly one --suite.")
    if not FLAGS.section.replace("_", "").isalnum():
      raise app.UsageError(f"--section takes letters, digits and '_', got "
                           f"{FLAGS.section!r}.")
  try:
    xla = _xla_flag(FLAGS.xla)
    sizes = _ints("layer_sizes", FLAGS.layer_sizes)
    issa_sizes = [_size("issa_sizes", v) for v in FLAGS.issa_sizes]
    issa_partition = _ints("issa_partition", FLAGS.issa_partition)
    overrides = _overrides(FLAGS.model_overrides)
    recompute_crop = _size("recompute_crop", FLAGS.recompute_crop)
    pipeline_crop = _size("pipeline_crop", FLAGS.pipeline_crop)
    pipeline_image_size = _size("pipeline_image_size",
                                FLAGS.pipeline_image_size)
    large_size = _size("large_size", FLAGS.large_size)
    large_gflops_size = _size("large_gflops_size", FLAGS.large_gflops_size)
  except ValueError as e:
    raise app.UsageError(str(e))
  # Imported here so that flag errors are reported before TF loads.
  import tensorflow as tf
  from axial_deeplab_tf.benchmarks import benchmark
  from axial_deeplab_tf.benchmarks import report
  from axial_deeplab_tf.benchmarks import suites as benchmark_suites
  tf.get_logger().setLevel("ERROR")  # Retracing notices of the many cases.
  os.makedirs(FLAGS.output_dir, exist_ok=True)
  machine = benchmark.machine_info()
  log = lambda msg: print(msg, file=sys.stderr, flush=True)
  for suite in FLAGS.suite:
    try:
      if suite == "resnet_ratio":
        result = benchmark.run_resnet_ratio(
            model_name=FLAGS.model, input_size=FLAGS.input_size,
            batch_size=FLAGS.batch_size, runs=FLAGS.runs,
            warmup=FLAGS.warmup, xla=xla, modes=FLAGS.modes,
            matmul_size=FLAGS.matmul_size, log=log)
      elif suite == "layers":
        result = benchmark.run_layers(
            sizes=sizes, kinds=FLAGS.layer_kinds,
            channels=FLAGS.layer_channels, runs=FLAGS.runs,
            warmup=FLAGS.warmup, local_span=FLAGS.local_span,
            max_dense_pixels=FLAGS.max_dense_pixels, log=log)
      elif suite == "issa_dense":
        result = benchmark_suites.run_issa_dense(
            sizes=issa_sizes, channels=FLAGS.issa_channels,
            key_channels=FLAGS.issa_key_channels, partition=issa_partition,
            runs=FLAGS.runs, warmup=FLAGS.warmup, log=log)
      elif suite == "recompute_memory":
        result = benchmark_suites.run_recompute_memory(
            model_name=FLAGS.panoptic_model, crop=recompute_crop,
            num_classes=FLAGS.num_classes, model_overrides=overrides,
            runs=FLAGS.runs, warmup=FLAGS.warmup, log=log)
      elif suite == "input_pipeline":
        result = benchmark_suites.run_input_pipeline(
            crop=pipeline_crop, image_size=pipeline_image_size,
            num_images=FLAGS.pipeline_images,
            image_format=FLAGS.pipeline_image_format,
            min_scale=FLAGS.pipeline_min_scale,
            max_scale=FLAGS.pipeline_max_scale,
            batches=FLAGS.pipeline_batches,
            warmup_batches=FLAGS.pipeline_warmup_batches,
            model_name=FLAGS.panoptic_model, num_classes=FLAGS.num_classes,
            model_overrides=overrides, runs=FLAGS.runs, warmup=FLAGS.warmup,
            log=log)
      elif suite == "large_inference":
        result = benchmark_suites.run_large_inference(
            model_name=FLAGS.panoptic_model, size=large_size,
            gflops_size=large_gflops_size, num_classes=FLAGS.num_classes,
            model_overrides=overrides, runs=FLAGS.runs, warmup=FLAGS.warmup,
            matmul_size=FLAGS.matmul_size, log=log)
      else:
        names = None if FLAGS.models == ["all"] else FLAGS.models
        result = benchmark.run_models(
            names=names, input_size=FLAGS.model_input_size, runs=FLAGS.runs,
            warmup=FLAGS.warmup, xla=xla, dtypes=FLAGS.dtypes,
            throughput_batch=FLAGS.throughput_batch,
            default_num_classes=FLAGS.default_num_classes,
            matmul_size=FLAGS.matmul_size,
            throughput_memory_gib=FLAGS.throughput_memory_gib, log=log)
    except ValueError as e:
      sys.exit(f"ERROR: {e}")
    result["machine"] = machine
    result["command"] = _command()
    result["section"] = FLAGS.section or suite
    _write(report, result)


def _write(report, result):
  """Writes a result's JSON, plots and (with --markdown) its section."""
  name, suite = result["section"], result["suite"]
  json_path = os.path.join(FLAGS.output_dir, f"{name}.json")
  plots = report.write_plots(result, FLAGS.output_dir, prefix=name)
  report.save_json(result, json_path)
  logging.info("wrote %s and %d plots", json_path, len(plots))
  print(json_path)
  if FLAGS.markdown:
    md_dir = os.path.dirname(os.path.abspath(FLAGS.markdown))
    body = report.markdown_section(result, result["machine"],
                                   result["command"], plots,
                                   relative_to=md_dir)
    title = _TITLES[suite]
    if name != suite:
      title = title.replace(" (generated)", f": {name} (generated)")
    report.update_markdown_section(FLAGS.markdown, f"benchmark:{name}",
                                   title, body)
    print(FLAGS.markdown)
