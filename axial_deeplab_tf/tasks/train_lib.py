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

import contextlib
import dataclasses
import json
import os
import tempfile
import time
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

from absl import logging
import orbit
from orbit import controller as orbit_controller
import tensorflow as tf
import tf_keras

from official.common import distribute_utils
from official.core import config_definitions as cfg
from official.core import train_lib as mg_train_lib
from official.core import train_utils
from official.modeling import performance

from axial_deeplab_tf.tasks import experiment as experiment_lib
from axial_deeplab_tf.tasks import segmentation
from axial_deeplab_tf.utils import io as io_lib

MODES = ("train", "eval", "train_and_eval", "continuous_eval")
_GLOBAL_STEP_KEY = "global_step/.ATTRIBUTES/VARIABLE_VALUE"


class ProgressLogger:
  """Orbit train action: one console line per loop with step, losses, rate.

  The first loop after the start includes tracing (and compiling) the
  training step: its line says how long it took, and no rate or ETA is
  shown until a loop without it has been measured. The rate and ETA use
  only the steps after the first loop.
  """

  def __init__(self, global_step: tf.Variable, total_steps: int,
               clock: Callable[[], float] = time.monotonic,
               write: Callable[[str], None] = None):
    self._step = global_step
    self._total = total_steps
    self._clock = clock
    self._write = write or _print
    self._start_time = clock()
    self._start_step = int(global_step.numpy())
    self._measured_from = None  # (time, step) at the end of the first loop.

  def start(self) -> None:
    """Says that the first loop traces the step; its time counts from here."""
    self._write(f"step {self._start_step}/{self._total} | tracing and "
                f"compiling the training step (the first loop includes it; "
                f"minutes for a large model on a CPU)")
    self._start_time = self._clock()
    self._start_step = int(self._step.numpy())

  def __call__(self, output: Optional[Mapping[str, Any]]):
    now = self._clock()
    step = int(self._step.numpy())
    values = {k: float(v) for k, v in (output or {}).items()
              if tf.rank(v) == 0}
    text = " ".join(f"{k}={v:.4g}" for k, v in sorted(values.items()))
    if self._measured_from is None:
      self._measured_from = (now, step)
      self._write(f"step {step}/{self._total} | {text} | first "
                  f"{step - self._start_step} step(s) incl. tracing and "
                  f"compiling took {now - self._start_time:.1f} s")
      return
    since, first_step = self._measured_from
    rate = (step - first_step) / max(now - since, 1e-9)
    eta = (self._total - step) / rate if rate > 0 else None
    self._write(f"step {step}/{self._total} | {text} | {rate:.2f} steps/s"
                + (f" | ETA {_duration(eta)}" if eta is not None else ""))


def _print(text: str) -> None:
  print(text, flush=True)


def _duration(seconds: float) -> str:
  """e.g. 75 -> '1m15s', 3725 -> '1h02m05s'."""
  seconds = int(round(seconds))
  hours, rest = divmod(seconds, 3600)
  minutes, secs = divmod(rest, 60)
  if hours:
    return f"{hours}h{minutes:02d}m{secs:02d}s"
  return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _orbit_message(message: str) -> None:
  """Orbit's console messages, each once (Orbit both logs and prints them).

  A training loop's metrics are already on the ProgressLogger line (with
  the rate and ETA); they go to the absl log only.
  """
  if message.lstrip().startswith("train | step:") and "output:" in message:
    logging.info(message)
  else:
    _print(message)


