"""Benchmarks: timing protocol, layer and model suites, plots, report.

Protocol (shared machines are noisy, so everything is a same-run ratio):
- Every function is a `tf.function` (optionally `jit_compile=True`), traced
  and run `warmup` times before timing.
- Functions compared with each other are timed interleaved (A, B, C, A, B,
  C, ...), `runs` rounds; each call is timed to completion of its outputs.
- Reported: the median wall time of each function, the ratio of medians,
  and the median of the per-round ratios (A_i / B_i of the same round, which
  cancels slow drifts of the machine's load); process CPU time likewise.
- Achieved GFLOP/s = 2 x M-Adds / time (1 M-Add = 2 FLOPs), with M-Adds
  from `axial_deeplab_tf.utils.madds.count_madds` (a walk of the traced
  inference graph). A forward+backward pass is counted as 3 x the forward
  M-Adds (each forward matmul/conv has two backward ones of the same
  size). The reference is a square float32 matmul timed in the same run.
- Peak memory of a layer call: TensorFlow's CPU allocator statistics
  (`tf.config.experimental.get_memory_info("CPU:0")`): the peak bytes
  allocated during the call minus the bytes live before it (tensors held by
  TF's allocator; scratch memory that oneDNN kernels allocate themselves is
  not included).

Suites: `run_resnet_ratio` (Axial-ResNet against tf_keras.applications
ResNet50), `run_layers` (attention layers against feature-map size, with
fitted exponents of time against pixel count), `run_models` (every zoo
model); the suites issa_dense, recompute_memory, input_pipeline and
large_inference live in `suites.py` (which imports this module); plots and
BENCHMARKS.md sections of every suite are written by `report.py`.
"""

import datetime
import importlib
import math
import os
import platform
import statistics
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf
import tf_keras

from axial_deeplab_tf.attention_math import check_positive_int
from axial_deeplab_tf.ops import fused_attention

# Suites implemented in suites.py (which imports this module).
MORE_SUITES = ("issa_dense", "recompute_memory", "input_pipeline",
               "large_inference")
SUITES = ("resnet_ratio", "layers", "models") + MORE_SUITES

MEMORY_METHOD = ("TF CPU allocator peak during one call minus live bytes "
                 "before it (tf.config.experimental.get_memory_info; "
                 "allocations under 256 KiB do not show in these statistics "
                 "on TF 2.20, so tiny shapes read low)")

LAYER_KINDS = ("axial_global", "axial_local", "local_2d", "global_2d", "issa",
               "msca")

# Where each layer kind lives: (module, class name).
_LAYER_MODULES = {
    "axial_global": ("axial_deeplab_tf.layers.axial_attention",
                     "AxialAttention2D"),
    "axial_local": ("axial_deeplab_tf.layers.axial_attention",
                    "AxialAttention2D"),
    "local_2d": ("axial_deeplab_tf.layers.local_attention",
                 "LocalSelfAttention2D"),
    "global_2d": ("axial_deeplab_tf.layers.global_attention",
                  "GlobalSelfAttention2D"),
    "issa": ("axial_deeplab_tf.layers.issa", "InterlacedSparseSelfAttention"),
    "msca": ("axial_deeplab_tf.layers.msca", "MultiScaleConvAttention"),
}

# How cost should grow with the pixel count N = size^2 of a square map.
EXPECTED_EXPONENTS = {
    "axial_global": "N^1.5 (hw(h+w))",
    "axial_local": "N^1.0 (hw span)",
    "local_2d": "N^1.0 (hw k^2)",
    "global_2d": "N^2.0",
    "issa": "N^1.5 (partition ~ sqrt(side))",
    "msca": "N^1.0 (convolutions)",
}


# ----------------------------------------------------------------- machine
def cpu_model() -> str:
  """The CPU's model name (/proc/cpuinfo), else the platform's."""
  cpu = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return cpu


def machine_info() -> Dict[str, Any]:
  """CPU model, logical CPUs available, load, library versions, UTC date."""
  cpu = cpu_model()
  try:
    nproc = len(os.sched_getaffinity(0))
  except AttributeError:
    nproc = os.cpu_count()
  try:
    load = [round(x, 2) for x in os.getloadavg()]
  except OSError:
    load = None
  try:
    with open("/proc/meminfo") as f:
      mem_kb = int(f.readline().split()[1])
    memory_gib = round(mem_kb / 2**20, 1)
  except (OSError, ValueError, IndexError):
    memory_gib = None
  return {
      "cpu_model": cpu,
      "nproc": nproc,
      "memory_gib": memory_gib,
      "load_average_1_5_15min": load,
      "tensorflow": tf.__version__,
      "tf_keras": tf_keras.__version__,
      "python": platform.python_version(),
      "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime(
          "%Y-%m-%d %H:%M UTC"),
  }


