"""Forward time of the Keras 3 AxialAttention2D against the tf_keras layer.

  tools/benchmark_keras3.py [--sizes=28,56] [--channels=64] [--batch=2]
      [--runs=10] [--warmup=2] [--markdown=BENCHMARKS.md] [--no_jax]

Times, interleaved in one process (KERAS_BACKEND=tensorflow): the tf_keras
AxialAttention2D's graph path (a tf.function, fused CPU kernel disabled) and
the Keras 3 AxialAttention2D in a tf.function, with the same weights
(copy_weights); then the Keras 3 layer under KERAS_BACKEND=jax (jax.jit of
its stateless call) in a subprocess. Global spans, inference, 8 heads, key
depth channels / 2, value depth channels. Prints the table and, with
--markdown, rewrites its section of that file.
"""

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECTION = "benchmark:keras3_axial"
COMMAND = "tools/benchmark_keras3.py --markdown=BENCHMARKS.md"


def _layer_kwargs(size, channels):
  return dict(num_heads=8, key_depth=channels // 2, value_depth=channels,
              max_length=size)


def _median(values):
  values = sorted(values)
  n = len(values)
  return values[n // 2] if n % 2 else 0.5 * (values[n // 2 - 1] +
                                              values[n // 2])


def run_tensorflow(sizes, channels, batch, runs, warmup):
  """{size: {"tf_keras_graph": s, "keras3_tf": s}} median wall seconds."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from axial_deeplab_tf import keras_layers as k3  # pylint: disable=g-import-not-at-top
  from axial_deeplab_tf.layers import axial_attention  # pylint: disable=g-import-not-at-top
  from axial_deeplab_tf.ops import fused_attention  # pylint: disable=g-import-not-at-top
  from axial_deeplab_tf.benchmarks import benchmark  # pylint: disable=g-import-not-at-top
  out = {}
  for size in sizes:
    x = np.random.default_rng(0).normal(
        size=(batch, size, size, channels)).astype(np.float32)
    tx = tf.constant(x)
    old = axial_attention.AxialAttention2D(**_layer_kwargs(size, channels))
    new = k3.AxialAttention2D(**_layer_kwargs(size, channels))
    old(tx, training=False)
    new(tx, training=False)
    k3.copy_weights(old, new)
    with fused_attention.disabled():
      old_fn = tf.function(lambda: old(tx, training=False))
      old_fn()  # Traced inside disabled(): the graph path.
    new_fn = tf.function(lambda: new(tx, training=False))
    diff = float(np.max(np.abs(old_fn().numpy() - new_fn().numpy())))
    times = benchmark.time_interleaved(
        {"tf_keras_graph": old_fn, "keras3_tf": new_fn}, runs, warmup)
    out[size] = {k: _median(v["wall"]) for k, v in times.items()}
    out[size]["max_abs_diff"] = diff
  return out, benchmark.machine_info()


def run_jax(sizes, channels, batch, runs, warmup):
  """{size: {"keras3_jax": s}} median wall seconds (jax.jit)."""
  import time  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from axial_deeplab_tf import keras_layers as k3  # pylint: disable=g-import-not-at-top
  out = {}
  for size in sizes:
    x = np.random.default_rng(0).normal(
        size=(batch, size, size, channels)).astype(np.float32)
    layer = k3.AxialAttention2D(**_layer_kwargs(size, channels))
    layer(x, training=False)
    trainable = [v.value for v in layer.trainable_variables]
    fixed = [v.value for v in layer.non_trainable_variables]

    @jax.jit
    def forward(tv, ntv, x, layer=layer):
      return layer.stateless_call(tv, ntv, x, training=False)[0]

    for _ in range(warmup):
      forward(trainable, fixed, x).block_until_ready()
    walls = []
    for _ in range(runs):
      t0 = time.perf_counter()
      forward(trainable, fixed, x).block_until_ready()
      walls.append(time.perf_counter() - t0)
    out[size] = {"keras3_jax": _median(walls)}
  return out, {"jax": jax.__version__}


def markdown(result, machine, jax_info, args):
  lines = [
      f"Command: `{COMMAND}` (sizes {args.sizes}, channels {args.channels}, "
      f"batch {args.batch}, {args.runs} runs after {args.warmup} warm-up, "
      "median wall time).",
      f"Machine: {machine['cpu_model']}, {machine['nproc']} logical CPUs, "
      f"load {machine['load_average_1_5_15min']}; TensorFlow "
      f"{machine['tensorflow']}, tf_keras {machine['tf_keras']}, "
      f"JAX {jax_info.get('jax', 'not run')}; {machine['date_utc']}.",
      "",
      "AxialAttention2D forward (inference, global span, 8 heads). tf_keras "
      "graph = the tf_keras layer in a tf.function with the fused kernel "
      "disabled; Keras 3 on TF = the Keras 3 layer in a tf.function, same "
      "weights, same run (interleaved); Keras 3 on JAX = jax.jit of its "
      "stateless call, in a second process right after.",
      "",
      "| map | tf_keras graph (ms) | Keras 3 on TF (ms) | Keras 3 / tf_keras "
      "| Keras 3 on JAX (ms) | max abs diff TF |",
      "|---|---|---|---|---|---|",
  ]
  for size, r in result.items():
    jax_ms = (f"{1e3 * r['keras3_jax']:.2f}" if "keras3_jax" in r else
              "not run")
    lines.append(
        f"| {size}x{size} | {1e3 * r['tf_keras_graph']:.2f} | "
        f"{1e3 * r['keras3_tf']:.2f} | "
        f"{r['keras3_tf'] / r['tf_keras_graph']:.2f}x | {jax_ms} | "
        f"{r['max_abs_diff']:.1e} |")
  return "\n".join(lines) + "\n"


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--sizes", default="28,56")
  parser.add_argument("--channels", type=int, default=64)
  parser.add_argument("--batch", type=int, default=2)
  parser.add_argument("--runs", type=int, default=10)
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--markdown", default=None)
  parser.add_argument("--no_jax", action="store_true")
  parser.add_argument("--backend_only", choices=("jax",), default=None,
                      help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  try:
    sizes = [int(s) for s in args.sizes.split(",")]
    if any(s < 1 for s in sizes) or args.channels < 16 or (
        args.channels % 16) or args.batch < 1 or args.runs < 1 or (
            args.warmup < 0):
      raise ValueError
  except ValueError:
    print(f"error: --sizes must be positive ints, --channels a multiple of "
          f"16, --batch/--runs positive, --warmup >= 0; got sizes="
          f"{args.sizes!r} channels={args.channels} batch={args.batch} "
          f"runs={args.runs} warmup={args.warmup}", file=sys.stderr)
    return 2
  if args.backend_only == "jax":
    result, info = run_jax(sizes, args.channels, args.batch, args.runs,
                           args.warmup)
    print("RESULT " + json.dumps({"result": result, "info": info}))
    return 0
  result, machine = run_tensorflow(sizes, args.channels, args.batch,
                                   args.runs, args.warmup)
  jax_info = {}
  if not args.no_jax:
    env = dict(os.environ, KERAS_BACKEND="jax")
    env.pop("TF_USE_LEGACY_KERAS", None)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--backend_only=jax",
         f"--sizes={args.sizes}", f"--channels={args.channels}",
         f"--batch={args.batch}", f"--runs={args.runs}",
         f"--warmup={args.warmup}"],
        env=env, capture_output=True, text=True, check=False)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
    if proc.returncode or not lines:
      print(f"JAX run failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
    else:
      data = json.loads(lines[-1][len("RESULT "):])
      jax_info = data["info"]
      for size, r in data["result"].items():
        result[int(size)].update(r)
  text = markdown(result, machine, jax_info, args)
  print(text)
  if args.markdown:
    from axial_deeplab_tf.benchmarks import report  # pylint: disable=g-import-not-at-top
    report.update_markdown_section(
        args.markdown, SECTION, "### Keras 3 AxialAttention2D (TF and JAX "
        "backends)", text)
  return 0


if __name__ == "__main__":
  os.environ.pop("TF_USE_LEGACY_KERAS", None)
  os.environ.setdefault("KERAS_BACKEND", "tensorflow")
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  sys.path.insert(0, ROOT)
  sys.exit(main())
