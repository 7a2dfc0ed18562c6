"""Benchmark suites: ISSA vs dense attention, gradient recomputation, input.

Same protocol as `benchmark.py` (each measured function a `tf.function`,
warmed up, timed interleaved; same-run ratios; peak memory from the TF CPU
allocator statistics); each `run_*` returns a JSON-serialisable dict that
`markdown_lines` and `write_plots` render.

- `run_issa_dense`: InterlacedSparseSelfAttention against dense non-local
  attention with the same channels (the ISSA pass block applied to the whole
  map), forward time and peak memory per feature-map size.
- `run_recompute_memory`: one training step of a panoptic zoo model with
  recompute_grad off and on (same weights): peak memory, time, and the
  largest difference of the loss and of the gradients.
- `run_input_pipeline`: examples/s of the panoptic training input pipeline on
  TFRecords written for the run, beside the train-step time of the model at
  the same crop.
- `run_large_inference`: inference latency and peak memory on a large input,
  and achieved GFLOP/s on a square one against a float32 matmul.
"""

import inspect
import io
import os
import tempfile
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
import tf_keras

from axial_deeplab_tf.attention_math import check_positive_int
from axial_deeplab_tf.ops import fused_attention
from axial_deeplab_tf.benchmarks import benchmark as bench

# Targets stated in the generated sections.
ISSA_TARGET = {"size": [128, 256], "memory_ratio": 0.1, "time_ratio": 1 / 3}
RECOMPUTE_TARGET = {"memory_ratio": 0.6, "max_relative_difference": 1e-5}

# The synthetic records use COCO's label conventions.
_LABEL_DIVISOR = 256
_IGNORE_LABEL = 255
_MIB = 2.0**20


# ------------------------------------------------------------------ checks
def _check_hw(name: str, value: Any) -> List[int]:
  """Validates a (height, width) pair of positive ints."""
  if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or (
      len(value) != 2):
    raise ValueError(f"{name} must be (height, width), got {value!r}.")
  return [check_positive_int(f"{name}[{i}]", v) for i, v in enumerate(value)]


def _mib(value: Optional[float]) -> str:
  return "-" if value is None else f"{value / _MIB:.1f}"


def _num(value: Optional[float], digits: int = 3) -> str:
  return "-" if value is None else f"{value:.{digits}f}"


def _ratio(num: Optional[float], den: Optional[float]) -> Optional[float]:
  if num is None or den is None or den <= 0:
    return None
  return float(num) / float(den)


def _met(value: Optional[float], target: float) -> str:
  if value is None:
    return "not measured"
  return "met" if value <= target else "not met"


def max_relative_difference(a: np.ndarray, b: np.ndarray) -> float:
  """max |a - b| / max |a| (0 when both are zero, inf when only a is)."""
  a = np.asarray(a, np.float64)
  b = np.asarray(b, np.float64)
  if a.shape != b.shape:
    raise ValueError(f"shapes differ: {a.shape} vs {b.shape}.")
  diff = float(np.max(np.abs(a - b))) if a.size else 0.0
  scale = float(np.max(np.abs(a))) if a.size else 0.0
  if scale == 0.0:
    return 0.0 if diff == 0.0 else float("inf")
  return diff / scale


# ------------------------------------------------------------------ models
_MODELS: Dict[str, tf_keras.Model] = {}


def _builder_arguments(name: str) -> Dict[str, Any]:
  """The arguments `models.build(name)` passes to its builder by default."""
  from axial_deeplab_tf import models  # pylint: disable=g-import-not-at-top
  entry = models.get_entry(name)
  kwargs = {k: p.default
            for k, p in inspect.signature(entry.builder).parameters.items()
            if p.default is not inspect.Parameter.empty}
  kwargs.update(entry.defaults)
  return kwargs


def zoo_model(name: str, **overrides) -> tf_keras.Model:
  """Builds zoo model `name` (seed 0), reusing one built earlier in-process.

  Two calls share a model when the builder receives the same arguments
  (builder defaults, zoo defaults, overrides), which saves building and
  tracing time when several suites run in one process. Weights are random.

  Raises:
    ValueError: unknown model or an argument its builder does not take.
  """
  from axial_deeplab_tf import models  # pylint: disable=g-import-not-at-top
  known = _builder_arguments(name)
  unknown = sorted(set(overrides) - set(known))
  if unknown:
    raise ValueError(f"model_overrides {unknown} are not arguments of the "
                     f"builder of {name!r}; it takes {sorted(known)}.")
  key = repr((name, sorted({**known, **overrides}.items())))
  if key not in _MODELS:
    tf_keras.utils.set_random_seed(0)
    _MODELS[key] = models.build(name, **overrides)
  return _MODELS[key]


