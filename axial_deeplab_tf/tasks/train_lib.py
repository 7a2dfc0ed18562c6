"""Runs a gin experiment with Model Garden's trainer and an Orbit controller.

`prepare` does everything that can fail because of the experiment's
configuration (gin bindings, model_dir, data files, strategy, model, data
pipeline, checkpoint restore) before any training step; `execute` trains
and/or evaluates. `run` is both.

Reliability:
  * Checkpoints are Model Garden's (tf.train.CheckpointManager: data written
    under a temporary name, the `checkpoint` index replaced atomically), so a
    killed run resumes from the last complete checkpoint. Deterministic
    training data (train/data.deterministic with a seed) also resumes at the
    data position of that checkpoint (`Task.resume_input_at_step`), so with
    runtime.enable_op_determinism and runtime.seed a resumed run ends with
    the weights of an uninterrupted one.
  * NaN (or > trainer.loss_upper_bound) losses trigger Model Garden's
    recovery action: the last checkpoint is restored and training continues,
    at most trainer.recovery_max_trials times.
  * Non-chief multi-worker processes save into a private temporary folder
    (Model Garden: every worker must take part in saving) but resume from the
    chief's checkpoint in model_dir.
"""

import dataclasses
import json
import os
import tempfile
import time
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

from absl import logging
import orbit
import tensorflow as tf
import tf_keras

from official.common import distribute_utils
from official.core import config_definitions as cfg
from official.core import train_lib as mg_train_lib
from official.core import train_utils
from official.modeling import performance

from axial_deeplab_tf.tasks import experiment as experiment_lib
from axial_deeplab_tf.tasks import segmentation

MODES = ("train", "eval", "train_and_eval", "continuous_eval")
_GLOBAL_STEP_KEY = "global_step/.ATTRIBUTES/VARIABLE_VALUE"


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
  """Model Garden's runner plus progress logging, extra actions and resume.

  `after_actions` run after Model Garden's own train actions (NaN recovery),
  so they see the state training continues from.
  """

  def __init__(self, *args, after_actions: Sequence[Callable] = (),
               **kwargs):
    self._after_actions = tuple(after_actions)
    self._last_eval = None  # (global step, logs) of the latest evaluation.
    super().__init__(*args, **kwargs)

  def _record_eval(self, logs):
    self._last_eval = (int(self.trainer.global_step.numpy()), logs)

  def final_eval_logs(self):
    """Metrics of the final step: the last evaluation's if it ran there.

    Model Garden's run_post_eval would evaluate once more after
    train_and_eval; an evaluation already made at the final step is reused.
    """
    step = int(self.trainer.global_step.numpy())
    if self._last_eval is not None and self._last_eval[0] == step:
      return self._last_eval[1]
    with self.strategy.scope():
      return self.controller.evaluate(
          steps=self.params.trainer.validation_steps)

  def _maybe_build_checkpoint_manager(self):
    if (self.trainer.checkpoint is None or
        self.strategy.extended.should_checkpoint):
      return super()._maybe_build_checkpoint_manager()
    chief_checkpoint = tf.train.latest_checkpoint(self.model_dir)
    trainer = self.trainer

    def init_fn():
      # Called when the private folder holds no checkpoint, i.e. at the
      # start of this process: resume from the chief's checkpoint if any.
      if chief_checkpoint:
        trainer.checkpoint.restore(chief_checkpoint).expect_partial()
        logging.info("Non-chief worker restored %s.", chief_checkpoint)
      else:
        trainer.initialize()

    return tf.train.CheckpointManager(
        trainer.checkpoint, directory=tempfile.mkdtemp(prefix="worker_ckpt"),
        max_to_keep=1, step_counter=trainer.global_step,
        checkpoint_interval=self.params.trainer.checkpoint_interval,
        init_fn=init_fn)

  def _build_controller(self, trainer, evaluator, save_summary=True,
                        train_actions=None, eval_actions=None,
                        controller_cls=orbit.Controller,
                        enable_async_checkpointing=False):
    actions = list(train_actions or [])
    if trainer is not None:
      actions.append(ProgressLogger(trainer.global_step,
                                    self.params.trainer.train_steps))
    controller = super()._build_controller(
        trainer, evaluator, save_summary=save_summary, train_actions=actions,
        eval_actions=list(eval_actions or []) + [self._record_eval],
        controller_cls=controller_cls,
        enable_async_checkpointing=enable_async_checkpointing)
    if trainer is not None and self._after_actions:
      controller.train_actions = (tuple(controller.train_actions) +
                                  self._after_actions)
    return controller


