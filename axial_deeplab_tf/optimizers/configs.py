"""Model Garden wiring: "radam" in the optimizer factory, configs, builder.

An experiment selects the optimizer with Model Garden's config classes:

  optimizer_config = OptimizationConfig({
      "optimizer": {"type": "radam", "radam": {"weight_decay": 0.0}},
      "learning_rate": {"type": "polynomial", "polynomial": {
          "initial_learning_rate": 1e-3, "decay_steps": 100000,
          "end_learning_rate": 0.0, "power": 0.9}},
      "warmup": {"type": "linear", "linear": {"warmup_steps": 1000}},
      "lookahead": {"sync_period": 6, "slow_step_size": 0.5},
  })
  optimizer = build_optimizer(optimizer_config, runtime_config)

`make_optimization_config` writes that config from a few keywords (the
papers' recipe is its default). Setting `lookahead` to None (the default of
the dataclass) trains with the inner optimizer alone.
"""

import dataclasses
import numbers
from typing import Callable, List, Optional

from official.core import config_definitions
from official.modeling import performance
from official.modeling.hyperparams import base_config
from official.modeling.optimization import ema_optimizer
from official.modeling.optimization import optimizer_factory
from official.modeling.optimization.configs import optimization_config
from official.modeling.optimization.configs import optimizer_config
import tf_keras

from axial_deeplab_tf.optimizers import lookahead as lookahead_lib
from axial_deeplab_tf.optimizers import radam as radam_lib

RADAM_KEY = "radam"


@dataclasses.dataclass
class RAdamConfig(optimizer_config.BaseOptimizerConfig):
  """Arguments of `RectifiedAdam` (besides the learning rate).

  Attributes:
    name: name prefix of the slot variables.
    beta_1: decay of the first moment, in [0, 1).
    beta_2: decay of the second moment, in [0, 1).
    epsilon: added to sqrt(v_t), as in torch.optim.RAdam.
    weight_decay: L2 coefficient, or decoupled if `decoupled_weight_decay`.
    decoupled_weight_decay: w <- w (1 - lr * weight_decay) before each step
      instead of adding weight_decay * w to the gradient.
    rectify_threshold: rectified steps are taken once rho_t exceeds it.
  """
  name: str = "RectifiedAdam"
  beta_1: float = 0.9
  beta_2: float = 0.999
  epsilon: float = 1e-7
  weight_decay: float = 0.0
  decoupled_weight_decay: bool = False
  rectify_threshold: float = 5.0


@dataclasses.dataclass
class LookaheadConfig(base_config.Config):
  """Arguments of `Lookahead`.

  Attributes:
    sync_period: inner steps between two syncs of the slow weights (k).
    slow_step_size: how far the slow weights move at a sync (alpha).
  """
  sync_period: int = 6
  slow_step_size: float = 0.5


@dataclasses.dataclass
class OptimizerConfig(optimization_config.OptimizerConfig):
  """Model Garden's optimizer oneof, plus `radam`."""
  radam: RAdamConfig = dataclasses.field(default_factory=RAdamConfig)


@dataclasses.dataclass
class OptimizationConfig(optimization_config.OptimizationConfig):
  """Model Garden's OptimizationConfig with RAdam and optional Lookahead.

  Attributes:
    optimizer: optimizer oneof config; `type: radam` selects RectifiedAdam.
    lookahead: if set, the optimizer is wrapped in Lookahead.
  """
  optimizer: OptimizerConfig = dataclasses.field(
      default_factory=OptimizerConfig)
  lookahead: Optional[LookaheadConfig] = None


def _register() -> None:
  """Registers RectifiedAdam under "radam"; safe to run again."""
  registry = optimizer_factory.LEGACY_OPTIMIZERS_CLS
  existing = registry.get(RADAM_KEY)
  if existing is None:
    optimizer_factory.register_optimizer_cls(
        RADAM_KEY, radam_lib.RectifiedAdam, use_legacy_optimizer=True)
  elif existing is not radam_lib.RectifiedAdam:
    same_class = (
        getattr(existing, "__module__", None)
        == radam_lib.RectifiedAdam.__module__ and
        getattr(existing, "__qualname__", None)
        == radam_lib.RectifiedAdam.__qualname__)
    if not same_class:
      raise ValueError(
          f"The optimizer key {RADAM_KEY!r} is already registered with "
          f"Model Garden for {existing!r}.")
    # The module was reloaded: point the key at the current class object.
    registry[RADAM_KEY] = radam_lib.RectifiedAdam


_register()