# ------------------------------------------------------------------ timing
def _check_counts(runs: int, warmup: int) -> None:
  check_positive_int("runs", runs)
  if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
    raise ValueError(f"warmup must be a non-negative int, got {warmup!r}.")


def _wait(result) -> None:
  """Blocks until every tensor in `result` is computed."""
  for t in tf.nest.flatten(result):
    if isinstance(t, (tf.Tensor, tf.Variable)):
      # A one-element read forces the value without copying large tensors.
      tf.reshape(t, [-1])[:1].numpy()


def time_interleaved(fns: Dict[str, Callable[[], Any]], runs: int,
                     warmup: int) -> Dict[str, Dict[str, List[float]]]:
  """Times functions interleaved: warm-up, then rounds A, B, ..., A, B, ...

  Args:
    fns: name -> zero-argument callable (usually a tf.function on fixed
      inputs).
    runs: timed rounds.
    warmup: untimed calls of each function first (the first one traces).

  Returns:
    name -> {"wall": [seconds per round], "cpu": [process CPU seconds]}.
  """
  _check_counts(runs, warmup)
  if not fns:
    raise ValueError("fns must name at least one function.")
  for fn in fns.values():
    for _ in range(warmup):
      _wait(fn())
  out = {name: {"wall": [], "cpu": []} for name in fns}
  for _ in range(runs):
    for name, fn in fns.items():
      c0, t0 = time.process_time(), time.perf_counter()
      _wait(fn())
      t1, c1 = time.perf_counter(), time.process_time()
      out[name]["wall"].append(t1 - t0)
      out[name]["cpu"].append(c1 - c0)
  return out


def ratio_stats(num: Dict[str, List[float]],
                den: Dict[str, List[float]]) -> Dict[str, float]:
  """Ratios of two interleaved timings (see the module docstring)."""
  stats = {}
  for key in ("wall", "cpu"):
    a, b = np.asarray(num[key]), np.asarray(den[key])
    stats[f"{key}_ratio_of_medians"] = float(np.median(a) / np.median(b))
    stats[f"{key}_median_paired_ratio"] = float(np.median(a / b))
  return stats


def summarize(times: Dict[str, List[float]]) -> Dict[str, float]:
  """Median / min / max wall seconds and median CPU seconds."""
  wall = times["wall"]
  return {
      "median_s": float(statistics.median(wall)),
      "min_s": float(min(wall)),
      "max_s": float(max(wall)),
      "median_cpu_s": float(statistics.median(times["cpu"])),
      "runs": len(wall),
  }


def matmul_function(size: int = 2048, jit_compile: bool = False):
  """A zero-argument tf.function: one [size, size] float32 matmul."""
  check_positive_int("size", size)
  a = tf.random.stateless_normal([size, size], seed=[1, 2])
  b = tf.random.stateless_normal([size, size], seed=[3, 4])
  fn = tf.function(lambda: tf.matmul(a, b), jit_compile=jit_compile)
  return fn


def gflops(madds: float, seconds: float) -> float:
  """Achieved GFLOP/s of `madds` multiply-adds in `seconds` (2 FLOPs each)."""
  return 2.0 * madds / seconds / 1e9


def fit_exponent(pixels: Sequence[float],
                 seconds: Sequence[float]) -> Optional[float]:
  """Slope of log(seconds) against log(pixels) (least squares)."""
  if len(pixels) != len(seconds):
    raise ValueError(f"pixels and seconds differ in length: {len(pixels)} "
                     f"vs {len(seconds)}.")
  if len(pixels) < 2:
    return None
  slope, _ = np.polyfit(np.log(pixels), np.log(seconds), 1)
  return float(slope)


# ------------------------------------------------------------- functions
def _loss(outputs) -> tf.Tensor:
  return tf.add_n([tf.reduce_sum(tf.cast(t, tf.float32))
                   for t in tf.nest.flatten(outputs)])