@dataclasses.dataclass
class PreparedExperiment:
  """An experiment ready to run (see `prepare`)."""
  params: cfg.ExperimentConfig
  strategy: tf.distribute.Strategy
  task: Any
  runner: _Runner
  model_dir: str
  mode: str
  resumed_from: Optional[str]


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
    reason = getattr(e, "message", None) or str(e)
    raise PermissionError(f"model_dir {model_dir!r} is not writable: "
                          f"{reason}") from e


def check_data(params: cfg.ExperimentConfig, mode: str) -> None:
  """Checks that the input paths the mode reads match files.

  Raises:
    FileNotFoundError: naming the binding and the pattern that matches
      nothing.
  """
  splits = []
  if "train" in mode:
    splits.append(("train/data.input_path", params.task.train_data))
  if "eval" in mode:
    splits.append(("eval/data.input_path", params.task.validation_data))
  for binding, data in splits:
    patterns = [p.strip() for p in str(data.input_path).split(",")
                if p.strip()]
    if not patterns:
      raise FileNotFoundError(f"{binding} is empty; mode {mode!r} reads it.")
    for pattern in patterns:
      if not tf.io.gfile.glob(pattern):
        raise FileNotFoundError(f"{binding} {pattern!r} matches no files.")


def latest_checkpoint(model_dir: str) -> Tuple[Optional[str], int]:
  """The newest complete checkpoint in model_dir and its global step."""
  path = tf.train.latest_checkpoint(model_dir)
  if not path:
    return None, 0
  try:
    return path, int(tf.train.load_variable(path, _GLOBAL_STEP_KEY))
  except (tf.errors.NotFoundError, tf.errors.InvalidArgumentError) as e:
    raise ValueError(f"model_dir {model_dir!r} holds checkpoint {path!r} "
                     f"without a global step: not a training checkpoint of "
                     f"this trainer; use a fresh model_dir.") from e


def configure_cpu_devices(num_devices: int) -> None:
  """Splits the first CPU into `num_devices` logical devices (if > 1).

  Raises:
    ValueError: TensorFlow already initialised its devices differently (the
      split must happen before the first op runs in the process).
  """
  if num_devices <= 1:
    return
  cpu = tf.config.list_physical_devices("CPU")[0]
  current = tf.config.get_logical_device_configuration(cpu)
  if current is not None and len(current) == num_devices:
    return
  try:
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * num_devices)
  except RuntimeError as e:
    raise ValueError(
        f"runtime.num_cpu_devices={num_devices} needs a fresh process: "
        f"TensorFlow already initialised its devices ({e}).") from e


def build_strategy(runtime) -> tf.distribute.Strategy:
  """The tf.distribute strategy the runtime config names."""
  has_gpu = bool(tf.config.list_physical_devices("GPU"))
  if runtime.distribution_strategy == "one_device":
    return tf.distribute.OneDeviceStrategy("/gpu:0" if has_gpu else "/cpu:0")
  num_cpu_devices = getattr(runtime, "num_cpu_devices", 1)
  if (runtime.distribution_strategy == "mirrored" and not has_gpu and
      num_cpu_devices > 1):
    return tf.distribute.MirroredStrategy(
        [f"/device:CPU:{i}" for i in range(num_cpu_devices)])
  return distribute_utils.get_distribution_strategy(
      distribution_strategy=runtime.distribution_strategy,
      num_gpus=runtime.num_gpus, all_reduce_alg=runtime.all_reduce_alg,
      tpu_address=runtime.tpu)


