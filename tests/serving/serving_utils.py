"""Shared pieces of the serving and serving-tool tests.

Stand-in models with the output dicts of the zoo's tasks, synthetic scenes,
the environment of a plain TensorFlow service, and `run_once`, which lets
the tests of a pytest-xdist run share one expensive artifact (an export)
instead of building it in every worker.
"""

import fcntl
import os
import subprocess
import sys
import traceback
from typing import Callable, Optional, Sequence, Tuple

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))

# The tiny Axial-DeepLab the tool tests build: narrow and shallow, so that
# building, tracing and serving stay cheap.
TINY_AXIAL_DEEPLAB = "axial_deeplab_s"
TINY_AXIAL_DEEPLAB_OVERRIDES = {
    "width_multiplier": 0.125, "depth": 26, "semantic_channels": 16,
    "instance_channels": 16, "context_channels": 16,
    "stem_channels": (8, 8, 16)}


QUICKSTART_GIN = os.path.join(REPO, "gin", "quickstart", "axial_deeplab.gin")


def tiny_experiment(folder: os.PathLike, categories: Sequence[dict],
                    extra_params: Sequence[str] = ()) -> list:
  """Gin params of the quickstart experiment, tiny, on a stub dataset.

  Building the task's model and post-processor reads only the dataset's
  metadata.json (written into `folder`, with empty shard files beside it).

  Args:
    folder: dataset folder to write.
    categories: COCO-style categories (train id = position), label divisor
      256, ignore label 255.
    extra_params: more gin bindings.

  Returns:
    --gin_param values for QUICKSTART_GIN.
  """
  from axial_deeplab_tf.data import metadata as metadata_lib  # pylint: disable=g-import-not-at-top
  metadata_lib.from_categories(list(categories), name="tiny",
                               label_divisor=256,
                               ignore_label=255).save(str(folder))
  for split in ("train", "val"):
    with open(os.path.join(folder, f"{split}-00000-of-00001.tfrecord"),
              "wb"):
      pass
  return [f"train/data.input_path = '{folder}/train-*'",
          f"eval/data.input_path = '{folder}/val-*'",
          f"model.overrides = {TINY_AXIAL_DEEPLAB_OVERRIDES!r}"
         ] + list(extra_params)


def set_flags(overrides) -> list:
  """`--set=key=value` flags of builder overrides."""
  return [f"--set={k}={v!r}" for k, v in overrides.items()]


def tool(name: str) -> str:
  return os.path.join(REPO, "tools", f"{name}.py")


def run_tool(name: str, args: Sequence[str], timeout: float = 900,
             env: Optional[dict] = None) -> subprocess.CompletedProcess:
  """Runs tools/<name>.py with this interpreter from the repository root."""
  return subprocess.run([sys.executable, tool(name)] + list(args),
                        capture_output=True, text=True, cwd=REPO,
                        timeout=timeout, env=env)


def assert_usage_error(name: str, args: Sequence[str], *expected: str):
  """tools/<name>.py exits with status 2 and every `expected` on stderr."""
  result = run_tool(name, args, timeout=300)
  assert result.returncode == 2, result.stderr[-2000:]
  for text in expected:
    assert text in result.stderr, result.stderr[-2000:]