def _model_kwargs(runs: int, warmup: int, num_classes: int,
                  overrides: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
  """Checks a model suite's counts; returns its builder overrides."""
  bench._check_counts(runs, warmup)  # pylint: disable=protected-access
  overrides = dict(overrides or {})
  if "num_classes" in overrides:
    raise ValueError("model_overrides must not set num_classes; use the "
                     "num_classes argument.")
  overrides["num_classes"] = check_positive_int("num_classes", num_classes)
  return overrides


# --------------------------------------------------------- synthetic data
def synthetic_metadata():
  """Metadata of the synthetic shapes data (6 classes, COCO conventions)."""
  from axial_deeplab_tf.data import metadata  # pylint: disable=g-import-not-at-top
  from axial_deeplab_tf.data import synthetic  # pylint: disable=g-import-not-at-top
  return metadata.from_categories(
      list(synthetic.CATEGORIES), name="synthetic_shapes",
      label_divisor=_LABEL_DIVISOR, ignore_label=_IGNORE_LABEL)


def synthetic_panoptic_example(rng: np.random.Generator, height: int,
                               width: int, meta) -> Tuple[np.ndarray,
                                                          np.ndarray]:
  """One synthetic image and its panoptic label in the project's encoding.

  Returns:
    image: uint8 [height, width, 3]; panoptic: int32 [height, width] with
    semantic * label_divisor + instance (train ids of `meta`).
  """
  from axial_deeplab_tf.data import synthetic  # pylint: disable=g-import-not-at-top
  from axial_deeplab_tf.data.converters import common  # pylint: disable=g-import-not-at-top
  image, segment_ids, segments = synthetic.render_example(rng, height, width)
  panoptic = common.panoptic_from_segments(
      segment_ids,
      [(s["id"], s["category_id"], s["iscrowd"]) for s in segments],
      {c: i for i, c in enumerate(meta.original_category_ids)},
      frozenset(meta.thing_class_ids), meta.label_divisor, meta.ignore_label,
      label_path="<synthetic>")
  return image, panoptic


def _encode_image(image: np.ndarray, image_format: str) -> bytes:
  from PIL import Image  # pylint: disable=g-import-not-at-top
  buf = io.BytesIO()
  if image_format == "png":
    Image.fromarray(image).save(buf, format="PNG")
  else:
    Image.fromarray(image).save(buf, format="JPEG", quality=95)
  return buf.getvalue()


def write_synthetic_records(directory: str, num_images: int,
                            image_size: Sequence[int],
                            image_format: str = "png", seed: int = 0):
  """Writes synthetic panoptic examples as one TFRecord shard.

  Args:
    directory: output directory (must exist).
    num_images: examples to write.
    image_size: (height, width) of every image.
    image_format: "png" or "jpeg".
    seed: numpy seed of the drawings.

  Returns:
    (file pattern, DatasetMetadata).
  """
  from axial_deeplab_tf.data import tfrecord_schema as schema  # pylint: disable=g-import-not-at-top
  num_images = check_positive_int("num_images", num_images)
  height, width = _check_hw("image_size", image_size)
  if image_format not in ("png", "jpeg"):
    raise ValueError(f"image_format must be 'png' or 'jpeg', got "
                     f"{image_format!r}.")
  meta = synthetic_metadata()
  rng = np.random.default_rng(seed)
  path = os.path.join(directory, "train-00000-of-00001.tfrecord")
  with tf.io.TFRecordWriter(path) as writer:
    for i in range(num_images):
      image, panoptic = synthetic_panoptic_example(rng, height, width, meta)
      features = schema.image_features(
          encoded=_encode_image(image, image_format),
          image_format=image_format, height=height, width=width,
          filename=f"{i:06d}.{image_format}", source_id=str(i))
      features.update(schema.panoptic_features(
          panoptic, meta.label_divisor, meta.ignore_label))
      writer.write(schema.to_tf_example(features).SerializeToString())
  meta.save(directory)
  return path, meta


# The labels the Panoptic-DeepLab loss reads (PanopticTargetGenerator keys).
_TARGET_KEYS = ("semantic", "center_heatmap", "offset", "semantic_weights",
                "center_weights", "offset_weights")
_STEPS: Dict[int, Callable[..., Any]] = {}


def training_step(model) -> Callable[..., Any]:
  """The tf.function step(images, labels) -> (loss, gradients) of `model`.

  Forward in training mode, the Panoptic-DeepLab loss (reference weights,
  top-k 0.2, ignore 255) of `labels` (the PanopticTargetGenerator keys,
  batched), gradients of all trainable weights; no optimizer update. One
  function per model, so suites stepping the same model on inputs of the
  same shapes share its trace.
  """
  if id(model) not in _STEPS:
    from axial_deeplab_tf.losses import panoptic_losses  # pylint: disable=g-import-not-at-top
    loss_fn = panoptic_losses.PanopticDeepLabLoss(ignore_label=_IGNORE_LABEL)
    variables = model.trainable_variables

    @tf.function
    def step(images, labels):
      with tf.GradientTape() as tape:
        loss = loss_fn(model(images, training=True), labels)["total_loss"]
      return loss, tape.gradient(loss, variables)

    _STEPS[id(model)] = step
  return _STEPS[id(model)]


def _bound_step(model, images: tf.Tensor, labels: Mapping[str, tf.Tensor]):
  """A zero-argument call of `training_step(model)` on fixed inputs."""
  step = training_step(model)
  labels = {k: labels[k] for k in _TARGET_KEYS}
  return lambda: step(images, labels)


def _check_num_classes(num_classes: int, meta) -> None:
  if num_classes < len(meta.class_names):
    raise ValueError(f"num_classes must be at least the {len(meta.class_names)}"
                     f" classes of the synthetic data, got {num_classes}.")


# ------------------------------------------------------- suite: issa_dense
def attention_map_elements(height: int, width: int,
                           partition: Sequence[int]) -> Dict[str, int]:
  """Softmax-map elements of one forward pass, batch 1: dense and ISSA.

  Dense: N^2 (N = height * width). ISSA on the map padded to
  (Q_h P_h, Q_w P_w): the long-range pass has P_h P_w groups of Q_h Q_w
  positions, the short-range pass Q_h Q_w groups of P_h P_w.
  """
  p_h, p_w = partition
  q_h, q_w = -(-height // p_h), -(-width // p_w)
  cell, grid = p_h * p_w, q_h * q_w
  n = height * width
  return {"dense": n * n, "issa": cell * grid * grid + grid * cell * cell}


def run_issa_dense(sizes: Sequence[Sequence[int]] = ((64, 64), (128, 256)),
                   channels: int = 512,
                   key_channels: int = 256,
                   partition: Sequence[int] = (8, 8),
                   runs: int = 5,
                   warmup: int = 1,
                   log: Callable[[str], None] = print) -> Dict[str, Any]:
  """ISSA against dense attention with the same channels, forward pass.

  Dense = `ISSASelfAttentionBlock` on the whole map: the block each ISSA pass
  applies to its groups (one head; query and key through two 1x1 conv + BN +
  ReLU to key_channels, value 1x1 conv to `channels`, scaled softmax, output
  1x1 conv + BN + ReLU to `channels`), i.e. non-local attention with ISSA's
  channel setup. Both in inference mode, batch 1, float32, XLA off.

  Args:
    sizes: (height, width) feature-map sizes.
    channels: input, value and output channels (512 in ISANet).
    key_channels: query/key channels (256 in ISANet).
    partition: ISSA partition factors (P_h, P_w).
    runs: timed interleaved rounds (ISSA, dense) per size.
    warmup: untimed calls of each first (at least one, which traces).
    log: progress printer.

  Returns:
    A JSON-serialisable dict; a size whose measurement fails (e.g. the dense
    attention map does not fit in memory) has an "error" entry.
  """
  from axial_deeplab_tf.layers import issa  # pylint: disable=g-import-not-at-top
  bench._check_counts(runs, warmup)  # pylint: disable=protected-access
  if not sizes:
    raise ValueError("sizes must name at least one (height, width).")
  sizes = [_check_hw(f"sizes[{i}]", s) for i, s in enumerate(sizes)]
  channels = check_positive_int("channels", channels)
  key_channels = check_positive_int("key_channels", key_channels)
  partition = _check_hw("partition", partition)
  result = {
      "suite": "issa_dense", "sizes": sizes, "channels": channels,
      "key_channels": key_channels, "partition_factors": partition,
      "runs": runs, "warmup": warmup, "batch": 1, "dtype": "float32",
      "xla": False, "mode": "forward, inference (training=False)",
      "issa_layer": "axial_deeplab_tf.layers.issa."
                    "InterlacedSparseSelfAttention",
      "dense_layer": "axial_deeplab_tf.layers.issa.ISSASelfAttentionBlock "
                     "on the whole map (one head, ISSA's channels)",
      "memory_method": bench.MEMORY_METHOD,
      "targets": ISSA_TARGET, "cases": [],
  }
  block = dict(key_channels=key_channels, value_channels=channels,
               output_channels=channels)
  for height, width in sizes:
    elements = attention_map_elements(height, width, partition)
    case = {"size": [height, width], "pixels": height * width,
            "attention_map_bytes": {k: 4 * v for k, v in elements.items()}}
    result["cases"].append(case)
    log(f"issa_dense {height}x{width}x{channels}")
    t0 = time.perf_counter()
    try:
      tf_keras.utils.set_random_seed(0)
      layers = {"issa": issa.InterlacedSparseSelfAttention(
                    partition_factors=tuple(partition), **block),
                "dense": issa.ISSASelfAttentionBlock(**block)}
      x = tf.random.stateless_normal([1, height, width, channels],
                                     seed=[height, width])
      fns = {}
      for name, layer in layers.items():
        # Built on a small map: an eager call at full size would run the
        # dense attention once more outside the measurement.
        layer(tf.zeros([1, 2, 2, channels]))
        fns[name] = bench.forward_function(layer, x)
        for _ in range(max(warmup, 1)):
          bench._wait(fns[name]())  # pylint: disable=protected-access
      peaks = {name: bench._peak_bytes(fn)  # pylint: disable=protected-access
               for name, fn in fns.items()}
      times = bench.time_interleaved(fns, runs, 0)
    except (tf.errors.ResourceExhaustedError, MemoryError) as e:
      case["error"] = f"{type(e).__name__}: {e}"[:300]
      log(f"  failed: {case['error']}")
      continue
    case["seconds"] = {k: bench.summarize(v) for k, v in times.items()}
    case["time_ratio"] = bench.ratio_stats(times["issa"], times["dense"])
    case["peak_bytes"] = peaks
    case["memory_ratio"] = _ratio(peaks["issa"], peaks["dense"])
    log(f"  time ratio {case['time_ratio']['wall_ratio_of_medians']:.3f}, "
        f"memory ratio {case['memory_ratio']} "
        f"({time.perf_counter() - t0:.0f} s)")
  return result


# ------------------------------------------------- suite: recompute_memory
def _gradient_differences(names: Sequence[str], a: Sequence[Any],
                          b: Sequence[Any]) -> Dict[str, Any]:
  """Largest per-variable relative difference of two gradient lists."""
  worst, worst_name, mismatched = 0.0, None, []
  for name, ga, gb in zip(names, a, b):
    if ga is None or gb is None:
      if (ga is None) != (gb is None):
        mismatched.append(name)
      continue
    d = max_relative_difference(ga, gb)
    if d > worst:
      worst, worst_name = d, name
  if mismatched:
    worst = float("inf")
  return {"max_relative_difference": worst, "worst_variable": worst_name,
          "gradient_present_in_one_only": mismatched,
          "compared": sum(g is not None for g in a)}


def run_recompute_memory(model_name: str = "axial_deeplab_s",
                         crop: Sequence[int] = (513, 513),
                         num_classes: int = 133,
                         model_overrides: Optional[Mapping[str, Any]] = None,
                         runs: int = 3,
                         warmup: int = 1,
                         log: Callable[[str], None] = print
                         ) -> Dict[str, Any]:
  """One training step with recompute_grad off and on: memory, time, results.

  Both variants are built in this process; the second receives the first's
  weights (set_weights). The step: forward in training mode on a synthetic
  image, the Panoptic-DeepLab loss on targets built from its panoptic label,
  gradients of all trainable weights (no optimizer update). Peak memory is
  measured in-process, one step at a time, as the allocator peak minus the
  bytes live before the step, so the other variant's resident weights do
  not enter it.

  Args:
    model_name: a zoo model whose builder takes recompute_grad.
    crop: (height, width) of the image.
    num_classes: semantic classes of the model (>= 6, the synthetic data's).
    model_overrides: further builder arguments (not num_classes or
      recompute_grad; a drop-path rate > 0 would make the two steps draw
      different random masks).
    runs: timed interleaved rounds.
    warmup: untimed calls of each step first (the first traces and gives
      the compared loss and gradients).
    log: progress printer.

  Returns:
    A JSON-serialisable dict.
  """
  overrides = _model_kwargs(runs, warmup, num_classes, model_overrides)
  height, width = _check_hw("crop", crop)
  if "recompute_grad" in overrides:
    raise ValueError("model_overrides must not set recompute_grad; the "
                     "suite builds both settings.")
  if "recompute_grad" not in _builder_arguments(model_name):
    raise ValueError(f"model {model_name!r} has no recompute_grad option.")
  if overrides.get("drop_path_rate", 0.0):
    raise ValueError(f"drop_path_rate must be 0 here (random masks differ "
                     f"between the two steps), got "
                     f"{overrides['drop_path_rate']!r}.")
  meta = synthetic_metadata()
  _check_num_classes(num_classes, meta)
  from axial_deeplab_tf.data import targets  # pylint: disable=g-import-not-at-top
  image, panoptic = synthetic_panoptic_example(
      np.random.default_rng(0), height, width, meta)
  generator = targets.PanopticTargetGenerator(
      thing_class_ids=meta.thing_class_ids, ignore_label=meta.ignore_label,
      label_divisor=meta.label_divisor)
  labels = {k: v[tf.newaxis] for k, v in generator(panoptic).items()}
  images = tf.constant(image[np.newaxis], tf.float32)
  variants = {"recompute_off": False, "recompute_on": True}
  built, fns, first = {}, {}, {}
  for key, recompute in variants.items():
    t0 = time.perf_counter()
    built[key] = zoo_model(model_name, recompute_grad=recompute, **overrides)
    log(f"{model_name} recompute_grad={recompute}: built in "
        f"{time.perf_counter() - t0:.0f} s")
  built["recompute_on"].set_weights(built["recompute_off"].get_weights())
  for key, model in built.items():
    t0 = time.perf_counter()
    fns[key] = _bound_step(model, images, labels)
    loss, grads = fns[key]()
    first[key] = (float(loss), [None if g is None else g.numpy()
                                for g in grads])
    for _ in range(warmup - 1):
      bench._wait(fns[key]())  # pylint: disable=protected-access
    log(f"  {key}: traced and warmed up in {time.perf_counter() - t0:.0f} s")
  peaks = {k: bench._peak_bytes(fn)  # pylint: disable=protected-access
           for k, fn in fns.items()}
  times = bench.time_interleaved(fns, runs, 0)
  loss_off, grads_off = first["recompute_off"]
  loss_on, grads_on = first["recompute_on"]
  names = [v.name for v in built["recompute_off"].trainable_variables]
  result = {
      "suite": "recompute_memory", "model": model_name,
      "model_overrides": {k: v for k, v in overrides.items()
                          if k != "num_classes"},
      "num_classes": num_classes, "crop": [height, width], "batch": 1,
      "dtype": "float32", "xla": False, "runs": runs, "warmup": warmup,
      "step": "forward (training mode), Panoptic-DeepLab loss on targets "
              "of a synthetic panoptic label, gradients of all trainable "
              "weights; no optimizer update",
      "memory_method": ("in-process, both variants built in one process, "
                        "one step of each after its warm-up: "
                        + bench.MEMORY_METHOD + "; the other variant's "
                        "weights are live before the step and so "
                        "subtracted"),
      "trainable_variables": len(names),
      "variants": {k: {"recompute_grad": variants[k],
                       "peak_bytes": peaks[k],
                       "seconds": bench.summarize(times[k])}
                   for k in variants},
      "memory_ratio": _ratio(peaks["recompute_on"], peaks["recompute_off"]),
      "time_ratio": bench.ratio_stats(times["recompute_on"],
                                      times["recompute_off"]),
      "loss": {"recompute_off": loss_off, "recompute_on": loss_on},
      "loss_relative_difference": max_relative_difference(
          np.float64(loss_off), np.float64(loss_on)),
      "gradients": _gradient_differences(names, grads_off, grads_on),
      "targets": RECOMPUTE_TARGET,
  }
  log(f"  memory ratio {result['memory_ratio']}, gradient difference "
      f"{result['gradients']['max_relative_difference']:.2e}")
  return result


# --------------------------------------------------- suite: input_pipeline
def run_input_pipeline(crop: Sequence[int] = (1025, 1025),
                       image_size: Sequence[int] = (1024, 2048),
                       num_images: int = 8,
                       image_format: str = "png",
                       min_scale: float = 0.5,
                       max_scale: float = 1.5,
                       flip_probability: float = 0.5,
                       batches: int = 40,
                       warmup_batches: int = 3,
                       model_name: str = "axial_deeplab_s",
                       num_classes: int = 133,
                       model_overrides: Optional[Mapping[str, Any]] = None,
                       runs: int = 3,
                       warmup: int = 1,
                       log: Callable[[str], None] = print) -> Dict[str, Any]:
  """Training input pipeline throughput beside the model's train step.

  Writes `num_images` synthetic panoptic images in the project's TFRecord
  schema to a temporary directory, reads them with `build_dataset` in
  training mode (shuffle, repeat, parallel decode and augmentation,
  Panoptic-DeepLab targets, prefetch), batch 1, and times `batches` batches
  after `warmup_batches`. Then, with the input iterator released, times the
  train step of the model on the last batch (`training_step`: forward in
  training mode, Panoptic-DeepLab loss, gradients). The two are
  measured one after the other: the pipeline runs ahead in background
  threads, so interleaving would hide its cost.

  Args:
    crop: training crop (height, width).
    image_size: (height, width) of the written images.
    num_images: images written (the pipeline repeats them).
    image_format: "png" or "jpeg" encoding of the images.
    min_scale, max_scale: random scale range.
    flip_probability: chance of a horizontal flip.
    batches: timed batches.
    warmup_batches: untimed batches first (pipeline start-up).
    model_name: zoo model of the train step.
    num_classes: its semantic classes (>= 6).
    model_overrides: further builder arguments.
    runs: timed train steps.
    warmup: untimed train steps first (the first traces).
    log: progress printer.

  Returns:
    A JSON-serialisable dict.
  """
  from axial_deeplab_tf.data import input_pipeline  # pylint: disable=g-import-not-at-top
  overrides = _model_kwargs(runs, warmup, num_classes, model_overrides)
  crop = _check_hw("crop", crop)
  batches = check_positive_int("batches", batches)
  if isinstance(warmup_batches, bool) or not isinstance(
      warmup_batches, int) or warmup_batches < 0:
    raise ValueError(f"warmup_batches must be a non-negative int, got "
                     f"{warmup_batches!r}.")
  with tempfile.TemporaryDirectory(prefix="benchmark_pipeline_") as tmp:
    t0 = time.perf_counter()
    pattern, meta = write_synthetic_records(tmp, num_images, image_size,
                                            image_format)
    write_s = time.perf_counter() - t0
    record_bytes = os.path.getsize(pattern)
    _check_num_classes(num_classes, meta)
    log(f"wrote {num_images} records of {image_size[0]}x{image_size[1]} "
        f"({record_bytes / _MIB:.1f} MiB) in {write_s:.0f} s")
    config = input_pipeline.PanopticParserConfig.from_metadata(
        meta, crop_size=tuple(crop), min_scale=min_scale, max_scale=max_scale,
        flip_probability=flip_probability)
    dataset = input_pipeline.build_dataset(pattern, config, is_training=True,
                                           batch_size=1, seed=0)
    iterator = iter(dataset)
    t0 = time.perf_counter()
    for _ in range(warmup_batches):
      batch = next(iterator)
    startup_s = time.perf_counter() - t0
    per_batch = {"wall": [], "cpu": []}
    c_start, t_start = time.process_time(), time.perf_counter()
    for _ in range(batches):
      c0, t0 = time.process_time(), time.perf_counter()
      batch = next(iterator)
      per_batch["wall"].append(time.perf_counter() - t0)
      per_batch["cpu"].append(time.process_time() - c0)
    wall = time.perf_counter() - t_start
    cpu = time.process_time() - c_start
    # Stops the background threads before the step is timed.
    del iterator, dataset
  features, labels = batch
  log(f"input pipeline: {batches / wall:.2f} examples/s")
  t0 = time.perf_counter()
  model = zoo_model(model_name, **overrides)
  step = _bound_step(model, features["image"], labels)
  times = bench.time_interleaved({"train_step": step}, runs, warmup)
  step_s = bench.summarize(times["train_step"])
  log(f"train step: {step_s['median_s']:.2f} s "
      f"({time.perf_counter() - t0:.0f} s incl. build and tracing)")
  seconds_per_example = wall / batches
  return {
      "suite": "input_pipeline",
      "records": {"num_images": num_images,
                  "image_size": list(image_size),
                  "image_format": image_format, "bytes": record_bytes,
                  "write_s": write_s,
                  "content": "synthetic shapes (axial_deeplab_tf.data."
                             "synthetic), panoptic label in the project's "
                             "TFRecord schema"},
      "augmentation": {"crop": crop, "min_scale": min_scale,
                       "max_scale": max_scale,
                       "flip_probability": flip_probability,
                       "targets": "Panoptic-DeepLab targets generated"},
      "batch": 1, "batch_image_shape": features["image"].shape.as_list(),
      "pipeline": {"batches": batches, "warmup_batches": warmup_batches,
                   "startup_s": startup_s, "wall_s": wall,
                   "examples_per_s": batches / wall,
                   "seconds_per_example": seconds_per_example,
                   "cpu_seconds_per_example": cpu / batches,
                   "batch_seconds": bench.summarize(per_batch)},
      "model": model_name,
      "model_overrides": {k: v for k, v in overrides.items()
                          if k != "num_classes"},
      "num_classes": num_classes, "runs": runs, "warmup": warmup,
      "train_step": dict(step_s, steps_per_s=1.0 / step_s["median_s"]),
      "step": "forward (training mode), Panoptic-DeepLab loss, gradients "
              "of all trainable weights, no optimizer update (an element-wise"
              " update of the weights, small beside the two passes); "
              "float32, XLA off",
      "input_to_step_ratio": seconds_per_example / step_s["median_s"],
  }


# -------------------------------------------------- suite: large_inference
def run_large_inference(model_name: str = "axial_deeplab_s",
                        size: Sequence[int] = (1025, 2049),
                        gflops_size: Sequence[int] = (1025, 1025),
                        num_classes: int = 133,
                        model_overrides: Optional[Mapping[str, Any]] = None,
                        runs: int = 5,
                        warmup: int = 1,
                        matmul_size: int = 2048,
                        log: Callable[[str], None] = print
                        ) -> Dict[str, Any]:
  """Inference latency and peak memory at two sizes; GFLOP/s at one.

  Uses the models suite's helpers: both inputs and the reference float32
  matmul are timed interleaved (`benchmark.time_inference`); M-Adds of the
  `gflops_size` input by `count_madds`.

  Args:
    model_name: zoo model (any input size).
    size: large input (height, width).
    gflops_size: input (height, width) whose GFLOP/s are reported.
    num_classes: semantic classes.
    model_overrides: further builder arguments.
    runs: timed interleaved rounds.
    warmup: untimed calls of each function first.
    matmul_size: side of the reference matmul.
    log: progress printer.

  Returns:
    A JSON-serialisable dict.
  """
  from axial_deeplab_tf.utils import madds as madds_lib  # pylint: disable=g-import-not-at-top
  overrides = _model_kwargs(runs, warmup, num_classes, model_overrides)
  shapes = {"large": [1, *_check_hw("size", size), 3],
            "gflops_input": [1, *_check_hw("gflops_size", gflops_size), 3]}
  t0 = time.perf_counter()
  model = zoo_model(model_name, **overrides)
  log(f"{model_name}: built in {time.perf_counter() - t0:.0f} s; counting "
      f"M-Adds at {shapes['gflops_input'][1:3]}")
  madds = madds_lib.count_madds(model, shapes["gflops_input"]).total
  inputs = {name: tf.random.stateless_uniform(shape, seed=[0, i],
                                              maxval=255.0)
            for i, (name, shape) in enumerate(shapes.items())}
  t0 = time.perf_counter()
  fns, medians, mm = bench.time_inference(
      model, inputs, bench.matmul_function(matmul_size), matmul_size, runs,
      warmup)
  peaks = {name: bench._peak_bytes(fns[name])  # pylint: disable=protected-access
           for name in inputs}
  achieved = bench.gflops(madds, medians["gflops_input"])
  log(f"  latency {medians['large'] * 1e3:.0f} ms at {shapes['large'][1:3]}"
      f", {achieved:.1f} GFLOP/s at {shapes['gflops_input'][1:3]} "
      f"({time.perf_counter() - t0:.0f} s incl. tracing)")
  return {
      "suite": "large_inference", "model": model_name,
      "model_overrides": {k: v for k, v in overrides.items()
                          if k != "num_classes"},
      "num_classes": num_classes, "batch": 1, "dtype": "float32",
      "xla": False, "runs": runs, "warmup": warmup,
      "matmul_size": matmul_size,
      "memory_method": bench.MEMORY_METHOD,
      "madds_method": madds_lib.METHOD,
      "fused_attention": fused_attention.usable(tf.float32),
      "cases": {name: {"size": shapes[name][1:3],
                       "latency_s": medians[name],
                       "peak_bytes": peaks[name]} for name in inputs},
      "gflops_madds": madds,
      "gflops": achieved,
      "matmul_gflops": mm,
      "fraction_of_matmul": achieved / mm,
  }


# ----------------------------------------------------------------- markdown
def _hw(size: Sequence[int]) -> str:
  return f"{size[0]}x{size[1]}"


def _overrides_text(result: Mapping[str, Any]) -> str:
  overrides = result.get("model_overrides") or {}
  if not overrides:
    return ""
  return " with " + ", ".join(f"{k}={v!r}" for k, v in
                              sorted(overrides.items()))


def _issa_lines(result: Mapping[str, Any]) -> List[str]:
  t = result["targets"]
  p_h, p_w = result["partition_factors"]
  lines = [
      f"`InterlacedSparseSelfAttention` (partition {p_h}x{p_w}) against "
      "dense attention with the same channels: `ISSASelfAttentionBlock` "
      "applied to the whole map, the block each ISSA pass runs on its groups"
      " (one head; query and key two 1x1 conv + BN + ReLU to "
      f"{result['key_channels']} channels, value and output "
      f"{result['channels']}), i.e. non-local attention in ISANet's setup. "
      f"Input {result['channels']} channels, batch 1, float32, XLA off, "
      f"forward in inference mode; median of {result['runs']} interleaved "
      f"rounds after {result['warmup']} warm-up calls. Peak memory: "
      f"{result['memory_method']}. Attention maps: float32 softmax maps of "
      "one pass, by formula (dense N^2; ISSA P_h P_w (Q_h Q_w)^2 + Q_h Q_w "
      "(P_h P_w)^2).",
      "",
      f"Target at {_hw(t['size'])}: ISSA peak memory <= "
      f"{t['memory_ratio']:.2f} x dense and time <= {t['time_ratio']:.2f} x "
      "dense.",
      "",
      "| map | dense ms | ISSA ms | time ISSA/dense (of medians) | (median "
      "of paired rounds) | dense peak MiB | ISSA peak MiB | memory "
      "ISSA/dense | attention maps MiB dense / ISSA | target |",
      "|---|---|---|---|---|---|---|---|---|---|",
  ]
  for c in result["cases"]:
    maps = (f"{_mib(c['attention_map_bytes']['dense'])} / "
            f"{_mib(c['attention_map_bytes']['issa'])}")
    if "error" in c:
      lines.append(f"| {_hw(c['size'])} | error: {c['error'][:120]} | | | | "
                   f"| | | {maps} | |")
      continue
    s, r = c["seconds"], c["time_ratio"]
    target = "-"
    if c["size"] == t["size"]:
      target = (f"memory {_met(c['memory_ratio'], t['memory_ratio'])}, "
                f"time {_met(r['wall_ratio_of_medians'], t['time_ratio'])}")
    lines.append(
        f"| {_hw(c['size'])} | {s['dense']['median_s'] * 1e3:.1f} | "
        f"{s['issa']['median_s'] * 1e3:.1f} | "
        f"**{r['wall_ratio_of_medians']:.3f}** | "
        f"{r['wall_median_paired_ratio']:.3f} | "
        f"{_mib(c['peak_bytes']['dense'])} | {_mib(c['peak_bytes']['issa'])}"
        f" | **{_num(c['memory_ratio'])}** | {maps} | {target} |")
  if not any(c["size"] == t["size"] for c in result["cases"]):
    lines += ["", f"The target size {_hw(t['size'])} was not measured in "
              "this run."]
  return lines


def _recompute_lines(result: Mapping[str, Any]) -> List[str]:
  t = result["targets"]
  v = result["variants"]
  g = result["gradients"]
  worst = max(result["loss_relative_difference"], g["max_relative_difference"])
  lines = [
      f"`{result['model']}`{_overrides_text(result)}, {result['num_classes']}"
      f" classes, one training step on a {_hw(result['crop'])} crop, batch "
      f"1, float32, XLA off: {result['step']}. The two variants have the "
      "same weights (set_weights). Median of "
      f"{result['runs']} interleaved rounds after {result['warmup']} warm-up"
      f" calls. Peak memory: {result['memory_method']}.",
      "",
      "| recompute_grad | peak MiB | step ms (median) | CPU s (median) |",
      "|---|---|---|---|",
  ]
  for key in ("recompute_off", "recompute_on"):
    s = v[key]["seconds"]
    lines.append(f"| {'on' if v[key]['recompute_grad'] else 'off'} | "
                 f"{_mib(v[key]['peak_bytes'])} | {s['median_s'] * 1e3:.0f} "
                 f"| {s['median_cpu_s']:.2f} |")
  r = result["time_ratio"]
  lines += [
      "",
      f"- Peak memory on / off: **{_num(result['memory_ratio'])}** "
      f"(target <= {t['memory_ratio']}: "
      f"{_met(result['memory_ratio'], t['memory_ratio'])}).",
      f"- Step time on / off: **{r['wall_ratio_of_medians']:.3f}** (median "
      f"of paired rounds {r['wall_median_paired_ratio']:.3f}).",
      f"- Same results: loss {result['loss']['recompute_off']:.6g} (off) vs "
      f"{result['loss']['recompute_on']:.6g} (on), relative difference "
      f"{result['loss_relative_difference']:.2e}; gradients of "
      f"{g['compared']} weights, largest max|g_off - g_on| / max|g_off| "
      f"{g['max_relative_difference']:.2e}"
      + (f" (`{g['worst_variable']}`)" if g["worst_variable"] else
         " (all gradients identical)")
      + (f"; gradient missing in one variant only for "
         f"{g['gradient_present_in_one_only']}"
         if g["gradient_present_in_one_only"] else "")
      + f". Tolerance {t['max_relative_difference']:.0e}: "
      f"{_met(worst, t['max_relative_difference'])}.",
  ]
  return lines


def _pipeline_lines(result: Mapping[str, Any]) -> List[str]:
  rec, aug, p = result["records"], result["augmentation"], result["pipeline"]
  step = result["train_step"]
  ratio = result["input_to_step_ratio"]
  lines = [
      f"Records: {rec['num_images']} images of {_hw(rec['image_size'])} "
      f"({rec['image_format']}, {rec['bytes'] / _MIB:.1f} MiB), "
      f"{rec['content']}. Pipeline: `build_dataset` in training mode "
      "(shuffle, repeat, parallel decode and augmentation, prefetch), crop "
      f"{_hw(aug['crop'])}, random scale {aug['min_scale']}-"
      f"{aug['max_scale']}, flip probability {aug['flip_probability']}, "
      f"{aug['targets']}; batch 1; {p['batches']} batches timed after "
      f"{p['warmup_batches']} warm-up batches (start-up "
      f"{p['startup_s']:.1f} s). Train step: `{result['model']}`"
      f"{_overrides_text(result)}, {result['num_classes']} classes, on a "
      f"pipeline batch: {result['step']}; median of {result['runs']} steps "
      f"after {result['warmup']} warm-up calls. Measured one after the other"
      " (the pipeline prefetches in background threads, which would hide its"
      " cost if interleaved with the step).",
      "",
      "| | ms per example | per second | process CPU s per example |",
      "|---|---|---|---|",
      f"| input pipeline | {p['seconds_per_example'] * 1e3:.1f} | "
      f"{p['examples_per_s']:.2f} examples/s | "
      f"{p['cpu_seconds_per_example']:.3f} |",
      f"| train step | {step['median_s'] * 1e3:.0f} | "
      f"{step['steps_per_s']:.3f} steps/s | {step['median_cpu_s']:.2f} |",
      "",
      f"Input time / step time: **{ratio:.3f}**: the input pipeline "
      + ("is the bottleneck" if ratio > 1 else "is not the bottleneck")
      + ". In training both share the CPU cores; the pipeline's CPU time per"
      " example is what it takes from the step.",
  ]
  return lines


def _large_lines(result: Mapping[str, Any]) -> List[str]:
  cases = result["cases"]
  lines = [
      f"`{result['model']}`{_overrides_text(result)}, {result['num_classes']}"
      " classes, inference (training=False), batch 1, float32, XLA off; "
      f"latency = median of {result['runs']} rounds after "
      f"{result['warmup']} warm-up calls, interleaved with the other input "
      f"and a {result['matmul_size']}^2 float32 matmul. Peak memory: "
      f"{result['memory_method']}. GFLOP/s = 2 x M-Adds / latency; M-Adds: "
      f"{result['madds_method']}." + bench.attention_note(result),
      "",
      "| input | latency ms | peak MiB | M-Adds (G) | GFLOP/s | % of "
      "matmul |",
      "|---|---|---|---|---|---|",
      f"| {_hw(cases['large']['size'])} | "
      f"{cases['large']['latency_s'] * 1e3:.0f} | "
      f"{_mib(cases['large']['peak_bytes'])} | - | - | - |",
      f"| {_hw(cases['gflops_input']['size'])} | "
      f"{cases['gflops_input']['latency_s'] * 1e3:.0f} | "
      f"{_mib(cases['gflops_input']['peak_bytes'])} | "
      f"{result['gflops_madds'] / 1e9:.1f} | {result['gflops']:.1f} | "
      f"**{100 * result['fraction_of_matmul']:.0f}%** |",
      "",
      f"Reference matmul: {result['matmul_gflops']:.1f} GFLOP/s.",
  ]
  return lines


def markdown_lines(result: Mapping[str, Any]) -> List[str]:
  """Body lines (after the machine lines) of a suite's generated section."""
  render = {"issa_dense": _issa_lines, "recompute_memory": _recompute_lines,
            "input_pipeline": _pipeline_lines,
            "large_inference": _large_lines}
  suite = result["suite"]
  if suite not in render:
    raise ValueError(f"suite must be one of {sorted(render)}, got {suite!r}.")
  return render[suite](result)


# ------------------------------------------------------------------- plots
def _bars(ax, labels: Sequence[str], series: Mapping[str, Sequence[float]],
          ylabel: str, log_scale: bool = False) -> None:
  """Grouped bars: one group per label, one bar per series."""
  width = 0.8 / max(len(series), 1)
  for i, (name, values) in enumerate(series.items()):
    xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(labels))]
    ax.bar(xs, [np.nan if v is None else v for v in values], width,
           label=name)
  ax.set_xticks(range(len(labels)))
  ax.set_xticklabels(labels, fontsize=8)
  ax.set_ylabel(ylabel)
  if log_scale:
    ax.set_yscale("log")
  ax.grid(True, axis="y", alpha=0.3)
  if len(series) > 1:
    ax.legend(fontsize=7)