def _atomic_write(path: str, text: str) -> None:
  tmp = f"{path}.tmp-{os.getpid()}"
  with tf.io.gfile.GFile(tmp, "w") as f:
    f.write(text)
  tf.io.gfile.rename(tmp, path, overwrite=True)


def prepare(gin_files: Sequence[str], gin_params: Sequence[str],
            model_dir: str, mode: str = "train_and_eval",
            train_actions: Sequence[Callable] = ()) -> PreparedExperiment:
  """Parses, checks and builds everything; no training step runs.

  In order: mode, gin (unknown bindings fail with file and line), model_dir
  (created, must be writable), the input files the mode reads, runtime
  (CPU devices, seed, op determinism, precision policy), strategy, task,
  trainer (model, optimizer, datasets), controller (restores the newest
  checkpoint of model_dir). The chief writes operative_config.gin and
  params.yaml into model_dir.

  Args:
    gin_files: the experiment's gin files.
    gin_params: extra bindings.
    model_dir: checkpoints, summaries, params.yaml and operative_config.gin.
    mode: train, eval, train_and_eval or continuous_eval.
    train_actions: Orbit actions (callables of the train output) run after
      every training loop, after Model Garden's recovery action.

  Returns:
    A PreparedExperiment for `execute`.

  Raises:
    ValueError, TypeError, OSError: configuration errors (bad binding or
      value, unwritable model_dir, missing data).
  """
  if mode not in MODES:
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")
  params = experiment_lib.parse_experiment(gin_files, gin_params)
  check_model_dir(model_dir)
  check_data(params, mode)
  runtime = params.runtime
  configure_cpu_devices(getattr(runtime, "num_cpu_devices", 1))
  if getattr(runtime, "seed", None) is not None:
    tf_keras.utils.set_random_seed(runtime.seed)
  if getattr(runtime, "enable_op_determinism", False):
    tf.config.experimental.enable_op_determinism()
  # Always set: an earlier experiment in this process may have changed it.
  performance.set_mixed_precision_policy(runtime.mixed_precision_dtype)
  strategy = build_strategy(runtime)
  resumed_from, start_step = latest_checkpoint(model_dir)
  with strategy.scope():
    task = segmentation.build_task(params, logging_dir=model_dir)
  if resumed_from and "train" in mode:
    logging.info("Resuming from checkpoint %s (step %d).", resumed_from,
                 start_step)
    print(f"Resuming from checkpoint {resumed_from} (step {start_step}).",
          flush=True)
    task.resume_input_at_step(start_step)
  if strategy.extended.should_checkpoint:
    _atomic_write(os.path.join(model_dir, "operative_config.gin"),
                  experiment_lib.operative_config())
    train_utils.serialize_config(params, model_dir)
  runner = _Runner(distribution_strategy=strategy, task=task, mode=mode,
                   params=params, model_dir=model_dir,
                   run_post_eval=False,  # See _Runner.final_eval_logs.
                   after_actions=train_actions)
  return PreparedExperiment(params=params, strategy=strategy, task=task,
                            runner=runner, model_dir=model_dir, mode=mode,
                            resumed_from=resumed_from)


def execute(prepared: PreparedExperiment) -> Dict[str, float]:
  """Trains and/or evaluates a prepared experiment.

  Returns:
    The last evaluation metrics (empty for mode "train"); the chief also
    writes them to model_dir/eval_results.json.
  """
  prepared.runner.run()
  eval_logs = (prepared.runner.final_eval_logs() if prepared.mode != "train"
               else {})
  results = {k: float(v) for k, v in (eval_logs or {}).items()
             if tf.rank(v) == 0}
  if results and prepared.strategy.extended.should_checkpoint:
    _atomic_write(os.path.join(prepared.model_dir, "eval_results.json"),
                  json.dumps(results, indent=2, sort_keys=True))
  return results


def run(gin_files: Sequence[str], gin_params: Sequence[str], model_dir: str,
        mode: str = "train_and_eval",
        train_actions: Sequence[Callable] = ()) -> Dict[str, float]:
  """`prepare` then `execute`; see both."""
  return execute(prepare(gin_files, gin_params, model_dir, mode,
                         train_actions))