def forward_function(model, x, jit_compile: bool = False):
  """Zero-argument tf.function: inference forward pass on `x`."""
  fn = tf.function(lambda: _loss(model(x, training=False)),
                   jit_compile=jit_compile)
  return fn


def forward_backward_function(model, x, jit_compile: bool = False):
  """Zero-argument tf.function: training forward pass and all gradients.

  Returns the loss (sum of the outputs) and the gradients, so none of the
  backward pass can be pruned; no optimizer step.
  """
  variables = model.trainable_variables

  @tf.function(jit_compile=jit_compile)
  def fn():
    with tf.GradientTape() as tape:
      loss = _loss(model(x, training=True))
    return loss, tape.gradient(loss, variables)

  return fn


def time_inference(model, inputs: Dict[str, tf.Tensor], matmul,
                   matmul_size: int, runs: int, warmup: int,
                   jit_compile: bool = False):
  """Times inference of `model` on each input, interleaved with a matmul.

  Args:
    model: a Keras model (called with training=False).
    inputs: name -> input tensor; "matmul" is reserved.
    matmul: the reference function of `matmul_function(matmul_size)`.
    matmul_size: its side (for its GFLOP/s).
    runs: timed interleaved rounds.
    warmup: untimed calls of each function first.
    jit_compile: XLA for the model calls.

  Returns:
    (fns, medians, matmul_gflops): the zero-argument functions by name (warm,
    for further measurements such as peak memory), name -> median wall
    seconds, and the matmul's achieved GFLOP/s.
  """
  if "matmul" in inputs:
    raise ValueError("inputs must not be named 'matmul' (the reference).")
  fns = {name: forward_function(model, x, jit_compile)
         for name, x in inputs.items()}
  fns["matmul"] = matmul
  times = time_interleaved(fns, runs, warmup)
  medians = {name: summarize(t)["median_s"] for name, t in times.items()}
  return fns, medians, gflops(float(matmul_size)**3, medians["matmul"])


def _xla_modes(xla: Sequence[bool]) -> List[bool]:
  modes = list(xla)
  if not modes or any(not isinstance(m, bool) for m in modes):
    raise ValueError(f"xla must be a non-empty list of bools, got {xla!r}.")
  return modes


