"""Fused CPU inference kernel of position-sensitive axial attention.

`AxialAttention` in inference, on a CPU, in float32, outside XLA, runs one
custom op (`kernels/axial_span_attention.cc`) instead of its graph of
matmuls, transposes and a softmax: the op computes each query's window of
logits, softmax and outputs in one pass, so nothing the size of the
attention maps goes through memory. Results are the graph's (tests compare
both with a dense numpy reference).

The kernel is compiled from its source on first use with the C++ compiler
TensorFlow's headers and flags ask for (`tf.sysconfig`), into a cache
directory (`$AXIAL_DEEPLAB_KERNEL_CACHE`, default
`~/.cache/axial_deeplab_tf`), keyed by the source, the TensorFlow version
and the CPU; later processes load the cached library. When no compiler is
found or the build fails, a warning names the reason once and the layer
keeps its TensorFlow graph.

The op's gradient (for gradients taken through a model called with
training=False, e.g. attention-map saliency) recomputes the attention
densely with TensorFlow ops (`dense_span_attention`): exact, but its memory
grows as length^2 per row and head. Training (training=True) never uses
the kernel.

Set `AXIAL_DEEPLAB_FUSED_ATTENTION=0` to never use the kernel, or wrap
graph building in `disabled()`. SavedModel exports are traced under
`disabled()`, so the exported graph has only standard TensorFlow ops and
loads anywhere TensorFlow does.
"""

import contextlib
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Optional

from absl import logging
import tensorflow as tf

_SOURCE = Path(__file__).parent / "kernels" / "axial_span_attention.cc"
_ENV_SWITCH = "AXIAL_DEEPLAB_FUSED_ATTENTION"
_ENV_CACHE = "AXIAL_DEEPLAB_KERNEL_CACHE"

_lock = threading.Lock()
_library = None
_load_error: Optional[str] = None
_loaded = False
_disabled_depth = 0


def _cpu_signature() -> str:
  """The CPU's model and feature flags (the build uses -march=native)."""
  try:
    with open("/proc/cpuinfo") as f:
      lines = [l for l in f if l.startswith(("flags", "model name"))]
    return "".join(sorted(set(lines)))
  except OSError:
    return platform.processor() or platform.machine()


def _cache_dir() -> Path:
  root = os.environ.get(_ENV_CACHE)
  if root:
    return Path(root)
  return Path.home() / ".cache" / "axial_deeplab_tf"


def _build_command(output: str):
  compiler = os.environ.get("CXX") or shutil.which("g++") or shutil.which(
      "c++")
  if compiler is None:
    raise RuntimeError("no C++ compiler (g++ or $CXX) on PATH")
  return [
      compiler, "-std=c++17", "-O3", "-march=native", "-shared", "-fPIC",
      "-w", str(_SOURCE), "-o", output, *tf.sysconfig.get_compile_flags(),
      *tf.sysconfig.get_link_flags()
  ]


def library_path() -> Path:
  """Where the compiled kernel for this source, TensorFlow and CPU lives."""
  key = hashlib.sha256()
  key.update(_SOURCE.read_bytes())
  key.update(tf.__version__.encode())
  key.update(_cpu_signature().encode())
  return _cache_dir() / f"axial_span_attention_{key.hexdigest()[:16]}.so"


def _build(path: Path) -> None:
  """Compiles the kernel into `path` (write to a temporary name, rename)."""
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(suffix=".so", dir=path.parent)
  os.close(fd)
  try:
    result = subprocess.run(_build_command(tmp), capture_output=True,
                            text=True, check=False)
    if result.returncode != 0:
      raise RuntimeError(f"compiling {_SOURCE.name} failed:\n"
                         f"{result.stderr[-2000:]}")
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


@tf.autograph.experimental.do_not_convert
def load():
  """The loaded op library, building it if needed; None if unavailable."""
  global _library, _load_error, _loaded
  with _lock:
    if _loaded:
      return _library
    _loaded = True
    try:
      path = library_path()
      if not path.exists():
        _build(path)
      _library = tf.load_op_library(str(path))
    except Exception as e:  # pylint: disable=broad-except
      _load_error = f"{type(e).__name__}: {e}"
      logging.warning(
          "The fused axial-attention kernel is not available (%s); "
          "AxialAttention inference uses its TensorFlow graph.", _load_error)
      _library = None
    return _library


def load_error() -> Optional[str]:
  """Why the kernel could not be loaded (after `load()`), else None."""
  return _load_error


@contextlib.contextmanager
def disabled():
  """Graphs built inside this context do not use the fused kernel."""
  global _disabled_depth
  _disabled_depth += 1
  try:
    yield
  finally:
    _disabled_depth -= 1


def without_fused(fn):
  """Wraps `fn` so that graphs traced through it never use the kernel."""

  def wrapped(*args, **kwargs):
    with disabled():
      return fn(*args, **kwargs)

  wrapped.__name__ = getattr(fn, "__name__", "wrapped")
  wrapped.__doc__ = getattr(fn, "__doc__", None)
  return wrapped