def build_optimizer(
    optimization: optimization_config.OptimizationConfig,
    runtime: Optional[config_definitions.RuntimeConfig] = None,
    *,
    gradient_transformers: Optional[List[Callable]] = None,
    postprocessor: Optional[Callable] = None,
) -> tf_keras.optimizers.legacy.Optimizer:
  """Builds the learning-rate schedule and optimizer an experiment asks for.

  The order of wrappers, inside out: the optimizer of `optimizer.type` with
  the schedule of `learning_rate` and `warmup` (Model Garden's factory), then
  Lookahead (if `lookahead` is set), then Model Garden's EMA (if `ema` is
  set; outside Lookahead so that it averages the synced weights), then
  `postprocessor`, then a LossScaleOptimizer if `runtime` asks for float16.
  This is `Task.create_optimizer` of Model Garden plus the Lookahead wrapper;
  tasks call it from their `create_optimizer`.

  Args:
    optimization: an `OptimizationConfig` (this module's, or Model Garden's
      when no Lookahead is wanted).
    runtime: optional Model Garden `RuntimeConfig`; `mixed_precision_dtype`
      "float16" and `loss_scale` select loss scaling.
    gradient_transformers: optional gradient transformers for the inner
      optimizer (Model Garden's differential-privacy hook).
    postprocessor: optional function optimizer -> optimizer applied last
      before loss scaling.

  Returns:
    A tf_keras legacy optimizer.

  Raises:
    TypeError: if `optimization` is not an OptimizationConfig.
    ValueError: for invalid optimizer or Lookahead arguments.
  """
  if not isinstance(optimization, optimization_config.OptimizationConfig):
    raise TypeError(
        "optimization must be an OptimizationConfig, got "
        f"{type(optimization).__name__}.")
  lookahead = getattr(optimization, "lookahead", None)
  ema = optimization.ema
  # The factory would put EMA directly around the inner optimizer; build
  # without it and add it outside Lookahead below.
  factory = optimizer_factory.OptimizerFactory(optimization.replace(ema=None))
  optimizer = factory.build_optimizer(
      factory.build_learning_rate(),
      gradient_transformers=gradient_transformers,
      use_legacy_optimizer=True)
  if lookahead is not None:
    optimizer = lookahead_lib.Lookahead(
        optimizer,
        sync_period=lookahead.sync_period,
        slow_step_size=lookahead.slow_step_size)
  if ema is not None:
    optimizer = ema_optimizer.ExponentialMovingAverage(
        optimizer, **ema.as_dict())
  if postprocessor is not None:
    optimizer = postprocessor(optimizer)
  if runtime is not None:
    optimizer = performance.configure_optimizer(
        optimizer,
        use_float16=runtime.mixed_precision_dtype == "float16",
        loss_scale=runtime.loss_scale)
  return optimizer


_SCHEDULES = ("poly", "cosine", "constant")
OPTIMIZERS = (RADAM_KEY, "sgd", "adamw")
# AdamW's decoupled weight decay skips normalisation, bias and layer-scale
# variables (matched by name).
ADAMW_EXCLUDE_FROM_WEIGHT_DECAY = ("gamma", "beta", "bias", "layer_scale")