# ------------------------------------------------------- suite: resnet ratio
def run_resnet_ratio(model_name: str = "axial_resnet_50l",
                     input_size: int = 224,
                     batch_size: int = 1,
                     runs: int = 7,
                     warmup: int = 2,
                     xla: Sequence[bool] = (False, True),
                     modes: Sequence[str] = ("forward", "forward_backward"),
                     matmul_size: int = 2048,
                     log: Callable[[str], None] = print) -> Dict[str, Any]:
  """A zoo model against tf_keras.applications.ResNet50 in the same process.

  Args:
    model_name: zoo model (built with input_size=(input_size, input_size)).
    input_size: square input side.
    batch_size: images per call.
    runs: timed interleaved rounds per comparison.
    warmup: untimed calls per function.
    xla: jit_compile settings to measure.
    modes: "forward" (inference) and/or "forward_backward" (training mode,
      gradients of all trainable weights, no optimizer step).
    matmul_size: side of the reference float32 matmul.
    log: progress printer.

  Returns:
    A JSON-serialisable dict (see BENCHMARKS.md for the fields).
  """
  from axial_deeplab_tf import models  # pylint: disable=g-import-not-at-top
  from axial_deeplab_tf.utils import madds as madds_lib  # pylint: disable=g-import-not-at-top
  _check_counts(runs, warmup)
  for m in modes:
    if m not in ("forward", "forward_backward"):
      raise ValueError(f"modes must be 'forward' and/or 'forward_backward', "
                       f"got {m!r}.")
  if not isinstance(input_size, int) or input_size < 32:
    raise ValueError(f"input_size must be an int >= 32, got {input_size!r}.")
  tf_keras.utils.set_random_seed(0)
  shape = [batch_size, input_size, input_size, 3]
  log(f"building {model_name} and ResNet50 at {shape}")
  model = models.build(model_name, input_size=(input_size, input_size))
  baseline = tf_keras.applications.ResNet50(
      weights=None, input_shape=(input_size, input_size, 3))
  x = tf.random.stateless_uniform(shape, seed=[0, 1], maxval=255.0)
  counts = {}
  for name, m in ((model_name, model), ("resnet50", baseline)):
    log(f"counting M-Adds of {name}")
    counts[name] = madds_lib.count_madds(m, shape).total
  result = {
      "suite": "resnet_ratio",
      "model": model_name,
      "baseline": "tf_keras.applications.ResNet50(weights=None)",
      "input_shape": shape,
      "dtype": "float32",
      "runs": runs,
      "warmup": warmup,
      "matmul_size": matmul_size,
      "madds": counts,
      "params": {model_name: int(sum(np.prod(w.shape)
                                     for w in model.trainable_weights)),
                 "resnet50": int(sum(np.prod(w.shape)
                                     for w in baseline.trainable_weights))},
      "madds_ratio": counts[model_name] / counts["resnet50"],
      "results": [],
  }
  matmul = matmul_function(matmul_size)
  matmul_madds = float(matmul_size)**3
  for jit in _xla_modes(xla):
    for mode in modes:
      make = (forward_function if mode == "forward" else
              forward_backward_function)
      fns = {
          model_name: make(model, x, jit),
          "resnet50": make(baseline, x, jit),
          "matmul": matmul,
      }
      log(f"timing {mode} xla={jit}: tracing, then {runs} interleaved rounds")
      t0 = time.perf_counter()
      times = time_interleaved(fns, runs, warmup)
      flop_factor = 1.0 if mode == "forward" else 3.0
      entry = {
          "mode": mode,
          "xla": jit,
          "seconds": {k: summarize(v) for k, v in times.items()},
          "ratio": ratio_stats(times[model_name], times["resnet50"]),
          "wall_s_incl_tracing": time.perf_counter() - t0,
      }
      mm = gflops(matmul_madds, entry["seconds"]["matmul"]["median_s"])
      entry["matmul_gflops"] = mm
      entry["gflops"] = {}
      for name in (model_name, "resnet50"):
        g = gflops(flop_factor * counts[name],
                   entry["seconds"][name]["median_s"])
        entry["gflops"][name] = {"gflops": g, "fraction_of_matmul": g / mm}
      result["results"].append(entry)
      log(f"  {mode} xla={jit}: ratio "
          f"{entry['ratio']['wall_ratio_of_medians']:.2f} "
          f"(paired {entry['ratio']['wall_median_paired_ratio']:.2f})")
  result["targets"] = {"forward": 3.5, "forward_backward": 4.5}
  return result


# ---------------------------------------------------------- suite: layers
def _import_layer(kind: str):
  module_name, class_name = _LAYER_MODULES[kind]
  module = importlib.import_module(module_name)
  return getattr(module, class_name)


def build_layer(kind: str, size: int, channels: int, num_heads: int = 8,
                local_span: int = 15, local_kernel: int = 7):
  """Builds the attention layer of `kind` for a [1, size, size, channels] map.

  Widths follow the axial block: key depth channels / 2, value depth (and
  output) channels, 8 heads. ISSA uses partition factors round(sqrt(size))
  (the choice that gives its N^1.5 cost); MSCA is the SegNeXt strip-conv
  attention with its default kernels.
  """
  if kind not in _LAYER_MODULES:
    raise ValueError(f"kind must be one of {LAYER_KINDS}, got {kind!r}.")
  cls = _import_layer(kind)
  key, value = channels // 2, channels
  if kind == "axial_global":
    return cls(num_heads=num_heads, key_depth=key, value_depth=value,
               span=None, max_length=size)
  if kind == "axial_local":
    return cls(num_heads=num_heads, key_depth=key, value_depth=value,
               span=local_span)
  if kind == "local_2d":
    return cls(key_depth=key, value_depth=value, num_heads=num_heads,
               kernel_size=local_kernel)
  if kind == "global_2d":
    return cls(key_depth=key, value_depth=value, num_heads=num_heads)
  if kind == "issa":
    p = max(1, int(round(math.sqrt(size))))
    return cls(key_channels=key, value_channels=value,
               output_channels=channels, partition_factors=(p, p))
  return cls()


def _peak_bytes(fn: Callable[[], Any]) -> Optional[int]:
  """Peak CPU-allocator bytes during one call of fn, above the live bytes."""
  try:
    tf.config.experimental.reset_memory_stats("CPU:0")
    before = tf.config.experimental.get_memory_info("CPU:0")["current"]
    _wait(fn())
    peak = tf.config.experimental.get_memory_info("CPU:0")["peak"]
  except (ValueError, tf.errors.OpError):
    return None
  return int(peak - before)