_PEAK_RSS_WRAPPER = """
import os, subprocess, sys
child = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(child.pid, 0)
with open(sys.argv[1], "w") as f:
  f.write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_with_peak_rss(command: Sequence[str], report: str, **popen_kwargs
                      ) -> Tuple[int, int]:
  """Runs `command`; returns (exit code, its peak resident bytes).

  Linux counts the RSS of the process a child was forked from into the
  child's ru_maxrss (the memory is the parent's until exec), so a test
  process of several GiB would show in any child it waits for directly.
  A small Python process in between starts the command instead: what it
  reports is the command's own peak. `report` is a scratch file path.
  """
  returncode = subprocess.call(
      [sys.executable, "-c", _PEAK_RSS_WRAPPER, report] + list(command),
      **popen_kwargs)
  with open(report) as f:
    return returncode, int(f.read()) * 1024


def plain_env() -> dict:
  """The environment of a service: no project settings for Keras."""
  env = {k: v for k, v in os.environ.items()
         if k not in ("TF_USE_LEGACY_KERAS", "PYTHONPATH")}
  env["TF_CPP_MIN_LOG_LEVEL"] = "2"
  return env


def scene(rng: np.random.Generator, height: int, width: int,
          rectangles: int = 6, min_size: int = 4, noise: int = 8
         ) -> np.ndarray:
  """uint8 [height, width, 3]: flat-colored rectangles, a little noise."""
  image = np.empty((height, width, 3), np.int64)
  image[:] = rng.integers(0, 256, size=3)
  for _ in range(rectangles):
    y, x = rng.integers(0, height), rng.integers(0, width)
    h = rng.integers(min_size, height // 2 + min_size + 1)
    w = rng.integers(min_size, width // 2 + min_size + 1)
    image[y:y + h, x:x + w] = rng.integers(0, 256, size=3)
  image += rng.integers(-noise, noise + 1, size=image.shape)
  return np.clip(image, 0, 255).astype(np.uint8)


def scenes(rng: np.random.Generator, batch: int, height: int, width: int,
           **kwargs) -> np.ndarray:
  """uint8 [batch, height, width, 3] of `scene`s."""
  return np.stack([scene(rng, height, width, **kwargs)
                   for _ in range(batch)])


class TinyPanoptic(tf_keras.Model):
  """Conv stand-in with the panoptic output dict of the zoo models.

  Predicts at 1/output_stride of the input resolution (the zoo models
  predict at the input resolution: output_stride 1).
  """

  def __init__(self, num_classes: int = 4, seed: int = 1,
               semantic_bias: Optional[Sequence[float]] = None,
               output_stride: int = 1, **kwargs):
    super().__init__(**kwargs)
    init = tf_keras.initializers.RandomNormal(stddev=0.5, seed=seed)
    self.num_classes = num_classes
    self.body = tf_keras.layers.Conv2D(8, 3, padding="same",
                                       activation="relu",
                                       kernel_initializer=init)
    self.pool = tf_keras.layers.AveragePooling2D(5, output_stride,
                                                 padding="same")
    self.semantic = tf_keras.layers.Conv2D(
        num_classes, 1, kernel_initializer=init,
        bias_initializer=tf_keras.initializers.Constant(
            list(semantic_bias) if semantic_bias is not None else 0.0))
    # A positive bias puts local maxima above the center threshold.
    self.center = tf_keras.layers.Conv2D(
        1, 1, kernel_initializer=init,
        bias_initializer=tf_keras.initializers.Constant(1.0))
    self.offset = tf_keras.layers.Conv2D(2, 1, kernel_initializer=init)

  def call(self, images, training=None):
    x = tf.cast(images, self.compute_dtype) / 127.5 - 1.0
    x = self.pool(self.body(x))
    return {"semantic_logits": tf.cast(self.semantic(x), tf.float32),
            "center_heatmap": tf.cast(self.center(x), tf.float32),
            "offset_map": tf.cast(self.offset(x), tf.float32) * 3.0}


def built(model: tf_keras.Model) -> tf_keras.Model:
  """The model after one call (variables created)."""
  model(tf.zeros([1, 8, 8, 3], tf.uint8))
  return model


def softmax(logits: np.ndarray) -> np.ndarray:
  """Softmax over the last axis in float64."""
  logits = np.asarray(logits, np.float64)
  e = np.exp(logits - logits.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def run_once(tmp_path_factory, name: str,
             produce: Callable[[os.PathLike], None]):
  """Runs produce(folder) once per test run, even across xdist workers.

  The first worker to ask produces the folder under a lock in the run's
  shared temporary root; the others wait for it and reuse it. A failure is
  recorded, so that the other workers fail with it instead of repeating
  the work.

  Returns:
    The folder (a pathlib.Path).
  """
  run_id = os.environ.get("PYTEST_XDIST_TESTRUNUID")
  if run_id is None:  # One process: nothing to share.
    folder = tmp_path_factory.mktemp(name)
    produce(folder)
    return folder
  root = tmp_path_factory.getbasetemp().parent / f"shared-{run_id}"
  root.mkdir(exist_ok=True)
  folder = root / name
  done, failed = root / f"{name}.done", root / f"{name}.failed"
  with open(root / f"{name}.lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
      if failed.exists():
        pytest.fail(f"Producing {name!r} failed in another worker:\n"
                    f"{failed.read_text()}")
      if not done.exists():
        folder.mkdir(exist_ok=True)
        try:
          produce(folder)
        except BaseException:
          failed.write_text(traceback.format_exc()[-5000:])
          raise
        done.touch()
    finally:
      fcntl.flock(lock, fcntl.LOCK_UN)
  return folder


class TinyAxialPanoptic(TinyPanoptic):
  """`TinyPanoptic` with an AxialAttention2D in front (the fused kernel's
  layer): small enough to export to every format in seconds."""

  def __init__(self, num_classes, **kwargs):
    super().__init__(num_classes, **kwargs)
    from axial_deeplab_tf.layers import AxialAttention2D  # pylint: disable=g-import-not-at-top
    self.axial = AxialAttention2D(num_heads=1, key_depth=2, value_depth=3,
                                  span=5)

  def call(self, images, training=None):
    attended = self.axial(tf.cast(images, tf.float32) / 255.0,
                          training=training)
    # Float on (no cast back to uint8, whose out-of-range rounding differs
    # between runtimes).
    return super().call(attended * 255.0, training=training)

