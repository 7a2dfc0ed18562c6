"""The fused axial-attention kernel against a dense numpy reference."""

import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from axial_deeplab_tf.layers import AxialAttention, AxialAttention2D
from axial_deeplab_tf.ops import fused_attention
from axial_deeplab_tf.serving import export_module as em
from axial_deeplab_tf.utils import madds
from tests.serving import serving_utils as su


@pytest.fixture(scope="module")
def kernel():
  lib = fused_attention.load()
  assert lib is not None, (
      f"the fused kernel should build on this machine: "
      f"{fused_attention.load_error()}")
  return lib


def dense_reference(q, k, v, rq, rk, rv, scale, radius):
  """Explicit-mask dense attention in float64; q, k, v [R, L, N, d]."""
  q, k, v = [t.astype(np.float64) for t in (q, k, v)]
  rows, length, heads, _ = q.shape
  rel = np.arange(length)[None, :] - np.arange(length)[:, None]  # m - l
  mask = np.abs(rel) <= radius
  idx = np.clip(rel + radius, 0, 2 * radius)
  sim = scale[0][None, :, None, None] * np.einsum("rlnd,rmnd->rnlm", q, k)
  if rq is not None:
    sim = sim + scale[1][None, :, None, None] * np.einsum(
        "rlnd,lmd->rnlm", q, rq.astype(np.float64)[idx])
  if rk is not None:
    sim = sim + scale[2][None, :, None, None] * np.einsum(
        "rmnd,lmd->rnlm", k, rk.astype(np.float64)[idx])
  sim = np.where(mask[None, None], sim, -np.inf)
  a = np.exp(sim - sim.max(-1, keepdims=True))
  a /= a.sum(-1, keepdims=True)
  out = np.einsum("rnlm,rmnd->rlnd", a, v).reshape(rows, length, -1)
  pos = np.zeros_like(out)
  if rv is not None:
    pos = np.einsum("rnlm,lmd->rlnd", a,
                    rv.astype(np.float64)[idx]).reshape(rows, length, -1)
  return out, pos


CASES = [
    # rows, length, heads, key depth, value depth, radius, tables
    (3, 37, 2, 4, 8, 5, (True, True, True)),
    (2, 16, 1, 3, 5, 2, (True, True, True)),  # one full tile; odd depths
    (2, 5, 3, 2, 2, 7, (True, True, True)),  # radius beyond the axis
    (1, 70, 2, 8, 12, 32, (True, True, True)),  # blocks of offsets / channels
    (2, 33, 2, 4, 4, 32, (True, True, True)),  # global: radius = length - 1
    (2, 19, 2, 4, 4, 0, (True, True, True)),  # attends to itself only
    (2, 23, 2, 4, 9, 3, (False, True, False)),
    (2, 23, 2, 4, 9, 3, (True, False, True)),
    (2, 23, 2, 4, 9, 3, (False, False, False)),
]


@pytest.mark.parametrize("rows,length,heads,dk,dv,radius,tables", CASES)
@pytest.mark.parametrize("sequence_major", [False, True])
def test_kernel_matches_dense_reference(kernel, rows, length, heads, dk, dv,
                                        radius, tables, sequence_major):
  rng = np.random.default_rng(rows * 1000 + length)
  q = rng.normal(size=(rows, length, heads, dk)).astype(np.float32)
  k = rng.normal(size=(rows, length, heads, dk)).astype(np.float32)
  v = rng.normal(size=(rows, length, heads, dv)).astype(np.float32)
  table = lambda d: rng.normal(size=(2 * radius + 1, d)).astype(np.float32)
  rq = table(dk) if tables[0] else None
  rk = table(dk) if tables[1] else None
  rv = table(dv) if tables[2] else None
  scale = rng.uniform(0.5, 1.5, size=(3, heads)).astype(np.float32)
  expected = dense_reference(q, k, v, rq, rk, rv, scale, radius)
  layout = (lambda t: np.ascontiguousarray(np.swapaxes(t, 0, 1))
            if sequence_major else t)
  got = fused_attention.span_attention(
      layout(q), layout(k), layout(v), rq, rk, rv, scale, radius=radius,
      sequence_major=sequence_major)
  for g, e in zip(got, expected):
    np.testing.assert_allclose(layout(g.numpy()), e, atol=2e-5, rtol=1e-4)


