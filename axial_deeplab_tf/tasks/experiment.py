"""gin experiments: one gin file (with includes) defines a whole experiment.

The configurables below are the gin vocabulary of the files in gin/:

  model.name / model.overrides            -> the zoo model
  train/data.*, eval/data.*               -> input pipelines (scoped)
  losses.*, post_processing.*, evaluation.*
  optimization.*                          -> optimizer, schedule, Lookahead
  trainer.*                               -> steps, intervals, NaN recovery,
                                             XLA (trainer.jit_compile)
  runtime.*                               -> strategy, mixed precision
  experiment.task / init_checkpoint / ... -> ties them together

`parse_experiment(gin_files, gin_params)` parses (an unknown configurable or
parameter fails here, naming the file and line), then calls `experiment()`
and returns Model Garden's `ExperimentConfig`.
"""

import dataclasses
import importlib.resources
import inspect
import logging
import os
import re
from typing import Any, Dict, List, Optional, Sequence

import gin
from official.core import config_definitions as cfg

from axial_deeplab_tf.optimizers import configs as optimizer_configs
from axial_deeplab_tf.tasks import configs



def experiments_root() -> str:
  """The folder of the experiment gin files (`coco/axial_deeplab_l.gin`, ...).

  Installed, they are package data of `axial_deeplab_tf.experiments`; in a
  source checkout used without installing (PYTHONPATH), the top-level gin/
  folder beside the package.
  """
  try:
    # A folder without __init__.py: files() gives a MultiplexedPath, whose
    # children are real paths.
    common = importlib.resources.files(
        "axial_deeplab_tf.experiments").joinpath("common")
    if common.is_dir():
      return os.path.dirname(str(common))
  except (ModuleNotFoundError, TypeError, ValueError):
    pass
  return os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
      os.path.abspath(__file__)))), "gin")


GIN_ROOT = experiments_root()


def list_experiments() -> List[str]:
  """Short names of the shipped experiments, e.g. 'coco/axial_deeplab_l'."""
  names = []
  for folder, _, files in os.walk(GIN_ROOT):
    for name in files:
      if name.endswith(".gin"):
        path = os.path.relpath(os.path.join(folder, name), GIN_ROOT)
        names.append(path[:-len(".gin")].replace(os.sep, "/"))
  return sorted(names)


def resolve_experiment(name: str) -> str:
  """A gin file path from an experiment's short name or a path.

  An existing file is taken as is (your own gin file, or `gin/...` in a
  checkout); otherwise a short name such as 'coco/axial_deeplab_l' (with or
  without '.gin', or with a leading 'gin/') names a shipped experiment.

  Raises:
    FileNotFoundError: neither a file nor a shipped experiment.
  """
  if os.path.isfile(name):
    return name
  short = name[len("gin/"):] if name.startswith("gin/") else name
  short = short if short.endswith(".gin") else short + ".gin"
  path = os.path.join(GIN_ROOT, *short.split("/"))
  if os.path.isfile(path):
    return path
  raise FileNotFoundError(
      f"gin file not found: {name!r} is neither a file nor a shipped "
      f"experiment (e.g. 'quickstart/axial_deeplab'; all: "
      f"axial-deeplab experiments).")

_SEARCH_PATHS = set()
_STRATEGIES = ("one_device", "mirrored", "multi_worker_mirrored", "tpu")
_PRECISIONS = ("float32", "bfloat16", "float16")


@gin.configurable("model")
def model_config(name: str = gin.REQUIRED,
                 overrides: Optional[Dict[str, Any]] = None
                ) -> configs.ModelConfig:
  """The zoo model and builder overrides (num_classes comes from the data)."""
  return configs.ModelConfig(name=name, overrides=dict(overrides or {}))


@gin.configurable("data")
def data_config(input_path: str = gin.REQUIRED,
                global_batch_size: int = 8,
                crop_size: Sequence[int] = (513, 513),
                min_scale: float = 0.5,
                max_scale: float = 1.5,
                scale_step: float = 0.0,
                flip_probability: float = 0.5,
                eval_pad_to_crop: bool = True,
                shuffle_buffer_size: int = 256,
                deterministic: bool = False,
                seed: Optional[int] = None,
                cache: bool = False,
                skip_corrupt_records: bool = False,
                is_training: bool = True) -> configs.DataConfig:
  """One split's input pipeline; bind it as train/data.* and eval/data.*."""
  return configs.DataConfig(
      input_path=input_path, global_batch_size=global_batch_size,
      is_training=is_training, crop_size=list(crop_size),
      min_scale=min_scale, max_scale=max_scale, scale_step=scale_step,
      flip_probability=flip_probability, eval_pad_to_crop=eval_pad_to_crop,
      shuffle_buffer_size=shuffle_buffer_size, deterministic=deterministic,
      seed=seed, cache=cache, skip_corrupt_records=skip_corrupt_records,
      drop_remainder=is_training)


