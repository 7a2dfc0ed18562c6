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
graph building in `disabled()`. Nothing saved ever holds the op: graphs
traced while a SavedModel is written (`tf.saved_model.save`, tf_keras
`model.save` in the SavedModel format, `model.export` and
`ExportArchive.write_out`, tools/export_saved_model.py) use the standard
ops, so every SavedModel loads anywhere TensorFlow does. Only graphs built
for this process (eager calls, tf.functions) run the kernel.

The cache is a shared-machine attack surface (a library loaded from it runs
in the process), so:
  * the cache directory is created with mode 0700; one owned by another
    user, or writable by group or others, is not used at all;
  * the library is loaded only if it and its sidecar hash file
    (`<library>.sha256`, written by the build) are regular files owned by
    the current user, not writable by group or others, and the library's
    SHA-256 equals the recorded one;
  * otherwise the library is rebuilt (a foreign, loosely permitted or
    tampered file is replaced) or, when the directory itself is not
    trusted or the rebuild fails, the TensorFlow graph is used; a warning
    names the reason either way.
"""

import contextlib
import hashlib
import os
import platform
import shutil
import stat
import subprocess
import threading
from pathlib import Path
from typing import Optional

from absl import logging
import tensorflow as tf

from axial_deeplab_tf.utils import io as io_lib

_SOURCE = Path(__file__).parent / "kernels" / "axial_span_attention.cc"
_ENV_SWITCH = "AXIAL_DEEPLAB_FUSED_ATTENTION"
_ENV_CACHE = "AXIAL_DEEPLAB_KERNEL_CACHE"
_HASH_SUFFIX = ".sha256"

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


class UntrustedCacheError(RuntimeError):
  """The cache directory may be written by someone else: not used."""


def _current_uid() -> int:
  return os.getuid()


def _trust_problem(path: Path, what: str, directory: bool = False
                  ) -> Optional[str]:
  """Why `path` cannot be trusted (owner, type, mode), or None."""
  info = os.lstat(path)
  kind = stat.S_ISDIR if directory else stat.S_ISREG
  if not kind(info.st_mode):
    expected = "directory" if directory else "regular file"
    return f"{what} {path} is not a {expected} (or is a symbolic link)"
  if info.st_uid != _current_uid():
    return (f"{what} {path} is owned by uid {info.st_uid}, not the current "
            f"user (uid {_current_uid()})")
  if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
    return (f"{what} {path} is writable by group or others (mode "
            f"{stat.S_IMODE(info.st_mode):o})")
  return None


def _sha256(path: Path) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def _hash_path(path: Path) -> Path:
  return path.with_name(path.name + _HASH_SUFFIX)


def _prepare_cache_dir(directory: Path) -> None:
  """Creates the cache directory 0700; raises if it is not ours alone."""
  if not os.path.lexists(directory):
    directory.parent.mkdir(parents=True, exist_ok=True)
    try:
      directory.mkdir(mode=0o700)
    except FileExistsError:
      pass
  problem = _trust_problem(directory, "kernel cache directory",
                           directory=True)
  if problem:
    raise UntrustedCacheError(problem)


def library_problem(path: Path) -> Optional[str]:
  """Why the cached library at `path` must not be loaded, or None.

  Checks the library and its sidecar hash file: regular files, owned by
  the current user, not writable by group or others, and the library's
  SHA-256 equal to the one recorded when it was built.
  """
  if not os.path.lexists(path):
    return f"no library at {path}"
  hash_path = _hash_path(path)
  if not os.path.lexists(hash_path):
    return f"{path} has no recorded content hash ({hash_path.name})"
  for target, what in ((path, "kernel library"),
                       (hash_path, "kernel hash file")):
    problem = _trust_problem(target, what)
    if problem:
      return problem
  recorded = hash_path.read_text().strip()
  actual = _sha256(path)
  if actual != recorded:
    return (f"kernel library {path} has SHA-256 {actual[:16]}..., not the "
            f"{recorded[:16]}... recorded when it was built (modified)")
  return None


def _compile(output: str) -> None:
  result = subprocess.run(_build_command(output), capture_output=True,
                          text=True, check=False)
  if result.returncode != 0:
    raise RuntimeError(f"compiling {_SOURCE.name} failed:\n"
                       f"{result.stderr[-2000:]}")


def _build(path: Path) -> None:
  """Compiles the kernel into `path` and records its hash beside it.

  Both files are written under temporary names (modes 0700 and 0600) and
  renamed into place; the hash goes last, so a reader never sees a library
  with a hash that is not its own for long.
  """
  digest = []

  def write_library(tmp):
    os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    _compile(tmp)
    os.chmod(tmp, 0o700)
    digest.append(_sha256(Path(tmp)))

  def write_hash(tmp):
    with open(tmp, "w") as f:
      f.write(digest[0] + "\n")
    os.chmod(tmp, 0o600)

  io_lib.write_atomically(str(path), write_library)
  io_lib.write_atomically(str(_hash_path(path)), write_hash)


def trusted_library(path: Optional[Path] = None) -> Path:
  """The path of a cached library that may be loaded, building it if needed.

  Args:
    path: the library's cache path (default `library_path()`).

  Returns:
    `path`, after the checks of `library_problem` pass.

  Raises:
    UntrustedCacheError: the cache directory belongs to someone else or is
      writable by group or others.
    RuntimeError: the build failed, or its result fails the checks.
  """
  path = library_path() if path is None else Path(path)
  _prepare_cache_dir(path.parent)
  problem = library_problem(path)
  if problem is None:
    return path
  if os.path.lexists(path):
    logging.warning("Not loading the cached fused axial-attention kernel: "
                    "%s; rebuilding it.", problem)
  _build(path)
  problem = library_problem(path)
  if problem is not None:
    raise RuntimeError(f"the rebuilt kernel fails its checks: {problem}")
  return path


@tf.autograph.experimental.do_not_convert
def load():
  """The loaded op library, building it if needed; None if unavailable."""
  global _library, _load_error, _loaded
  with _lock:
    if _loaded:
      return _library
    _loaded = True
    try:
      _library = tf.load_op_library(str(trusted_library()))
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


def _in_save_context() -> bool:
  """Whether a SavedModel is being written (its graphs are traced now)."""
  from tensorflow.python.saved_model import save_context  # pylint: disable=g-import-not-at-top
  return save_context.in_save_context()


def _trace_exports_without_kernel() -> None:
  """Makes tf_keras `ExportArchive.write_out` (and `model.export`) trace
  its endpoints under `disabled()`.

  It traces the endpoint signatures before `tf.saved_model.save` opens its
  save context, so the check in `usable` alone would not see it.
  """
  try:
    from tf_keras.src.export import export_lib  # pylint: disable=g-import-not-at-top
  except ImportError:  # tf_keras absent or reorganised: nothing to wrap.
    return
  archive = getattr(export_lib, "ExportArchive", None)
  write_out = getattr(archive, "write_out", None)
  if write_out is None or getattr(write_out, "_without_fused", False):
    return
  wrapped = without_fused(write_out)
  wrapped._without_fused = True  # pylint: disable=protected-access
  archive.write_out = wrapped


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
  compilation, `disabled()` and the writing of a SavedModel, unless
  AXIAL_DEEPLAB_FUSED_ATTENTION=0, and once the kernel has loaded.
  """
  if _disabled_depth or tf.as_dtype(dtype) != tf.float32:
    return False
  if _in_save_context():
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


_trace_exports_without_kernel()