def test_kernel_rejects_bad_shapes(kernel):
  q = tf.zeros([2, 9, 2, 4])
  table = tf.zeros([7, 4])
  scale = tf.ones([3, 2])
  with pytest.raises(tf.errors.InvalidArgumentError, match="2 \\* radius"):
    fused_attention.span_attention(q, q, q, table, table, table, scale,
                                   radius=2)
  with pytest.raises(tf.errors.InvalidArgumentError, match="shapes differ"):
    fused_attention.span_attention(q, tf.zeros([2, 9, 2, 3]), q, None, None,
                                   None, scale, radius=3)
  with pytest.raises(tf.errors.InvalidArgumentError, match="scale"):
    fused_attention.span_attention(q, q, q, None, None, None,
                                   tf.ones([3, 3]), radius=3)


def _op_types(fn, *args):
  graph = tf.function(fn).get_concrete_function(*args).graph
  types = set()

  def walk(g):
    for op in g.get_operations():
      types.add(op.type)
    for f in getattr(g, "_functions", {}).values():
      walk(f.graph)

  walk(graph)
  return types


def _randomised(layer, rng):
  for w in layer.weights:
    if "moving_variance" in w.name or "gamma" in w.name:
      w.assign(rng.uniform(0.5, 1.5, w.shape))
    elif "moving_mean" in w.name or "beta" in w.name:
      w.assign(rng.normal(0.0, 0.3, w.shape))
  return layer


@pytest.mark.parametrize("span,max_length,shape", [
    (7, None, (2, 21, 18, 6)),
    (None, 16, (1, 16, 11, 6)),
    (5, None, (1, 3, 40, 6)),
])
def test_layer_inference_fused_equals_graph(kernel, span, max_length, shape):
  rng = np.random.default_rng(4)
  layer = AxialAttention2D(num_heads=2, key_depth=8, value_depth=12,
                           span=span, max_length=max_length)
  x = tf.constant(rng.normal(size=shape).astype(np.float32))
  layer(x, training=False)
  _randomised(layer, rng)
  fused = lambda x: layer(x, training=False)
  assert "AxialSpanAttention" in _op_types(fused, x)
  with fused_attention.disabled():
    assert "AxialSpanAttention" not in _op_types(fused, x)
    graph_out = tf.function(fused)(x).numpy()
  np.testing.assert_allclose(tf.function(fused)(x).numpy(), graph_out,
                             atol=1e-4, rtol=1e-4)
  # Training never uses the kernel (it has no gradient).
  assert "AxialSpanAttention" not in _op_types(
      lambda x: layer(x, training=True), x)


def test_switches_turn_the_kernel_off(kernel, monkeypatch):
  assert fused_attention.usable(tf.float32)
  assert not fused_attention.usable(tf.bfloat16)
  with fused_attention.disabled():
    assert not fused_attention.usable(tf.float32)
  monkeypatch.setenv("AXIAL_DEEPLAB_FUSED_ATTENTION", "0")
  assert not fused_attention.usable(tf.float32)
  monkeypatch.delenv("AXIAL_DEEPLAB_FUSED_ATTENTION")
  wrapped = fused_attention.without_fused(lambda: fused_attention.usable(
      tf.float32))
  assert not wrapped()
  xla = tf.function(lambda: tf.constant(fused_attention.usable(tf.float32)),
                    jit_compile=True)
  assert not xla().numpy()