def _configurable(name: str, parameters: Sequence[inspect.Parameter]):
  """Registers a **kwargs function with gin, accepting only `parameters`.

  gin checks binding names against the signature of the undecorated
  function, so it is set there: an unknown binding then fails while parsing,
  with its file and line.

  Args:
    name: gin name of the configurable.
    parameters: the keyword-only parameters (with defaults) it accepts.

  Returns:
    A decorator.
  """
  def register(fn):
    fn.__signature__ = inspect.Signature(parameters)
    return gin.configurable(name)(fn)
  return register


def _fields(cls) -> List[inspect.Parameter]:
  """The dataclass fields of a config class as keyword-only parameters."""
  return [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY,
                            default=f.default)
          for f in dataclasses.fields(cls)
          if f.name not in ("default_params", "restrictions")]


@_configurable("losses", _fields(configs.LossConfig))
def loss_config(**kwargs) -> configs.LossConfig:
  """Loss weights and target settings (the LossConfig fields)."""
  step = kwargs.get("inject_nan_at_step", 0)
  if isinstance(step, bool) or not isinstance(step, int) or step < 0:
    raise ValueError(f"losses.inject_nan_at_step must be an integer >= 0 "
                     f"(0: off), got {step!r}.")
  return configs.LossConfig(**kwargs)


@_configurable("post_processing", _fields(configs.PostProcessorConfig))
def post_processor_config(**kwargs) -> configs.PostProcessorConfig:
  return configs.PostProcessorConfig(**kwargs)


@_configurable("evaluation", _fields(configs.EvaluationConfig))
def evaluation_config(**kwargs) -> configs.EvaluationConfig:
  return configs.EvaluationConfig(**kwargs)


# The gin names of make_optimization_config's Lookahead arguments.
_LOOKAHEAD_GIN_NAMES = {"sync_period": "lookahead_sync_period",
                        "slow_step_size": "lookahead_slow_step_size"}
_MAKE_OPTIMIZATION = inspect.signature(
    optimizer_configs.make_optimization_config)


@_configurable("optimization", [
    p.replace(name=_LOOKAHEAD_GIN_NAMES.get(p.name, p.name),
              kind=inspect.Parameter.KEYWORD_ONLY)
    for p in _MAKE_OPTIMIZATION.parameters.values()
] + [inspect.Parameter("train_steps", inspect.Parameter.KEYWORD_ONLY,
                       default=None)])
def optimization_config(**kwargs) -> optimizer_configs.OptimizationConfig:
  """Optimizer and learning-rate schedule: make_optimization_config's args.

  optimizer "radam" (with optional Lookahead: the papers' recipe), "sgd"
  (ImageNet recipe) or "adamw" (SegNeXt recipe); Lookahead's sync_period
  and slow_step_size are bound as lookahead_sync_period and
  lookahead_slow_step_size. decay_steps defaults to trainer.train_steps.
  """
  train_steps = kwargs.pop("train_steps", None)
  gin_names = {v: k for k, v in _LOOKAHEAD_GIN_NAMES.items()}
  args = _MAKE_OPTIMIZATION.bind(
      **{gin_names.get(k, k): v for k, v in kwargs.items()})
  args.apply_defaults()
  args = args.arguments
  args["decay_steps"] = decay_steps = args["decay_steps"] or train_steps
  warmup_steps = args["warmup_steps"]
  if (args["schedule"] != "constant" and decay_steps and
      warmup_steps >= decay_steps):
    # Model Garden's warm-up ramps to the decayed schedule's value at
    # warmup_steps, which is end_learning_rate here: the run would not learn.
    raise ValueError(
        f"optimization.warmup_steps ({warmup_steps}) must be smaller than "
        f"the decay steps ({decay_steps}, default trainer.train_steps) of "
        f"schedule {args['schedule']!r}; lower optimization.warmup_steps.")
  if args["optimizer"] not in optimizer_configs.OPTIMIZERS:
    raise ValueError(f"optimization.optimizer must be one of "
                     f"{optimizer_configs.OPTIMIZERS}, got "
                     f"{args['optimizer']!r}.")
  return optimizer_configs.make_optimization_config(**args)