def write_plots(result: Mapping[str, Any], plt, output_dir: str,
                prefix: str) -> List[str]:
  """Draws a suite's PNG into `output_dir`; returns the paths.

  Args:
    result: a result of one of this module's suites.
    plt: matplotlib.pyplot (Agg backend set by the caller).
    output_dir: existing directory.
    prefix: file name prefix.
  """
  suite = result["suite"]
  fig, axes = plt.subplots(1, 2, figsize=(10, 4))
  if suite == "issa_dense":
    cases = [c for c in result["cases"] if "error" not in c]
    labels = [_hw(c["size"]) for c in cases]
    _bars(axes[0], labels,
          {k: [c["seconds"][k]["median_s"] * 1e3 for c in cases]
           for k in ("dense", "issa")}, "forward ms (median)", True)
    _bars(axes[1], labels,
          {k: [None if c["peak_bytes"][k] is None else
               c["peak_bytes"][k] / _MIB for c in cases]
           for k in ("dense", "issa")}, "peak MiB", True)
  elif suite == "recompute_memory":
    v = result["variants"]
    keys = ("recompute_off", "recompute_on")
    labels = ["off", "on"]
    _bars(axes[0], labels,
          {"peak MiB": [None if v[k]["peak_bytes"] is None else
                        v[k]["peak_bytes"] / _MIB for k in keys]},
          "peak MiB, one training step")
    _bars(axes[1], labels,
          {"step s": [v[k]["seconds"]["median_s"] for k in keys]},
          "training step s (median)")
    axes[0].set_xlabel("recompute_grad")
    axes[1].set_xlabel("recompute_grad")
  elif suite == "input_pipeline":
    _bars(axes[0], ["input pipeline", "train step"],
          {"s per example": [result["pipeline"]["seconds_per_example"],
                             result["train_step"]["median_s"]]},
          "wall s per example")
    _bars(axes[1], ["input pipeline", "train step"],
          {"CPU s per example": [
              result["pipeline"]["cpu_seconds_per_example"],
              result["train_step"]["median_cpu_s"]]},
          "process CPU s per example")
  elif suite == "large_inference":
    cases = result["cases"]
    labels = [_hw(cases[k]["size"]) for k in ("large", "gflops_input")]
    _bars(axes[0], labels,
          {"latency ms": [cases[k]["latency_s"] * 1e3
                          for k in ("large", "gflops_input")]}, "latency ms")
    _bars(axes[1], labels,
          {"peak MiB": [None if cases[k]["peak_bytes"] is None else
                        cases[k]["peak_bytes"] / _MIB
                        for k in ("large", "gflops_input")]}, "peak MiB")
  else:
    plt.close(fig)
    raise ValueError(f"write_plots of this module does not draw suite "
                     f"{suite!r}.")
  subject = result.get("model") or f"{result['channels']} channels"
  fig.suptitle(f"{suite} ({subject})", fontsize=9)
  fig.tight_layout()
  path = os.path.join(output_dir, f"{prefix}.png")
  fig.savefig(path, dpi=90)
  plt.close(fig)
  return [path]