def test_missing_compiler_falls_back_with_a_reason(tmp_path, monkeypatch):
  script = (
      "import os, tensorflow as tf\n"
      "from axial_deeplab_tf.ops import fused_attention as fa\n"
      "from axial_deeplab_tf.layers import AxialAttention\n"
      "assert fa.load() is None and 'compiler' in fa.load_error(), "
      "fa.load_error()\n"
      "layer = AxialAttention(num_heads=2, key_depth=4, value_depth=4, "
      "span=3)\n"
      "print(layer(tf.ones([1, 6, 3]), training=False).shape)\n")
  import subprocess, sys, os  # pylint: disable=g-import-not-at-top,multiple-imports
  env = dict(os.environ, AXIAL_DEEPLAB_KERNEL_CACHE=str(tmp_path),
             CXX=str(tmp_path / "no-such-compiler"), PATH="/nonexistent",
             TF_CPP_MIN_LOG_LEVEL="2")
  result = subprocess.run([sys.executable, "-c", script], env=env,
                          capture_output=True, text=True, timeout=300,
                          check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "(1, 6, 4)" in result.stdout
  assert "not available" in result.stderr


def test_madds_count_in_span_pairs(kernel):
  length, heads, dk, dv, radius = 11, 2, 4, 6, 3
  inputs = tf_keras.Input([length, 5], batch_size=3)
  layer = AxialAttention(num_heads=heads, key_depth=heads * dk,
                         value_depth=heads * dv, span=2 * radius + 1)
  model = tf_keras.Model(inputs, layer(inputs))
  counted = madds.count_madds(model, [3, length, 5])
  pairs = sum(1 for l in range(length) for m in range(length)
              if abs(m - l) <= radius)
  assert pairs == madds.in_span_pairs(length, radius)
  attention = 3 * heads * pairs * (3 * dk + 2 * dv)
  assert counted.by_op_type["AxialSpanAttention"] == attention
  projection = 3 * length * 5 * heads * (2 * dk + dv)
  assert counted.by_op_type["MatMul"] == projection


def test_export_holds_only_standard_ops(kernel, tmp_path):
  model = su.built(su.TinyAxialPanoptic(4))
  images = tf.zeros([1, 12, 10, 3], tf.uint8)
  assert "AxialSpanAttention" in _op_types(
      lambda x: model(x, training=False), tf.cast(images, tf.float32))
  module = em.build_export_module(
      em.ServingParams(task="panoptic"), model,
      dict(thing_class_ids=[2, 3], num_classes=4, label_divisor=256,
           ignore_label=255, stuff_area_limit=8, nms_kernel=3,
           keep_k_centers=16))
  export_dir = em.export_saved_model(module, str(tmp_path / "export"))
  saved = (tmp_path / "export" / "saved_model.pb").read_bytes()
  assert b"AxialSpanAttention" not in saved
  loaded = tf.saved_model.load(export_dir)
  out = loaded.signatures["serving_default"](images=images)
  assert out["panoptic_pred"].shape == (1, 12, 10)


@pytest.mark.parametrize("sequence_major", [False, True])
def test_gradient_through_inference_matches_graph(kernel, sequence_major):
  rng = np.random.default_rng(9)
  layer = AxialAttention(num_heads=2, key_depth=4, value_depth=6, span=5)
  x = tf.constant(rng.normal(size=(3, 13, 5)).astype(np.float32))
  if sequence_major:
    x = tf.transpose(x, [1, 0, 2])
  layer(x, training=False, sequence_major=sequence_major)
  _randomised(layer, rng)

  def grads():
    with tf.GradientTape() as tape:
      tape.watch(x)
      y = layer(x, training=False, sequence_major=sequence_major)
      loss = tf.reduce_sum(y * tf.range(1.0, 1.0 + y.shape[-1]))
    return tape.gradient(loss, [x] + layer.trainable_weights)

  fused = grads()
  with fused_attention.disabled():
    graph = grads()
  assert sum(g is not None for g in graph) >= 6
  for f, g in zip(fused, graph):
    if g is None:  # E.g. the similarity offsets: no effect in inference.
      assert f is None or not np.any(tf.convert_to_tensor(f).numpy())
      continue
    np.testing.assert_allclose(tf.convert_to_tensor(f).numpy(),
                               tf.convert_to_tensor(g).numpy(), atol=1e-4,
                               rtol=1e-4)


# ----------------------------------------------------------- cache rules
@pytest.fixture
def fake_compiler(kernel, monkeypatch):
  """Replaces the compiler by a copy of the real build (counts its runs).

  The cache rules are what these tests check; a real compile is checked
  once, in a subprocess, by `test_tampered_library_is_rebuilt_and_runs`.
  """
  built = fused_attention.library_path().read_bytes()
  runs = []

  def compile_(output):
    runs.append(output)
    with open(output, "wb") as f:
      f.write(built)

  monkeypatch.setattr(fused_attention, "_compile", compile_)
  return runs


def _mode(path):
  return os.stat(path).st_mode & 0o777


def test_cache_directory_is_created_private(tmp_path, fake_compiler):
  library = tmp_path / "shared" / "cache" / "k.so"
  assert fused_attention.trusted_library(library) == library
  assert _mode(library.parent) == 0o700
  assert _mode(library) & 0o077 == 0
  assert len(fake_compiler) == 1
  # A second call trusts the cached file: no rebuild.
  fused_attention.trusted_library(library)
  assert len(fake_compiler) == 1


@pytest.mark.parametrize("spoil,reason", [
    (lambda p: os.chmod(p, 0o766), "writable by group or others"),
    (lambda p: os.chmod(p, 0o720), "writable by group or others"),
    (lambda p: os.chmod(p.with_name(p.name + ".sha256"), 0o622),
     "writable by group or others"),
    (lambda p: p.write_bytes(p.read_bytes() + b"\0"), "SHA-256"),
    (lambda p: p.with_name(p.name + ".sha256").write_text("0" * 64),
     "SHA-256"),
    (lambda p: p.with_name(p.name + ".sha256").unlink(), "no recorded"),
])
def test_untrusted_library_is_rebuilt_with_a_warning(
    tmp_path, fake_compiler, spoil, reason, caplog):
  library = tmp_path / "cache" / "k.so"
  fused_attention.trusted_library(library)
  spoil(library)
  assert reason in fused_attention.library_problem(library)
  with caplog.at_level("WARNING"):
    fused_attention.trusted_library(library)
  assert len(fake_compiler) == 2
  assert reason in caplog.text and "rebuilding" in caplog.text
  assert fused_attention.library_problem(library) is None
  assert _mode(library) & 0o022 == 0


def _other_uid():
  return os.getuid() + 4242


def test_library_of_another_user_is_rebuilt(tmp_path, fake_compiler,
                                            monkeypatch, caplog):
  library = tmp_path / "cache" / "k.so"
  fused_attention.trusted_library(library)
  if os.getuid() == 0:
    os.chown(library, _other_uid(), -1)
  else:  # Without root, the current user is the one who is "another".
    real = os.getuid()
    monkeypatch.setattr(fused_attention, "_current_uid", _other_uid)
    assert "owned by uid" in fused_attention.library_problem(library)
    monkeypatch.setattr(fused_attention, "_current_uid", lambda: real)
    pytest.skip("chown needs root; the owner check is shown above")
  assert (f"owned by uid {_other_uid()}" in
          fused_attention.library_problem(library))
  with caplog.at_level("WARNING"):
    fused_attention.trusted_library(library)
  assert "owned by uid" in caplog.text
  assert os.stat(library).st_uid == os.getuid()
  assert len(fake_compiler) == 2


@pytest.mark.parametrize("spoil,reason", [
    (lambda d: os.chmod(d, 0o777), "writable by group or others"),
    (lambda d: os.chmod(d, 0o770), "writable by group or others"),
    ("owner", "owned by uid"),
])
def test_untrusted_cache_directory_is_not_used(tmp_path, fake_compiler,
                                               monkeypatch, spoil, reason):
  library = tmp_path / "cache" / "k.so"
  fused_attention.trusted_library(library)
  if spoil == "owner":
    monkeypatch.setattr(fused_attention, "_current_uid", _other_uid)
  else:
    spoil(library.parent)
  with pytest.raises(fused_attention.UntrustedCacheError, match=reason):
    fused_attention.trusted_library(library)
  assert len(fake_compiler) == 1


def _run_layer(cache, timeout=600):
  script = (
      "import tensorflow as tf\n"
      "from axial_deeplab_tf.ops import fused_attention as fa\n"
      "from axial_deeplab_tf.layers import AxialAttention\n"
      "print('loaded', fa.load() is not None)\n"
      "layer = AxialAttention(num_heads=2, key_depth=4, value_depth=4, "
      "span=3)\n"
      "print(layer(tf.ones([1, 6, 3]), training=False).shape)\n")
  import subprocess, sys  # pylint: disable=g-import-not-at-top,multiple-imports
  env = dict(os.environ, AXIAL_DEEPLAB_KERNEL_CACHE=str(cache),
             TF_CPP_MIN_LOG_LEVEL="2")
  return subprocess.run([sys.executable, "-c", script], env=env,
                        capture_output=True, text=True, timeout=timeout,
                        check=False)


def test_world_writable_cache_runs_the_graph(tmp_path):
  cache = tmp_path / "cache"
  cache.mkdir()
  os.chmod(cache, 0o777)
  result = _run_layer(cache)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "loaded False" in result.stdout and "(1, 6, 4)" in result.stdout
  assert "writable by group or others" in result.stderr
  assert not list(cache.iterdir())  # Nothing built there.


@pytest.mark.slow
def test_tampered_library_is_rebuilt_and_runs(kernel, tmp_path):
  cache = tmp_path / "cache"
  cache.mkdir(mode=0o700)
  good = fused_attention.library_path()
  planted = cache / good.name
  planted.write_bytes(good.read_bytes()[:-1] + b"\1")
  (cache / (good.name + ".sha256")).write_text(
      fused_attention._sha256(good) + "\n")  # pylint: disable=protected-access
  os.chmod(planted, 0o700)
  result = _run_layer(cache)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "loaded True" in result.stdout and "(1, 6, 4)" in result.stdout
  assert "SHA-256" in result.stderr and "rebuilding" in result.stderr
  assert fused_attention.library_problem(planted) is None