@gin.configurable("trainer")
def trainer_config(train_steps: int = gin.REQUIRED,
                   steps_per_loop: int = 100,
                   summary_interval: Optional[int] = None,
                   checkpoint_interval: Optional[int] = None,
                   validation_interval: Optional[int] = None,
                   validation_steps: int = -1,
                   max_to_keep: int = 5,
                   recovery_max_trials: int = 3,
                   loss_upper_bound: float = 1e6,
                   best_checkpoint_metric: str = "",
                   best_checkpoint_metric_comp: str = "higher",
                   use_tf_function: bool = True,
                   jit_compile: Optional[bool] = None
                  ) -> configs.TrainerConfig:
  """Steps, loop sizes, checkpoint/summary/validation intervals, recovery.

  NaN or losses above loss_upper_bound restore the last checkpoint (Model
  Garden's recovery action), up to recovery_max_trials times.
  use_tf_function=False runs every train and eval step eagerly: for
  debugging, and for runs of a handful of steps, where tracing the step
  graph costs more than the steps themselves. jit_compile: compile the
  per-replica train and eval steps with XLA (None: on for the tpu strategy
  only; refused on a MirroredStrategy over CPU devices, see
  segmentation._BaseTask.set_jit_compile).
  """
  if jit_compile is not None and not isinstance(jit_compile, bool):
    raise ValueError(f"trainer.jit_compile must be True, False or None (on "
                     f"for the tpu strategy), got {jit_compile!r}.")
  return configs.TrainerConfig(
      jit_compile=jit_compile,
      train_tf_function=use_tf_function,
      train_tf_while_loop=use_tf_function,
      eval_tf_function=use_tf_function,
      eval_tf_while_loop=False,
      train_steps=train_steps, steps_per_loop=steps_per_loop,
      summary_interval=summary_interval or steps_per_loop,
      checkpoint_interval=checkpoint_interval or steps_per_loop,
      validation_interval=validation_interval or train_steps,
      validation_steps=validation_steps, max_to_keep=max_to_keep,
      recovery_max_trials=recovery_max_trials,
      loss_upper_bound=loss_upper_bound,
      best_checkpoint_export_subdir="best_ckpt" if best_checkpoint_metric
      else "",
      best_checkpoint_eval_metric=best_checkpoint_metric,
      best_checkpoint_metric_comp=best_checkpoint_metric_comp)


@gin.configurable("runtime")
def runtime_config(distribution_strategy: str = "one_device",
                   mixed_precision_dtype: str = "float32",
                   num_gpus: int = 0,
                   tpu: Optional[str] = None,
                   all_reduce_alg: Optional[str] = None,
                   enable_op_determinism: bool = False,
                   seed: Optional[int] = None,
                   num_cpu_devices: int = 1) -> configs.RuntimeConfig:
  """Distribution strategy, numeric policy and reproducibility.

  distribution_strategy: one_device, mirrored, multi_worker_mirrored (reads
  TF_CONFIG) or tpu. mixed_precision_dtype: float32, bfloat16, float16.
  enable_op_determinism + seed (+ deterministic train data with a seed):
  bitwise reproducible runs on CPU. num_cpu_devices > 1: "mirrored" over
  that many logical CPU devices (see configs.RuntimeConfig).
  """
  if distribution_strategy not in _STRATEGIES:
    raise ValueError(f"runtime.distribution_strategy must be one of "
                     f"{_STRATEGIES}, got {distribution_strategy!r}.")
  if mixed_precision_dtype not in _PRECISIONS:
    raise ValueError(f"runtime.mixed_precision_dtype must be one of "
                     f"{_PRECISIONS}, got {mixed_precision_dtype!r}.")
  if (isinstance(num_cpu_devices, bool) or
      not isinstance(num_cpu_devices, int) or num_cpu_devices < 1):
    raise ValueError(f"runtime.num_cpu_devices must be an integer >= 1, got "
                     f"{num_cpu_devices!r}.")
  if seed is not None and (isinstance(seed, bool) or
                           not isinstance(seed, int) or seed < 0):
    raise ValueError(f"runtime.seed must be None or an integer >= 0, got "
                     f"{seed!r}.")
  return configs.RuntimeConfig(
      distribution_strategy=distribution_strategy,
      mixed_precision_dtype=mixed_precision_dtype, num_gpus=num_gpus,
      tpu=tpu, all_reduce_alg=all_reduce_alg,
      enable_op_determinism=enable_op_determinism, seed=seed,
      num_cpu_devices=num_cpu_devices)


