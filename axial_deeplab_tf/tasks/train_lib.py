"""Runs a gin experiment with Model Garden's trainer and an Orbit controller."""

import json
import os
import time
from typing import Any, Dict, Mapping, Optional, Sequence

from absl import logging
import orbit
import tensorflow as tf
import tf_keras

from official.common import distribute_utils
from official.core import train_lib as mg_train_lib
from official.core import train_utils
from official.modeling import performance

from axial_deeplab_tf.tasks import experiment as experiment_lib
from axial_deeplab_tf.tasks import segmentation

MODES = ("train", "eval", "train_and_eval", "continuous_eval")


class ProgressLogger:
  """Orbit train action: step, losses, steps/s and ETA on the console."""

  def __init__(self, global_step: tf.Variable, total_steps: int):
    self._step = global_step
    self._total = total_steps
    self._last_time = time.time()
    self._last_step = int(global_step.numpy())

  def __call__(self, output: Optional[Mapping[str, Any]]):
    now = time.time()
    step = int(self._step.numpy())
    rate = (step - self._last_step) / max(now - self._last_time, 1e-9)
    eta = (self._total - step) / rate if rate > 0 else float("inf")
    values = {k: float(v) for k, v in (output or {}).items()
              if tf.rank(v) == 0}
    text = " ".join(f"{k}={v:.4g}" for k, v in sorted(values.items()))
    logging.info("step %d/%d | %s | %.2f steps/s | ETA %s", step, self._total,
                 text, rate,
                 time.strftime("%H:%M:%S", time.gmtime(eta))
                 if eta != float("inf") else "?")
    print(f"step {step}/{self._total} | {text} | {rate:.2f} steps/s | "
          f"ETA {eta:.0f}s", flush=True)
    self._last_time, self._last_step = now, step


class _Runner(mg_train_lib.OrbitExperimentRunner):
  """Model Garden's runner plus the progress logger."""

  def _build_controller(self, trainer, evaluator, save_summary=True,
                        train_actions=None, eval_actions=None,
                        controller_cls=orbit.Controller,
                        enable_async_checkpointing=False):
    actions = list(train_actions or [])
    if trainer is not None:
      actions.append(ProgressLogger(trainer.global_step,
                                    self.params.trainer.train_steps))
    return super()._build_controller(
        trainer, evaluator, save_summary=save_summary, train_actions=actions,
        eval_actions=eval_actions, controller_cls=controller_cls,
        enable_async_checkpointing=enable_async_checkpointing)


def check_model_dir(model_dir: str) -> None:
  """Creates model_dir and checks that it is writable (clear error if not)."""
  if not model_dir:
    raise ValueError("--model_dir is required.")
  try:
    tf.io.gfile.makedirs(model_dir)
    probe = os.path.join(model_dir, f".write_probe_{os.getpid()}")
    with tf.io.gfile.GFile(probe, "w") as f:
      f.write("ok")
    tf.io.gfile.remove(probe)
  except (tf.errors.OpError, OSError) as e:
    raise PermissionError(f"model_dir {model_dir!r} is not writable: "
                          f"{e}") from e


def _atomic_write(path: str, text: str) -> None:
  tmp = path + ".tmp"
  with tf.io.gfile.GFile(tmp, "w") as f:
    f.write(text)
  tf.io.gfile.rename(tmp, path, overwrite=True)


def build_strategy(runtime) -> tf.distribute.Strategy:
  """The tf.distribute strategy the runtime config names."""
  if runtime.distribution_strategy == "one_device":
    device = "/gpu:0" if tf.config.list_physical_devices("GPU") else "/cpu:0"
    return tf.distribute.OneDeviceStrategy(device)
  return distribute_utils.get_distribution_strategy(
      distribution_strategy=runtime.distribution_strategy,
      num_gpus=runtime.num_gpus, all_reduce_alg=runtime.all_reduce_alg,
      tpu_address=runtime.tpu)


def run(gin_files: Sequence[str], gin_params: Sequence[str], model_dir: str,
        mode: str = "train_and_eval") -> Dict[str, float]:
  """Parses the experiment, checks everything it can, then trains/evaluates.

  Args:
    gin_files: the experiment's gin files.
    gin_params: extra bindings.
    model_dir: checkpoints, summaries, params.yaml and operative_config.gin.
    mode: train, eval, train_and_eval or continuous_eval.

  Returns:
    The last evaluation metrics (empty for mode "train").
  """
  if mode not in MODES:
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")
  params = experiment_lib.parse_experiment(gin_files, gin_params)
  check_model_dir(model_dir)
  runtime = params.runtime
  if getattr(runtime, "seed", None) is not None:
    tf_keras.utils.set_random_seed(runtime.seed)
  if getattr(runtime, "enable_op_determinism", False):
    tf.config.experimental.enable_op_determinism()
  if runtime.mixed_precision_dtype != "float32":
    performance.set_mixed_precision_policy(runtime.mixed_precision_dtype)
  strategy = build_strategy(runtime)
  # Data and model errors surface here, before any training step.
  with strategy.scope():
    task = segmentation.build_task(params, logging_dir=model_dir)
  if strategy.extended.should_checkpoint:
    _atomic_write(os.path.join(model_dir, "operative_config.gin"),
                  experiment_lib.operative_config())
    train_utils.serialize_config(params, model_dir)
  runner = _Runner(distribution_strategy=strategy, task=task, mode=mode,
                   params=params, model_dir=model_dir,
                   run_post_eval=mode != "train")
  _, eval_logs = runner.run()
  results = {k: float(v) for k, v in (eval_logs or {}).items()
             if tf.rank(v) == 0}
  if results and strategy.extended.should_checkpoint:
    _atomic_write(os.path.join(model_dir, "eval_results.json"),
                  json.dumps(results, indent=2, sort_keys=True))
  return results
