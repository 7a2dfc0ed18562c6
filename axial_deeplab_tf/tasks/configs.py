"""Model Garden experiment configs of the segmentation and classification tasks.

The gin files in gin/ fill these (see `experiment.py`); the resulting
`ExperimentConfig` is what Model Garden's trainer, controller and actions
read, and what is written to `model_dir/params.yaml`.
"""

import dataclasses
from typing import Any, Dict, List, Optional

from official.core import config_definitions as cfg
from official.modeling import hyperparams

from axial_deeplab_tf.optimizers import configs as optimizer_configs


@dataclasses.dataclass
class ModelConfig(hyperparams.Config):
  """A zoo model: `models.build(name, num_classes=<from data>, **overrides)`."""
  name: str = "axial_deeplab_s"
  overrides: Dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class DataConfig(cfg.DataConfig):
  """Input pipeline of one split (TFRecords written by tools/build_*)."""
  input_path: str = ""
  global_batch_size: int = 8
  is_training: bool = True
  crop_size: List[int] = dataclasses.field(default_factory=lambda: [513, 513])
  min_scale: float = 0.5
  max_scale: float = 1.5
  scale_step: float = 0.0
  flip_probability: float = 0.5
  eval_pad_to_crop: bool = True
  shuffle_buffer_size: int = 256
  deterministic: bool = False
  seed: Optional[int] = None
  cache: bool = False
  skip_corrupt_records: bool = False


@dataclasses.dataclass
class LossConfig(hyperparams.Config):
  """Panoptic-DeepLab losses and target settings."""
  semantic_loss_weight: float = 1.0
  center_loss_weight: float = 200.0
  offset_loss_weight: float = 0.01
  top_k_percent: float = 0.2
  sigma: float = 8.0
  small_instance_area: int = 4096
  small_instance_weight: float = 3.0
  auxiliary_loss_weight: float = 0.4
  l2_weight_decay: float = 0.0
  label_smoothing: float = 0.0
  # Fault injection for testing NaN recovery: the N-th training step this
  # process runs (1-based; counted per process, not by the global step, so
  # the steps redone after a recovery do not meet it again) gets a NaN total
  # loss, which poisons its gradients like a real blow-up. 0 disables.
  inject_nan_at_step: int = 0


@dataclasses.dataclass
class PostProcessorConfig(hyperparams.Config):
  """Panoptic-DeepLab post-processing settings."""
  center_threshold: float = 0.1
  nms_kernel: int = 7
  keep_k_centers: int = 200
  stuff_area_limit: int = 4096
  deeplab2_rules: bool = False


@dataclasses.dataclass
class RuntimeConfig(cfg.RuntimeConfig):
  """Model Garden's runtime settings plus reproducibility and CPU devices.

  Attributes:
    enable_op_determinism: deterministic kernels (tf.config.experimental.
      enable_op_determinism); with a `seed` and deterministic input data a
      run (and a resumed run) is bitwise reproducible on CPU.
    seed: Python, NumPy and TF seed (tf_keras.utils.set_random_seed).
    num_cpu_devices: > 1 splits the host CPU into that many logical devices
      and the "mirrored" strategy (without GPUs) replicates over them, to
      run data-parallel code (sync batch norm, gradient all-reduce) on a
      CPU-only machine.
  """
  enable_op_determinism: bool = False
  seed: Optional[int] = None
  num_cpu_devices: int = 1


@dataclasses.dataclass
class TrainerConfig(cfg.TrainerConfig):
  """Model Garden's trainer settings plus XLA compilation of the steps.

  Attributes:
    jit_compile: compile the per-replica train and eval steps with XLA
      (`tf.function(jit_compile=True)`); None: on for the tpu strategy, off
      otherwise (see segmentation.resolve_jit_compile).
  """
  jit_compile: Optional[bool] = None


EVALUATION_PRECISIONS = ("training", "float32")


@dataclasses.dataclass
class EvaluationConfig(hyperparams.Config):
  """What validation computes and writes.

  precision: "training" evaluates the model in the training precision
  (runtime.mixed_precision_dtype, as Model Garden does); "float32"
  evaluates a mixed-precision job in float32: the eval step runs a float32
  twin of the model that shares its variables (see
  segmentation._BaseTask.build_model), so the metrics do not depend on a
  device's bfloat16 kernels.
  """
  compute_ap: bool = True
  compute_miou: bool = True
  report_per_class: bool = False
  num_image_panels: int = 2
  precision: str = "training"


@dataclasses.dataclass
class SegmentationTaskConfig(cfg.TaskConfig):
  """One task config for panoptic, semantic and classification tasks."""
  model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
  train_data: DataConfig = dataclasses.field(default_factory=DataConfig)
  validation_data: DataConfig = dataclasses.field(
      default_factory=lambda: DataConfig(is_training=False))
  losses: LossConfig = dataclasses.field(default_factory=LossConfig)
  post_processor: PostProcessorConfig = dataclasses.field(
      default_factory=PostProcessorConfig)
  evaluation: EvaluationConfig = dataclasses.field(
      default_factory=EvaluationConfig)
  init_checkpoint: Optional[str] = None
  init_checkpoint_modules: str = "backbone"


@dataclasses.dataclass
class PanopticTaskConfig(SegmentationTaskConfig):
  pass


@dataclasses.dataclass
class SemanticTaskConfig(SegmentationTaskConfig):
  pass


@dataclasses.dataclass
class ClassificationTaskConfig(SegmentationTaskConfig):
  pass


TASK_CONFIGS = {
    "panoptic": PanopticTaskConfig,
    "semantic": SemanticTaskConfig,
    "classification": ClassificationTaskConfig,
}


def optimization_config_cls():
  """The OptimizationConfig class that knows the project's optimizers."""
  return optimizer_configs.OptimizationConfig