def available_memory_bytes() -> Optional[int]:
  """MemAvailable of /proc/meminfo, or None where there is none."""
  try:
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  return None


def largest_batch_throughput(model, input_size: int, memory_budget: int,
                             runs: int, warmup: int, jit_compile: bool = False,
                             max_batch: int = 256) -> Dict[str, Any]:
  """Images/s at the largest power-of-two batch that fits a memory budget.

  Batches 1, 2, 4, ... are run in turn; each is timed (median of `runs`
  calls after `warmup`) and its peak memory measured (`_peak_bytes`). The
  search stops before a batch whose peak, extrapolated as twice the last
  one, would pass `memory_budget` (or at `max_batch`), so the process never
  runs a batch that would not fit.

  Returns:
    {"batch", "images_per_s", "peak_bytes"} of the largest batch run, the
    budget, and "tried": every batch's numbers.
  """
  tried = []
  batch = 1
  while batch <= max_batch:
    x = tf.random.stateless_uniform([batch, input_size, input_size, 3],
                                    seed=[0, batch], maxval=255.0)
    fn = forward_function(model, x, jit_compile)
    times = time_interleaved({"batch": fn}, runs, max(warmup, 1))["batch"]
    seconds = summarize(times)["median_s"]
    peak = _peak_bytes(fn)
    tried.append({"batch": batch, "seconds": seconds,
                  "images_per_s": batch / seconds, "peak_bytes": peak})
    if peak is None or 2 * peak > memory_budget:
      break
    batch *= 2
  best = tried[-1]
  return {"batch": best["batch"], "images_per_s": best["images_per_s"],
          "peak_bytes": best["peak_bytes"], "memory_budget": memory_budget,
          "tried": tried}


def run_layers(sizes: Sequence[int] = (32, 48, 64, 96, 128),
               kinds: Sequence[str] = LAYER_KINDS,
               channels: int = 64,
               runs: int = 5,
               warmup: int = 1,
               local_span: int = 15,
               max_dense_pixels: int = 4096,
               log: Callable[[str], None] = print) -> Dict[str, Any]:
  """Layer time and peak memory against feature-map size.

  Args:
    sizes: square feature-map sides.
    kinds: layer kinds (LAYER_KINDS); a kind whose module does not import is
      reported under "skipped".
    channels: input channels (value depth; key depth is half).
    runs: timed calls per case (the sizes of one kind and mode are timed
      interleaved).
    warmup: untimed calls per case.
    local_span: span of the local axial layer.
    max_dense_pixels: largest pixel count for global_2d (its logits grow as
      pixels^2); larger sizes are reported as skipped.
    log: progress printer.

  Returns:
    A JSON-serialisable dict.
  """
  _check_counts(runs, warmup)
  sizes = sorted(set(int(s) for s in sizes))
  if not sizes or sizes[0] < 2:
    raise ValueError(f"sizes must be ints >= 2, got {sizes!r}.")
  if isinstance(channels, bool) or not isinstance(
      channels, int) or channels < 32 or channels % 32:
    # Key depth channels / 2 over 8 heads, and the 2D local layer splits each
    # head's depth into row and column halves.
    raise ValueError(f"channels must be a positive multiple of 32, got "
                     f"{channels!r}.")
  result = {"suite": "layers", "sizes": sizes, "channels": channels,
            "runs": runs, "warmup": warmup, "local_span": local_span,
            "batch": 1, "dtype": "float32", "xla": False,
            "memory_method": MEMORY_METHOD,
            "cases": [], "fits": [], "skipped": []}
  for kind in kinds:
    if kind not in _LAYER_MODULES:
      raise ValueError(f"kinds must be among {LAYER_KINDS}, got {kind!r}.")
    try:
      _import_layer(kind)
    except (ImportError, AttributeError) as e:
      result["skipped"].append({"kind": kind, "reason": f"import: {e}"})
      log(f"skipping {kind}: {e}")
      continue
    for mode in ("forward", "forward_backward"):
      fns, peaks, built = {}, {}, []
      for size in sizes:
        if kind == "global_2d" and size * size > max_dense_pixels:
          if mode == "forward":
            result["skipped"].append({
                "kind": kind, "size": size,
                "reason": f"{size * size} pixels > max_dense_pixels="
                          f"{max_dense_pixels}"})
          continue
        tf.random.set_seed(size)
        layer = build_layer(kind, size, channels, local_span=local_span)
        x = tf.random.stateless_normal([1, size, size, channels],
                                       seed=[size, 7])
        layer(x)
        make = (forward_function if mode == "forward" else
                forward_backward_function)
        fn = make(layer, x)
        fns[size] = fn
        built.append(layer)
      if not fns:
        continue
      log(f"{kind} {mode}: sizes {sorted(fns)}")
      for fn in fns.values():
        for _ in range(max(warmup, 1)):
          _wait(fn())
      for size, fn in fns.items():
        peaks[size] = _peak_bytes(fn)
      times = time_interleaved({str(s): f for s, f in fns.items()}, runs, 0)
      for size in fns:
        s = summarize(times[str(size)])
        result["cases"].append({
            "kind": kind, "mode": mode, "size": size, "pixels": size * size,
            "median_s": s["median_s"], "min_s": s["min_s"],
            "peak_bytes": peaks[size]})
      pix = [s * s for s in fns]
      med = [summarize(times[str(s)])["median_s"] for s in fns]
      mem = [peaks[s] for s in fns]
      fit = {"kind": kind, "mode": mode,
             "time_exponent": fit_exponent(pix, med),
             # Small maps are dominated by per-op overheads; the largest
             # three sizes show the asymptotic growth better.
             "time_exponent_top3": (fit_exponent(pix[-3:], med[-3:])
                                    if len(pix) >= 3 else None),
             "expected": EXPECTED_EXPONENTS[kind]}
      if all(m is not None and m > 0 for m in mem):
        fit["memory_exponent"] = fit_exponent(pix, mem)
      result["fits"].append(fit)
      log(f"  time exponent {fit['time_exponent']}")
  return result