def make_optimization_config(
    learning_rate: float = 1e-3,
    schedule: str = "poly",
    decay_steps: Optional[int] = None,
    warmup_steps: int = 0,
    warmup_learning_rate: float = 0.0,
    end_learning_rate: float = 0.0,
    power: float = 0.9,
    cosine_alpha: float = 0.0,
    beta_1: float = 0.9,
    beta_2: float = 0.999,
    epsilon: float = 1e-7,
    weight_decay: float = 0.0,
    decoupled_weight_decay: bool = False,
    lookahead: bool = True,
    sync_period: int = 6,
    slow_step_size: float = 0.5,
    global_clipnorm: Optional[float] = None,
    optimizer: str = RADAM_KEY,
    momentum: float = 0.9,
    nesterov: bool = False,
) -> OptimizationConfig:
  """Writes an OptimizationConfig: optimizer (+ Lookahead) and a schedule.

  The defaults are the papers' recipe: RAdam + Lookahead, learning rate 1e-3,
  "poly" decay lr * (1 - step / decay_steps)^0.9, linear warm-up when
  `warmup_steps` > 0 (from `warmup_learning_rate` to the schedule's value at
  `warmup_steps`). "sgd" (momentum, the ImageNet recipe) and "adamw" (the
  SegNeXt recipe) are Model Garden's optimizers.

  Args:
    learning_rate: peak learning rate, > 0.
    schedule: "poly", "cosine" or "constant".
    decay_steps: steps over which "poly"/"cosine" decay, > 0 (the number of
      training steps); ignored by "constant".
    warmup_steps: linear warm-up steps, >= 0 (0: no warm-up).
    warmup_learning_rate: learning rate at step 0 of the warm-up, >= 0.
    end_learning_rate: "poly" learning rate at and after `decay_steps`.
    power: "poly" exponent.
    cosine_alpha: "cosine" final learning rate as a fraction of the peak.
    beta_1: RAdam / AdamW first-moment decay.
    beta_2: RAdam / AdamW second-moment decay.
    epsilon: RAdam / AdamW epsilon.
    weight_decay: RAdam weight decay, or AdamW's decoupled weight decay
      rate (not applied to ADAMW_EXCLUDE_FROM_WEIGHT_DECAY variables). SGD
      takes none: give SGD's L2 to the model (a kernel regularizer).
    decoupled_weight_decay: RAdam: decoupled instead of L2 weight decay.
    lookahead: wrap the optimizer in Lookahead.
    sync_period: Lookahead k.
    slow_step_size: Lookahead alpha.
    global_clipnorm: optional clipping of the global gradient norm.
    optimizer: "radam", "sgd" or "adamw".
    momentum: SGD momentum.
    nesterov: SGD Nesterov momentum.

  Returns:
    An OptimizationConfig for `build_optimizer`.

  Raises:
    ValueError: for an unknown optimizer or schedule, out-of-range steps or
      rates, or a weight decay SGD cannot apply.
  """
  if optimizer not in OPTIMIZERS:
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got "
                     f"{optimizer!r}.")
  if optimizer == "sgd" and weight_decay:
    raise ValueError(
        f"optimizer 'sgd' applies no weight_decay, got {weight_decay}; give "
        f"the model an L2 kernel regularizer instead (in gin: "
        f"losses.l2_weight_decay).")
  if schedule not in _SCHEDULES:
    raise ValueError(f"schedule must be one of {_SCHEDULES}, got {schedule!r}.")
  if not learning_rate > 0.0:
    raise ValueError(f"learning_rate must be > 0, got {learning_rate}.")
  if (isinstance(warmup_steps, bool) or
      not isinstance(warmup_steps, numbers.Integral) or warmup_steps < 0):
    raise ValueError(
        f"warmup_steps must be an integer >= 0, got {warmup_steps!r}.")
  if not warmup_learning_rate >= 0.0:
    raise ValueError(
        f"warmup_learning_rate must be >= 0, got {warmup_learning_rate}.")
  if schedule != "constant" and (
      isinstance(decay_steps, bool) or
      not isinstance(decay_steps, numbers.Integral) or decay_steps < 1):
    raise ValueError(f"decay_steps must be an integer >= 1 for schedule "
                     f"{schedule!r}, got {decay_steps!r}.")

  if schedule == "poly":
    lr = {"type": "polynomial", "polynomial": dict(
        initial_learning_rate=learning_rate, decay_steps=int(decay_steps),
        end_learning_rate=end_learning_rate, power=power)}
  elif schedule == "cosine":
    lr = {"type": "cosine", "cosine": dict(
        initial_learning_rate=learning_rate, decay_steps=int(decay_steps),
        alpha=cosine_alpha)}
  else:
    lr = {"type": "constant", "constant": dict(learning_rate=learning_rate)}
  if optimizer == RADAM_KEY:
    inner = dict(beta_1=beta_1, beta_2=beta_2, epsilon=epsilon,
                 weight_decay=weight_decay,
                 decoupled_weight_decay=decoupled_weight_decay,
                 global_clipnorm=global_clipnorm)
  elif optimizer == "sgd":
    inner = dict(momentum=momentum, nesterov=nesterov,
                 global_clipnorm=global_clipnorm)
  else:
    inner = dict(beta_1=beta_1, beta_2=beta_2, epsilon=epsilon,
                 weight_decay_rate=weight_decay,
                 exclude_from_weight_decay=list(
                     ADAMW_EXCLUDE_FROM_WEIGHT_DECAY),
                 global_clipnorm=global_clipnorm)
  config = OptimizationConfig({
      "optimizer": {"type": optimizer, optimizer: inner},
      "learning_rate": lr,
  })
  if warmup_steps > 0:
    config.warmup = {"type": "linear", "linear": dict(
        warmup_steps=int(warmup_steps),
        warmup_learning_rate=warmup_learning_rate)}
  if lookahead:
    config.lookahead = {"sync_period": sync_period,
                        "slow_step_size": slow_step_size}
  return config