def _has_accelerator() -> bool:
  return bool(tf.config.list_logical_devices("GPU") or
              tf.config.list_logical_devices("TPU"))


def _in_xla_context() -> bool:
  from tensorflow.python.ops import control_flow_util  # pylint: disable=g-import-not-at-top
  return control_flow_util.GraphOrParentsInXlaContext(
      tf.compat.v1.get_default_graph())


@tf.autograph.experimental.do_not_convert
def usable(dtype) -> bool:
  """Whether an inference graph built now should use the fused kernel.

  True for float32 on a machine without GPU/TPU devices, outside XLA
  compilation and `disabled()`, unless AXIAL_DEEPLAB_FUSED_ATTENTION=0,
  and once the kernel has loaded.
  """
  if _disabled_depth or tf.as_dtype(dtype) != tf.float32:
    return False
  if os.environ.get(_ENV_SWITCH, "1").strip().lower() in ("0", "false", "no",
                                                         "off"):
    return False
  if _has_accelerator() or _in_xla_context():
    return False
  return load() is not None


@tf.autograph.experimental.do_not_convert
def span_attention(query, key, value, query_table, key_table, value_table,
                   scale, radius: int, sequence_major: bool = False):
  """Runs the fused kernel.

  Args:
    query, key: float32 [rows, length, heads, key_depth] ([length, rows,
      ...] if sequence_major).
    value: float32 [rows, length, heads, value_depth] (same layout).
    query_table, key_table: [2 * radius + 1, key_depth] or None.
    value_table: [2 * radius + 1, value_depth] or None.
    scale: float32 [3, heads]: content, query-term and key-term scales.
    radius: keys with |m - l| <= radius are attended to.
    sequence_major: the layout of the inputs and outputs.

  Returns:
    content, positional: float32 [rows, length, heads * value_depth] (same
    layout as the inputs); positional is zeros without a value table.
  """
  lib = load()
  if lib is None:
    raise RuntimeError(f"The fused axial-attention kernel is not available: "
                       f"{_load_error}")
  key_depth = query.shape[-1]
  value_depth = value.shape[-1]
  empty = lambda depth: tf.zeros([0, depth], tf.float32)
  return lib.axial_span_attention(
      query, key, value,
      empty(key_depth) if query_table is None else query_table,
      empty(key_depth) if key_table is None else key_table,
      empty(value_depth) if value_table is None else value_table,
      scale, radius=radius, sequence_major=sequence_major)


def dense_span_attention(query, key, value, query_table, key_table,
                         value_table, scale, radius: int,
                         sequence_major: bool = False):
  """The kernel's computation as dense TensorFlow ops (explicit band mask).

  Same arguments and results as `span_attention`; tables may be None or
  have 0 rows. Used for the kernel's gradient.
  """
  present = lambda t: t is not None and t.shape[0] != 0
  if sequence_major:
    query, key, value = [tf.transpose(t, [1, 0, 2, 3])
                         for t in (query, key, value)]
  shape = tf.shape(value)
  length = shape[1]
  positions = tf.range(length)
  rel = positions[None, :] - positions[:, None]  # m - l
  rows = tf.clip_by_value(rel + radius, 0, 2 * radius)
  per_head = lambda s: s[None, :, None, None]
  sim = per_head(scale[0]) * tf.einsum("rlnd,rmnd->rnlm", query, key)
  if present(query_table):
    sim += per_head(scale[1]) * tf.einsum(
        "rlnd,lmd->rnlm", query, tf.gather(query_table, rows))
  if present(key_table):
    sim += per_head(scale[2]) * tf.einsum(
        "rmnd,lmd->rnlm", key, tf.gather(key_table, rows))
  sim = tf.where((tf.abs(rel) <= radius)[None, None], sim, -1e30)
  weights = tf.nn.softmax(sim, axis=-1)
  flat = lambda t: tf.reshape(t, [shape[0], length, -1])
  content = flat(tf.einsum("rnlm,rmnd->rlnd", weights, value))
  if present(value_table):
    positional = flat(tf.einsum("rnlm,lmd->rlnd", weights,
                                tf.gather(value_table, rows)))
  else:
    positional = tf.zeros_like(content)
  if sequence_major:
    content, positional = [tf.transpose(t, [1, 0, 2])
                           for t in (content, positional)]
  return content, positional


@tf.RegisterGradient("AxialSpanAttention")
def _span_attention_grad(op, grad_content, grad_positional):
  """Gradient of the kernel through `dense_span_attention`."""
  inputs = list(op.inputs)
  with tf.GradientTape() as tape:
    tape.watch(inputs)
    outputs = dense_span_attention(
        *inputs, radius=op.get_attr("radius"),
        sequence_major=op.get_attr("sequence_major"))
  grads = tape.gradient(outputs, inputs,
                        output_gradients=[grad_content, grad_positional])
  # The tables' gradients come from gathers (IndexedSlices); dense ones,
  # like the graph path's, for these small tables.
  return [tf.zeros_like(x) if g is None else tf.convert_to_tensor(g)
          for x, g in zip(inputs, grads)]