# ---------------------------------------------------------- suite: models
def run_models(names: Optional[Sequence[str]] = None,
               input_size: int = 64,
               runs: int = 3,
               warmup: int = 1,
               xla: Sequence[bool] = (False, True),
               dtypes: Sequence[str] = ("float32", "bfloat16"),
               throughput_batch: int = 4,
               default_num_classes: Optional[int] = None,
               matmul_size: int = 2048,
               throughput_memory_gib: Optional[float] = None,
               log: Callable[[str], None] = print) -> Dict[str, Any]:
  """Params, M-Adds, latency (batch 1) and throughput of zoo models.

  Args:
    names: zoo names; None means every model in `models.list_models()`.
    input_size: square input side (each model is built for it).
    runs: timed calls per case.
    warmup: untimed calls per case.
    xla: jit_compile settings.
    dtypes: "float32" and/or "bfloat16" (the mixed_bfloat16 policy).
    throughput_batch: batch size of the throughput measurement; 0 skips
      it; -1 searches the largest power-of-two batch whose peak memory fits
      `throughput_memory_gib` (`largest_batch_throughput`).
    default_num_classes: num_classes for models whose zoo entry has no
      default (None: such models report an error).
    matmul_size: side of the reference float32 matmul, timed interleaved
      with each model.
    throughput_memory_gib: memory budget of the batch search; default half
      of the memory available at the start.
    log: progress printer.

  Returns:
    A JSON-serialisable dict; a model that fails to build or run has an
    "error" entry instead of numbers.
  """
  from axial_deeplab_tf import models  # pylint: disable=g-import-not-at-top
  from axial_deeplab_tf.utils import madds as madds_lib  # pylint: disable=g-import-not-at-top
  _check_counts(runs, warmup)
  all_names = models.list_models()
  names = list(all_names if names is None else names)
  for n in names:
    if n not in all_names:
      raise ValueError(f"Unknown model name {n!r}; expected some of "
                       f"{all_names}.")
  for d in dtypes:
    if d not in ("float32", "bfloat16"):
      raise ValueError(f"dtypes must be 'float32' and/or 'bfloat16', got "
                       f"{d!r}.")
  if isinstance(throughput_batch, bool) or not isinstance(
      throughput_batch, int) or throughput_batch < -1:
    raise ValueError(f"throughput_batch must be an int >= -1 (0: no "
                     f"throughput run; -1: the largest batch that fits), got "
                     f"{throughput_batch!r}.")
  search = throughput_batch == -1
  budget = None
  if search:
    if throughput_memory_gib is not None:
      if not throughput_memory_gib > 0:
        raise ValueError(f"throughput_memory_gib must be > 0, got "
                         f"{throughput_memory_gib!r}.")
      budget = int(throughput_memory_gib * 2**30)
    else:
      available = available_memory_bytes()
      if available is None:
        raise ValueError("No /proc/meminfo to size the batch search; set "
                         "throughput_memory_gib.")
      budget = available // 2
  modes = _xla_modes(xla)
  result = {"suite": "models", "input_size": input_size, "runs": runs,
            "warmup": warmup, "throughput_batch": throughput_batch,
            "throughput_memory_bytes": budget,
            "fused_attention": fused_attention.usable(tf.float32),
            "default_num_classes": default_num_classes,
            "matmul_size": matmul_size,
            "dtypes": list(dtypes), "xla": modes,
            "madds_method": madds_lib.METHOD, "models": []}
  policy = tf_keras.mixed_precision.global_policy()
  matmul = matmul_function(matmul_size)
  for name in names:
    entry = {"model": name, "cases": []}
    result["models"].append(entry)
    for dtype in dtypes:
      try:
        tf_keras.mixed_precision.set_global_policy(
            "mixed_bfloat16" if dtype == "bfloat16" else "float32")
        overrides = {"input_size": (input_size, input_size)}
        if (default_num_classes is not None and
            "num_classes" not in models.get_entry(name).defaults):
          overrides["num_classes"] = default_num_classes
          entry["num_classes"] = default_num_classes
        t0 = time.perf_counter()
        model = models.build(name, **overrides)
        log(f"{name} {dtype}: built in {time.perf_counter() - t0:.0f} s")
        if "params" not in entry:
          entry["params"] = madds_lib.count_params(model)
          entry["madds"] = madds_lib.count_madds(
              model, [1, input_size, input_size, 3]).total
        for jit in modes:
          t0 = time.perf_counter()
          one = tf.random.stateless_uniform(
              [1, input_size, input_size, 3], seed=[0, 1], maxval=255.0)
          many = tf.random.stateless_uniform(
              [max(throughput_batch, 1), input_size, input_size, 3],
              seed=[0, 2], maxval=255.0)
          inputs = {"latency": one}
          if throughput_batch > 0:
            inputs["throughput"] = many
          _, medians, mm = time_inference(model, inputs, matmul, matmul_size,
                                          runs, warmup, jit)
          lat = medians["latency"]
          case = {"dtype": dtype, "xla": jit, "latency_s": lat,
                  "gflops": gflops(entry["madds"], lat),
                  "matmul_gflops": mm,
                  "throughput_images_per_s": None}
          case["fraction_of_matmul"] = case["gflops"] / mm
          if throughput_batch > 0:
            case["throughput_images_per_s"] = (throughput_batch /
                                               medians["throughput"])
            case["throughput_batch"] = throughput_batch
          elif search:
            found = largest_batch_throughput(model, input_size, budget, runs,
                                             warmup, jit)
            case["throughput_images_per_s"] = found["images_per_s"]
            case["throughput_batch"] = found["batch"]
            case["throughput_search"] = found["tried"]
          entry["cases"].append(case)
          log(f"  xla={jit}: latency {lat * 1e3:.1f} ms "
              f"({time.perf_counter() - t0:.0f} s incl. tracing)")
      except Exception as e:  # pylint: disable=broad-except
        # Reported, not hidden: the table shows the error for this model.
        entry["cases"].append({"dtype": dtype,
                               "error": f"{type(e).__name__}: {e}"[:300]})
        log(f"  {name} {dtype} failed: {type(e).__name__}: {e}"[:300])
      finally:
        tf_keras.mixed_precision.set_global_policy(policy)
        tf_keras.backend.clear_session()
  return result


# ------------------------------------------------------------------- plots


def attention_note(result: Mapping[str, Any]) -> str:
  """Which axial-attention implementation a result's inference ran."""
  if "fused_attention" not in result:
    return ""
  if result["fused_attention"]:
    return (" Axial attention in float32 without XLA ran the fused CPU "
            "kernel (ops/fused_attention.py).")
  return (" Axial attention ran its TensorFlow graph (the fused kernel was "
          "not available).")