@contextlib.contextmanager
def _console_messages(flops_input_shape: Optional[Sequence[int]] = None):
  """Inside: Orbit messages once; Model Garden's FLOP count by our M-Adds.

  Model Garden's runner counts FLOPs with TF's profiler on `model.inputs`,
  which subclassed models do not have ("Failed to count model FLOPs"); our
  graph-walk M-Adds counter (utils/madds.py) answers instead, for one input
  of `flops_input_shape` (none given: no count).
  """

  def count_flops(model, *unused_args, **unused_kwargs) -> Optional[int]:
    # Model Garden logs FLOPs / 2 as "FLOPs (multi-adds)".
    from axial_deeplab_tf.utils import madds  # pylint: disable=g-import-not-at-top
    if flops_input_shape is None:
      return None
    try:
      return 2 * madds.count_madds(model, flops_input_shape).total
    except (ValueError, TypeError) as e:
      logging.info("M-Adds not counted: %s", e)
      return None

  saved = (orbit_controller._log, train_utils.try_count_flops)  # pylint: disable=protected-access
  orbit_controller._log = _orbit_message  # pylint: disable=protected-access
  train_utils.try_count_flops = count_flops
  try:
    yield
  finally:
    orbit_controller._log, train_utils.try_count_flops = saved  # pylint: disable=protected-access


class _Runner(mg_train_lib.OrbitExperimentRunner):
  """Model Garden's runner plus progress logging, extra actions and resume.

  `after_actions` run after Model Garden's own train actions (NaN recovery),
  so they see the state training continues from.
  """

  def __init__(self, *args, after_actions: Sequence[Callable] = (),
               **kwargs):
    self._after_actions = tuple(after_actions)
    self._last_eval = None  # (global step, logs) of the latest evaluation.
    self.progress = None  # The ProgressLogger of training.
    with _console_messages():
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
      self.progress = ProgressLogger(trainer.global_step,
                                     self.params.trainer.train_steps)
      actions.append(self.progress)
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
    _print(f"Resuming from checkpoint {resumed_from} (step {start_step}).")
    task.resume_input_at_step(start_step)
  if strategy.extended.should_checkpoint:
    io_lib.write_text_atomically(
        os.path.join(model_dir, "operative_config.gin"),
        experiment_lib.operative_config())
    train_utils.serialize_config(params, model_dir)
  _print(f"building the model{', optimizer' if 'train' in mode else ''} "
         f"and input pipelines ({params.task.model.name})")
  started = time.monotonic()
  runner = _Runner(distribution_strategy=strategy, task=task, mode=mode,
                   params=params, model_dir=model_dir,
                   run_post_eval=False,  # See _Runner.final_eval_logs.
                   after_actions=train_actions)
  _print(f"built in {time.monotonic() - started:.1f} s")
  return PreparedExperiment(params=params, strategy=strategy, task=task,
                            runner=runner, model_dir=model_dir, mode=mode,
                            resumed_from=resumed_from)


def execute(prepared: PreparedExperiment) -> Dict[str, float]:
  """Trains and/or evaluates a prepared experiment.

  Returns:
    The last evaluation metrics (empty for mode "train"); the chief also
    writes them to model_dir/eval_results.json.
  """
  runner = prepared.runner
  crop = list(prepared.params.task.validation_data.crop_size or [])
  with _console_messages([1] + crop + [3] if len(crop) == 2 else None):
    if (runner.progress is not None and
        int(runner.trainer.global_step.numpy()) <
        prepared.params.trainer.train_steps):
      runner.progress.start()
    runner.run()
    eval_logs = (runner.final_eval_logs() if prepared.mode != "train"
                 else {})
  results = {k: float(v) for k, v in (eval_logs or {}).items()
             if tf.rank(v) == 0}
  if results and prepared.strategy.extended.should_checkpoint:
    io_lib.write_text_atomically(
        os.path.join(prepared.model_dir, "eval_results.json"),
        json.dumps(results, indent=2, sort_keys=True))
  return results


def run(gin_files: Sequence[str], gin_params: Sequence[str], model_dir: str,
        mode: str = "train_and_eval",
        train_actions: Sequence[Callable] = ()) -> Dict[str, float]:
  """`prepare` then `execute`; see both."""
  return execute(prepare(gin_files, gin_params, model_dir, mode,
                         train_actions))