@gin.configurable("experiment")
def experiment(task: str = "panoptic",
               init_checkpoint: Optional[str] = None,
               init_checkpoint_modules: str = "backbone"
              ) -> cfg.ExperimentConfig:
  """Assembles the ExperimentConfig from the bound parts."""
  if task not in configs.TASK_CONFIGS:
    raise ValueError(f"experiment.task must be one of "
                     f"{sorted(configs.TASK_CONFIGS)}, got {task!r}.")
  with gin.config_scope("train"):
    train_data = data_config(is_training=True)
  with gin.config_scope("eval"):
    eval_data = data_config(is_training=False)
  trainer = trainer_config()
  task_config = configs.TASK_CONFIGS[task](
      model=model_config(), train_data=train_data, validation_data=eval_data,
      losses=loss_config(), post_processor=post_processor_config(),
      evaluation=evaluation_config(), init_checkpoint=init_checkpoint,
      init_checkpoint_modules=init_checkpoint_modules)
  optimization = optimization_config(train_steps=trainer.train_steps)
  trainer.optimizer_config = optimization
  return cfg.ExperimentConfig(task=task_config, trainer=trainer,
                              runtime=runtime_config())


def parse_experiment(gin_files: Sequence[str],
                     gin_params: Sequence[str] = ()) -> cfg.ExperimentConfig:
  """Parses gin files and bindings and returns the ExperimentConfig.

  Args:
    gin_files: gin files or shipped experiments' short names (see
      `resolve_experiment`); `include` paths resolve against each file's
      folder, the current folder and the shipped experiments' folder.
    gin_params: extra bindings ("trainer.train_steps = 10"), applied last.

  Returns:
    The ExperimentConfig.

  Raises:
    FileNotFoundError: a gin file does not exist (nor names an experiment).
    ValueError: unknown configurable or parameter (with file and line), or a
      bad value.
  """
  gin_files = [resolve_experiment(path) for path in gin_files]
  gin.clear_config()
  for path in [GIN_ROOT] + list(gin_files):
    folder = path if os.path.isdir(path) else os.path.dirname(
        os.path.abspath(path))
    # gin keeps search paths for the whole process: add each folder once.
    if folder not in _SEARCH_PATHS:
      gin.add_config_file_search_path(folder)
      _SEARCH_PATHS.add(folder)
  quiet = _DropGinPathProbes()
  logging.getLogger().addFilter(quiet)
  try:
    gin.parse_config_files_and_bindings(list(gin_files), list(gin_params))
  except ValueError as e:
    raise ValueError(_name_binding(str(e), gin_params)) from e
  finally:
    logging.getLogger().removeFilter(quiet)
  try:
    return experiment()
  except (ValueError, TypeError) as e:
    # gin re-raises through a proxy subclass; raise the plain type.
    kind = ValueError if isinstance(e, ValueError) else TypeError
    raise kind(_strip_call_context(str(e))) from e


class _DropGinPathProbes(logging.Filter):
  """Drops gin's log records of include-path probing.

  gin tries each search path in turn and logs every probe, with an error for
  every miss even when a later path finds the file; a real miss still
  raises an IOError.
  """

  def filter(self, record):
    message = str(record.msg)
    return not ((record.levelno == logging.ERROR and
                 message.startswith("Path not found")) or
                message.startswith("system_path_file_exists"))


def _name_binding(message: str, gin_params: Sequence[str]) -> str:
  """Replaces gin's "bindings string line N" by the --gin_param it means."""
  match = re.search(r"In bindings string line (\d+)", message)
  if not match:
    return message
  bindings = "\n".join(gin_params).split("\n")
  line = int(match.group(1))
  if not 1 <= line <= len(bindings):
    return message
  return message.replace(match.group(0),
                         f"In --gin_param {bindings[line - 1].strip()!r}")


def _strip_call_context(message: str) -> str:
  """Replaces gin's "In call to configurable 'x' (<function ...>)" lines.

  gin appends one per enclosing configurable call, with the function's
  address; the innermost configurable is what the reader needs.
  """
  pattern = r"\s*In call to configurable '([^']+)' \(<[^>]*>\)"
  names = re.findall(pattern, message)
  if not names:
    return message
  return f"{re.sub(pattern, '', message)} (gin configurable '{names[0]}')"


def operative_config() -> str:
  """The gin bindings used so far (write after building the experiment)."""
  return gin.operative_config_str()
