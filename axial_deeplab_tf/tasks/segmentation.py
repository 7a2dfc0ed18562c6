"""Model Garden tasks: panoptic and semantic segmentation, classification.

Each is an `official.core.base_task.Task` registered with Model Garden's task
factory for its config class, so Model Garden's trainer and the Orbit
controller (see train_lib.py) drive it. Evaluation metrics that need whole
images (PQ, AP, mIoU) are aggregated on the host in `aggregate_logs`, as
Model Garden's panoptic task does.

XLA: with `jit_compile` on (trainer.jit_compile, on by default for the tpu
strategy; see `resolve_jit_compile`) the per-replica train step (forward,
losses, gradients and the optimizer update with its Lookahead, EMA and loss
scaling) and the per-replica eval step (forward, losses and the
Panoptic-DeepLab post-processing) each run as one `tf.function(
jit_compile=True)` inside the trainer's `strategy.run`, so every op on them
must compile with static shapes (the input pipeline yields fixed shapes).
Metric aggregation over whole images (PQ, AP, mIoU) stays on the host.

Reliability hooks: deterministic training input restarts at the data
position of the checkpoint a run resumes from (`resume_input_at_step`), and
`losses.inject_nan_at_step` poisons one step's loss to exercise Model
Garden's NaN recovery.
"""

import os
from typing import List, Optional

from absl import logging
import numpy as np
import tensorflow as tf
import tf_keras

from official.core import base_task
from official.core import config_definitions as mg_config
from official.core import input_reader
from official.core import task_factory

from axial_deeplab_tf import models
from axial_deeplab_tf.data import input_pipeline
from axial_deeplab_tf.data import shard_check
from axial_deeplab_tf.data import metadata as metadata_lib
from axial_deeplab_tf.evaluation import instance_ap
from axial_deeplab_tf.evaluation import panoptic_quality
from axial_deeplab_tf.evaluation import segmentation_metrics
from axial_deeplab_tf.losses import panoptic_losses
from axial_deeplab_tf.ops import post_processing
from axial_deeplab_tf.optimizers import configs as optimizer_configs
from axial_deeplab_tf.tasks import checkpoint_utils
from axial_deeplab_tf.tasks import configs

_LOSS_KEYS = ("semantic_loss", "center_loss", "offset_loss")
_RECORD_KEY = "serialized_record"


def _first_pattern(params: configs.SegmentationTaskConfig) -> str:
  for data in (params.train_data, params.validation_data):
    if data.input_path:
      return data.input_path
  raise ValueError("Neither train_data.input_path nor "
                   "validation_data.input_path is set.")


def load_metadata(params: configs.SegmentationTaskConfig
                 ) -> metadata_lib.DatasetMetadata:
  """Reads the dataset metadata written beside the TFRecord shards."""
  pattern = _first_pattern(params)
  try:
    return input_pipeline.dataset_metadata(pattern)
  except (ValueError, IndexError, tf.errors.NotFoundError) as e:
    raise FileNotFoundError(
        f"No TFRecord shards (or no metadata.json beside them) match "
        f"input_path {pattern!r}: {e}") from e


def _overlay(image, panoptic, meta, alpha=0.5):
  """Blends class colors (instances shaded apart) over the image."""
  divisor = max(meta.label_divisor, 1)
  semantic = panoptic // divisor
  instance = panoptic % divisor
  palette = np.array(list(meta.colors) + [(0, 0, 0)] * 1, np.float32)
  valid = semantic < meta.num_classes
  colors = palette[np.where(valid, semantic, len(palette) - 1)]
  shade = 1.0 - 0.5 * ((instance * 37) % 11) / 10.0
  colors = colors * np.where(instance > 0, shade, 1.0)[..., None]
  out = image.astype(np.float32) * (1 - alpha) + colors * alpha
  out = np.where(valid[..., None], out, image.astype(np.float32))
  return np.clip(out, 0, 255).astype(np.uint8)


def resolve_jit_compile(jit_compile: Optional[bool],
                        distribution_strategy: str) -> bool:
  """trainer.jit_compile: None means on for the tpu strategy, off otherwise."""
  if jit_compile is None:
    return distribution_strategy == "tpu"
  if not isinstance(jit_compile, bool):
    raise TypeError(f"trainer.jit_compile must be True, False or None (on "
                    f"for the tpu strategy), got {jit_compile!r}.")
  return jit_compile


def _needs_merge_call(strategy: tf.distribute.Strategy) -> bool:
  """Whether cross-replica sums of the strategy leave the replica's graph.

  MirroredStrategy aggregates by `merge_call` (the main thread gathers the
  replicas' tensors) unless every device is a GPU (Keras' and TF's rule):
  such a sum cannot sit inside a function compiled per replica, and XLA on
  CPU does not compile cross-device collectives (only NCCL ones).
  """
  if not isinstance(strategy, tf.distribute.MirroredStrategy):
    return False
  if strategy.num_replicas_in_sync == 1:
    return False
  return not all("GPU" in d.upper()
                 for d in strategy.extended.worker_devices)


def _examples_per_pipeline(global_batch_size: int, input_context) -> int:
  """Examples one input pipeline contributes to each global step."""
  if input_context is None:
    return global_batch_size
  per_replica = input_context.get_per_replica_batch_size(global_batch_size)
  return per_replica * (input_context.num_replicas_in_sync //
                        input_context.num_input_pipelines)


def _resumed_training_dataset(params: configs.DataConfig, parser_config,
                              input_context, skip: int) -> tf.data.Dataset:
  """input_pipeline.build_dataset's training stream, `skip` examples on.

  The same reader, shuffling, per-example seeds and parser as the normal
  path; the records are wrapped in dicts so the seeds are attached (and the
  skip applied) before decoding, which keeps the skipped examples cheap.
  """
  shard_check.check_shards(params.input_path,
                           input_pipeline.label_type_of(parser_config),
                           params.skip_corrupt_records)
  decoder = input_pipeline.build_decoder(parser_config)
  parser = input_pipeline.build_parser(parser_config)

  def decode(example):
    decoded = dict(decoder.decode(example[_RECORD_KEY]))
    decoded[input_pipeline.SEED_KEY] = example[input_pipeline.SEED_KEY]
    return decoded

  def position(records):
    records = records.map(lambda record: {_RECORD_KEY: record})
    records = input_pipeline.add_example_seeds(records, int(params.seed),
                                               input_context=input_context)
    return records.skip(skip).map(decode,
                                  num_parallel_calls=tf.data.AUTOTUNE)

  reader_params = mg_config.DataConfig(
      input_path=params.input_path,
      global_batch_size=params.global_batch_size, is_training=True,
      drop_remainder=True, shuffle_buffer_size=params.shuffle_buffer_size,
      deterministic=True, seed=params.seed)
  reader = input_reader.InputReader(
      reader_params,
      dataset_fn=shard_check.tfrecord_dataset_fn(params.skip_corrupt_records),
      decoder_fn=None,
      sample_fn=position, parser_fn=parser.parse_fn(True))
  return reader.read(input_context=input_context)


class _BaseTask(base_task.Task):
  """Shared model building, input, initialisation and optimizer creation."""

  def __init__(self, params, logging_dir: Optional[str] = None,
               name: Optional[str] = None):
    super().__init__(params, logging_dir=logging_dir, name=name)
    self.metadata = load_metadata(params)
    self._jit_compile = False
    self._compiled = {}
    precision = params.evaluation.precision
    if precision not in configs.EVALUATION_PRECISIONS:
      raise ValueError(f"evaluation.precision must be one of "
                       f"{configs.EVALUATION_PRECISIONS}, got {precision!r}.")
    self._float32_twins = []  # (model, its float32 twin) of build_model.
    self._train_start_step = 0
    self._steps_run = None
    if params.losses.inject_nan_at_step > 0:
      # Not part of the model or optimizer, so no checkpoint holds it: a
      # recovery rewinds the global step but not this count.
      self._steps_run = tf.Variable(
          0, dtype=tf.int64, trainable=False, name="steps_run",
          aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)

  @property
  def jit_compile(self) -> bool:
    """Whether train_step and validation_step compile with XLA."""
    return self._jit_compile

  def set_jit_compile(self, jit_compile: bool) -> None:
    """Compiles the per-replica train and eval steps with XLA (or not).

    Args:
      jit_compile: True: `train_step` and `validation_step` run their body
        as `tf.function(jit_compile=True)` (build_task sets it from
        trainer.jit_compile).

    Raises:
      TypeError: jit_compile is not a bool.
      ValueError: the current strategy is a MirroredStrategy over CPU
        devices (its cross-replica sums use merge_call, which cannot run
        inside a compiled replica function; on CPU, use XLA auto-clustering
        instead: TF_XLA_FLAGS="--tf_xla_auto_jit=2 --tf_xla_cpu_global_jit").
    """
    if not isinstance(jit_compile, bool):
      raise TypeError(f"jit_compile must be a bool, got {jit_compile!r}.")
    strategy = tf.distribute.get_strategy()
    if jit_compile and _needs_merge_call(strategy):
      raise ValueError(
          f"trainer.jit_compile=True does not work with a MirroredStrategy "
          f"over {strategy.extended.worker_devices}: its cross-replica sums "
          f"(gradients, sync batch norm) use merge_call, which cannot run "
          f"inside a replica function compiled by XLA. Use the tpu strategy, "
          f"GPUs, or XLA auto-clustering on CPU (TF_XLA_FLAGS="
          f"'--tf_xla_auto_jit=2 --tf_xla_cpu_global_jit') with "
          f"trainer.jit_compile=False.")
    self._jit_compile = jit_compile
    self._compiled = {}

  def _maybe_compiled(self, fn):
    """fn, or fn as a tf.function(jit_compile=True) if jit_compile is on.

    Inside a graph (the trainer's tf.function loop) a fresh function is
    made per trace: MirroredStrategy traces each replica in its own thread
    and device scope, and a function shared by the replicas would capture
    the first replica's variables. Eagerly, the compiled function is kept
    (one replica only) so that it is traced once.
    """
    if not self._jit_compile:
      return fn
    if (not tf.executing_eagerly() or
        tf.distribute.get_strategy().num_replicas_in_sync > 1):
      return tf.function(fn, jit_compile=True)
    if fn.__name__ not in self._compiled:
      self._compiled[fn.__name__] = tf.function(fn, jit_compile=True)
    return self._compiled[fn.__name__]

  def resume_input_at_step(self, step: int) -> None:
    """Makes the training input continue where global step `step` left off.

    Call before the trainer builds its datasets (train_lib does, with the
    step of the checkpoint it resumes from). Only deterministic training
    data (train_data.deterministic with a seed) has a defined position: its
    examples and their augmentation seeds are a function of the position in
    the stream, so the resumed run reads exactly the examples the
    uninterrupted run would have, at the cost of reading (not decoding) the
    skipped records once. Other training data starts a fresh random stream,
    as Model Garden does.

    Args:
      step: global step of the restored checkpoint, >= 0.
    """
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
      raise ValueError(f"step must be an integer >= 0, got {step!r}.")
    self._train_start_step = step

  def _build_dataset(self, params: configs.DataConfig, parser_config,
                     input_context=None) -> tf.data.Dataset:
    """The dataset of a split, positioned for a resumed run if needed."""
    skip = 0
    if params.is_training and self._train_start_step > 0:
      if not params.deterministic:
        logging.info("Training data is not deterministic: the resumed run "
                     "reads a fresh random stream.")
      elif params.cache:
        logging.warning(
            "train_data.cache=True: a cached stream has no position to "
            "resume from; the resumed run restarts the data stream.")
      else:
        skip = _examples_per_pipeline(params.global_batch_size,
                                      input_context) * self._train_start_step
    if skip == 0:
      return input_pipeline.build_dataset(
          params.input_path, parser_config, params.is_training,
          params.global_batch_size, input_context=input_context,
          shuffle_buffer_size=params.shuffle_buffer_size, seed=params.seed,
          deterministic=params.deterministic, cache=params.cache,
          skip_corrupt_records=params.skip_corrupt_records)
    logging.info("Resuming the training data after %d examples per input "
                 "pipeline (step %d).", skip, self._train_start_step)
    return _resumed_training_dataset(params, parser_config, input_context,
                                     skip)

  def _maybe_inject_nan(self, loss):
    """The injected fault of losses.inject_nan_at_step (see LossConfig)."""
    if self._steps_run is None:
      return loss
    count = self._steps_run.assign_add(1)
    hit = tf.equal(count, self.task_config.losses.inject_nan_at_step)
    return loss * tf.where(hit, tf.constant(float("nan"), loss.dtype),
                           tf.constant(1.0, loss.dtype))

  @classmethod
  def create_optimizer(cls, optimizer_config, runtime_config=None,
                       dp_config=None):
    del dp_config
    return optimizer_configs.build_optimizer(optimizer_config, runtime_config)

  def build_model(self) -> tf_keras.Model:
    """Builds the zoo model (`_build_zoo_model`) and, when the evaluation
    runs in float32 under a mixed-precision policy, its float32 twin.

    evaluation.precision="float32" with a mixed policy (bfloat16 or
    float16 compute): a second model is built under the float32 policy
    whose layers hold the very variables of the first (a variable creator
    hands back the first build's variables in creation order, checked by
    name and shape), so it always evaluates the current weights, EMA
    swaps included, and holds no state of its own. `validation_step` runs
    it whenever it is given the model built here.

    Raises:
      ValueError: as `_build_zoo_model`; the twin does not create the same
        variables as the model (a builder that creates variables on first
        call rather than when built).
    """
    if not self._evaluates_in_float32():
      return self._build_zoo_model()
    created = []

    def record(next_creator, **kwargs):
      created.append(next_creator(**kwargs))
      return created[-1]

    with tf.variable_creator_scope(record):
      model = self._build_zoo_model()
    self._float32_twins.append((model, self._float32_twin(model, created)))
    return model

  def _evaluates_in_float32(self) -> bool:
    return (self.task_config.evaluation.precision == "float32" and
            tf_keras.mixed_precision.global_policy().compute_dtype !=
            "float32")

  def _float32_twin(self, model, created) -> tf_keras.Model:
    """The model built again under the float32 policy on `created`."""
    remaining = list(created)

    def reuse(next_creator, **kwargs):
      del next_creator
      # Unnamed: tf.Variable's default (e.g. a Keras model's step counters).
      name = str(kwargs.get("name") or "Variable").split("/")[-1]
      shape = kwargs.get("shape")
      if not remaining:
        raise ValueError(
            f"evaluation.precision='float32': the float32 twin of "
            f"{model.name!r} creates more variables than the model "
            f"({len(created)}; the next is {name!r}).")
      variable = remaining.pop(0)
      own = variable.name.split("/")[-1].split(":")[0]
      if own != name or (shape is not None and
                         tf.TensorShape(shape) != variable.shape):
        raise ValueError(
            f"evaluation.precision='float32': the float32 twin of "
            f"{model.name!r} creates {name!r} {shape} where the model "
            f"created {variable.name!r} {variable.shape}.")
      return variable

    policy = tf_keras.mixed_precision.global_policy()
    tf_keras.mixed_precision.set_global_policy("float32")
    try:
      with tf.variable_creator_scope(reuse):
        twin = self._build_zoo_model()
    finally:
      tf_keras.mixed_precision.set_global_policy(policy)
    held = len(twin.weights) if twin.built else 0
    if remaining or held != len(model.weights):
      raise ValueError(
          f"evaluation.precision='float32': the float32 twin of "
          f"{model.name!r} holds {held} weights from "
          f"{len(created) - len(remaining)} of the model's {len(created)} "
          f"variables, the model {len(model.weights)} weights; its builder "
          f"must create every variable when it builds the model. Use "
          f"evaluation.precision='training'.")
    return twin

  def evaluation_model(self, model: tf_keras.Model) -> tf_keras.Model:
    """The model `validation_step` runs for `model`: its float32 twin if
    build_model made one for it, else `model` itself."""
    for built, twin in self._float32_twins:
      if built is model:
        return twin
    return model

  def _build_zoo_model(self) -> tf_keras.Model:
    """Builds the zoo model, with L2 kernel regularizers if configured.

    losses.l2_weight_decay = wd > 0 gives the builder
    kernel_regularizer=tf_keras.regularizers.l2(wd / 2), Model Garden's
    convention for its `l2_weight_decay` (official/vision/tasks): the
    regularization loss of a kernel w is wd * tf.nn.l2_loss(w) =
    wd / 2 * sum(w^2), whose gradient wd * w is the weight decay the
    papers' SGD recipes quote (here on the kernels the builder regularizes:
    convolutions and attention projections, not batch-norm parameters or
    biases). train_step adds the model's losses to the training loss.

    Returns:
      The model.

    Raises:
      ValueError: the overrides do not fit the builder; l2_weight_decay is
        negative, is combined with a kernel_regularizer override, or the
        model ignores the regularizer (it adds no regularization loss).
    """
    name = self.task_config.model.name
    overrides = self.task_config.model.overrides.as_dict() if hasattr(
        self.task_config.model.overrides, "as_dict") else dict(
            self.task_config.model.overrides)
    weight_decay = self.task_config.losses.l2_weight_decay
    if weight_decay < 0:
      raise ValueError(f"losses.l2_weight_decay must be >= 0, got "
                       f"{weight_decay}.")
    regularizer = {}
    if weight_decay > 0:
      if overrides.get("kernel_regularizer") is not None:
        raise ValueError(
            f"Set either losses.l2_weight_decay ({weight_decay}) or "
            f"model.overrides['kernel_regularizer'], not both.")
      regularizer["kernel_regularizer"] = tf_keras.regularizers.l2(
          weight_decay / 2.0)
    try:
      model = models.build(name, num_classes=self.metadata.num_classes,
                           **overrides, **regularizer)
    except TypeError as e:
      extra = (f" (with kernel_regularizer for losses.l2_weight_decay="
               f"{weight_decay})" if regularizer else "")
      raise ValueError(f"model.overrides {overrides}{extra} do not fit "
                       f"model {name!r}: {e}") from e
    if regularizer and not model.losses:
      raise ValueError(
          f"losses.l2_weight_decay={weight_decay}, but model {name!r} adds "
          f"no regularization loss: its builder ignores kernel_regularizer.")
    return model

  def initialize(self, model: tf_keras.Model):
    """Loads the backbone (or the whole model) from init_checkpoint.

    "all" restores a checkpoint of the same model (object-graph matching;
    every variable of the model must be found). "backbone" restores a
    backbone trained elsewhere, e.g. an Axial-ResNet classifier into
    Axial-DeepLab: variables are matched by name within the checkpoint's
    backbone, so architectural differences (another stem, extra layers) do
    not shift the matching; see `checkpoint_utils.restore_by_name`.
    """
    path = self.task_config.init_checkpoint
    if not path:
      return
    if tf.io.gfile.isdir(path):
      path = tf.train.latest_checkpoint(path)
    if not path:
      raise FileNotFoundError(
          f"init_checkpoint {self.task_config.init_checkpoint!r} holds no "
          f"checkpoint.")
    modules = self.task_config.init_checkpoint_modules
    if modules == "all":
      checkpoint_utils.restore_whole_model(model, path)
      logging.info("Initialised the whole model from %s.", path)
    elif modules == "backbone":
      if not isinstance(getattr(model, "backbone", None), tf_keras.Model):
        raise ValueError(f"init_checkpoint_modules='backbone' needs a model "
                         f"with a `backbone`; {model.name!r} has none.")
      report = checkpoint_utils.restore_by_name(model.backbone, path)
      logging.info("Initialised the backbone from %s: %s", path,
                   report.summary())
    else:
      raise ValueError(f"init_checkpoint_modules must be 'all' or "
                       f"'backbone', got {modules!r}.")

  def _regularization(self, model):
    """Sum of the model's losses (its kernel regularizers), float32."""
    if model.losses:
      return tf.add_n([tf.cast(l, tf.float32) for l in model.losses])
    return tf.constant(0.0)

  def _scale_loss(self, loss, optimizer):
    """Per-replica loss for summed gradients (call inside the tape)."""
    num_replicas = tf.distribute.get_strategy().num_replicas_in_sync
    scaled = loss / num_replicas
    if isinstance(optimizer, tf_keras.mixed_precision.LossScaleOptimizer):
      scaled = optimizer.get_scaled_loss(scaled)
    return scaled

  def _total_loss(self, losses):
    """The loss to minimise, from what build_losses returned."""
    return losses["total_loss"]

  def _update_metrics(self, metrics, labels, outputs, losses) -> None:
    """Updates the metrics of build_metrics after a step."""
    del labels, outputs  # The metrics are means of the named losses.
    for metric in metrics or []:
      metric.update_state(losses[metric.name])

  def train_step(self, inputs, model, optimizer, metrics=None):
    """Forward, losses plus the model's regularization losses, update.

    One XLA computation per replica when jit_compile is on.
    """
    return self._maybe_compiled(self._train_step)(inputs, model, optimizer,
                                                  metrics)

  def validation_step(self, inputs, model, metrics=None):
    """Forward, losses and in-graph post-processing of a batch.

    One XLA computation per replica when jit_compile is on; the host
    aggregates the returned maps (aggregate_logs). Runs
    `evaluation_model(model)` (a float32 twin under
    evaluation.precision="float32").
    """
    return self._maybe_compiled(self._validation_step)(
        inputs, self.evaluation_model(model), metrics)

  def _train_step(self, inputs, model, optimizer, metrics=None):
    features, labels = inputs
    with tf.GradientTape() as tape:
      outputs = model(features["image"], training=True)
      losses = self.build_losses(labels, outputs,
                                 self._regularization(model))
      loss = self._maybe_inject_nan(self._total_loss(losses))
      scaled_loss = self._scale_loss(loss, optimizer)
    self._apply_gradients(tape, scaled_loss, model, optimizer)
    self._update_metrics(metrics, labels, outputs, losses)
    return {self.loss: loss}

  def _validation_forward(self, inputs, model, metrics):
    """Inference outputs and losses of a batch; updates the metrics.

    Returns:
      (features, labels, outputs, losses).
    """
    features, labels = inputs
    outputs = model(features["image"], training=False)
    losses = self.build_losses(labels, outputs)
    self._update_metrics(metrics, labels, outputs, losses)
    return features, labels, outputs, losses

  def _apply_gradients(self, tape, scaled_loss, model, optimizer):
    tape_vars = model.trainable_variables
    grads = tape.gradient(scaled_loss, tape_vars)
    missing = [v.name for g, v in zip(grads, tape_vars) if g is None]
    if len(missing) == len(tape_vars):
      raise ValueError("The loss does not depend on any trainable variable.")
    if isinstance(optimizer, tf_keras.mixed_precision.LossScaleOptimizer):
      grads = optimizer.get_unscaled_gradients(grads)
    optimizer.apply_gradients(list(zip(grads, tape_vars)))


class PanopticSegmentationTask(_BaseTask):
  """Panoptic-DeepLab-style training and PQ / AP / mIoU evaluation."""

  def __init__(self, params, logging_dir=None, name=None):
    super().__init__(params, logging_dir, name)
    meta = self.metadata
    if meta.task != "panoptic":
      raise ValueError(f"The panoptic task needs panoptic data; "
                       f"{_first_pattern(params)!r} holds {meta.task!r}.")
    losses = params.losses
    self._loss_fn = panoptic_losses.PanopticDeepLabLoss(
        semantic_loss_weight=losses.semantic_loss_weight,
        center_loss_weight=losses.center_loss_weight,
        offset_loss_weight=losses.offset_loss_weight,
        top_k_percent=losses.top_k_percent, ignore_label=meta.ignore_label)
    self._post_processor = self.build_post_processor()

  def build_post_processor(self):
    p = self.task_config.post_processor
    meta = self.metadata
    return post_processing.PanopticDeepLabPostProcessor(
        thing_class_ids=meta.thing_class_ids, num_classes=meta.num_classes,
        label_divisor=meta.label_divisor, ignore_label=meta.ignore_label,
        center_threshold=p.center_threshold, nms_kernel=p.nms_kernel,
        keep_k_centers=p.keep_k_centers, stuff_area_limit=p.stuff_area_limit,
        deeplab2_rules=p.deeplab2_rules)

  def parser_config(self, params: configs.DataConfig):
    losses = self.task_config.losses
    return input_pipeline.PanopticParserConfig.from_metadata(
        self.metadata, crop_size=tuple(params.crop_size),
        min_scale=params.min_scale, max_scale=params.max_scale,
        scale_step=params.scale_step,
        flip_probability=params.flip_probability,
        eval_pad_to_crop=params.eval_pad_to_crop, sigma=losses.sigma,
        small_instance_area=losses.small_instance_area,
        small_instance_weight=losses.small_instance_weight)

  def build_inputs(self, params: configs.DataConfig, input_context=None):
    return self._build_dataset(params, self.parser_config(params),
                               input_context)

  def build_losses(self, labels, model_outputs, aux_losses=None):
    losses = dict(self._loss_fn(model_outputs, labels))
    total = losses["total_loss"]
    if aux_losses is not None:
      total = total + aux_losses
    losses["total_loss"] = total
    return losses

  def build_metrics(self, training: bool = True
                   ) -> List[tf_keras.metrics.Metric]:
    return [tf_keras.metrics.Mean(k, dtype=tf.float32) for k in _LOSS_KEYS]

  def _validation_step(self, inputs, model, metrics=None):
    features, labels, outputs, losses = self._validation_forward(
        inputs, model, metrics)
    post = self._post_processor(outputs)
    logs = {
        self.loss: losses["total_loss"],
        "panoptic_pred": post["panoptic_pred"],
        "instance_panoptic_ids": post["instance_panoptic_ids"],
        "instance_ap_scores": post["instance_scores"] *
                              post["instance_class_scores"],
        "panoptic_gt": labels["panoptic"],
        "original_size": labels["original_size"],
    }
    if self.task_config.evaluation.num_image_panels > 0:
      logs["image"] = tf.cast(features["image"], tf.uint8)
      logs["center_heatmap"] = outputs["center_heatmap"]
    return logs

  def _new_state(self):
    meta = self.metadata
    state = {
        "pq": panoptic_quality.PanopticQuality(
            num_classes=meta.num_classes,
            thing_classes=list(meta.thing_class_ids),
            ignored_label=meta.ignore_label,
            label_divisor=meta.label_divisor),
        "panels": [],
    }
    ev = self.task_config.evaluation
    if ev.compute_miou:
      state["miou"] = segmentation_metrics.MeanIoU(
          num_classes=meta.num_classes, ignored_label=meta.ignore_label,
          label_divisor=meta.label_divisor)
    if ev.compute_ap and meta.thing_class_ids:
      state["ap"] = instance_ap.InstanceAP(
          thing_classes=list(meta.thing_class_ids),
          num_classes=meta.num_classes, ignored_label=meta.ignore_label,
          label_divisor=meta.label_divisor)
    return state

  def aggregate_logs(self, state=None, step_outputs=None):
    if state is None:
      state = self._new_state()
    if step_outputs is None:
      return state

    def local(key):
      return [np.asarray(v) for v in step_outputs[key]]

    sizes = local("original_size")
    for r, (gts, preds) in enumerate(zip(local("panoptic_gt"),
                                         local("panoptic_pred"))):
      ids = local("instance_panoptic_ids")[r]
      scores = local("instance_ap_scores")[r]
      for i in range(gts.shape[0]):
        h, w = (int(v) for v in sizes[r][i])
        gt = gts[i, :h, :w]
        pred = preds[i, :h, :w]
        state["pq"].update(gt, pred)
        if "miou" in state:
          state["miou"].update(gt, pred)
        if "ap" in state:
          present = set(np.unique(pred).tolist())
          score_map = {int(k): float(s) for k, s in zip(ids[i], scores[i])
                       if k >= 0 and int(k) in present}
          state["ap"].update(gt, pred, score_map)
        if len(state["panels"]) < self.task_config.evaluation.num_image_panels:
          state["panels"].append(
              (local("image")[r][i, :h, :w], gt, pred,
               local("center_heatmap")[r][i, :h, :w, 0]))
    return state

  def reduce_aggregated_logs(self, aggregated_logs, global_step=None):
    state = aggregated_logs
    logs = {}
    pq = state["pq"].result()
    for key in ("pq", "sq", "rq", "pq_th", "sq_th", "rq_th", "pq_st", "sq_st",
                "rq_st"):
      logs[f"panoptic_quality/{key}" if key != "pq" else
           "panoptic_quality"] = float(pq[key])
    if self.task_config.evaluation.report_per_class:
      for c, value in enumerate(pq["pq_per_class"]):
        logs[f"panoptic_quality_per_class/{self.metadata.class_names[c]}"] = (
            float(value))
    if "miou" in state:
      logs["mean_iou"] = float(state["miou"].result()["miou"])
    if "ap" in state:
      ap = state["ap"].result()
      for key in ("ap", "ap50", "ap75"):
        logs[f"instance_{key}"] = float(ap[key])
    if state["panels"] and self.logging_dir:
      self._write_panels(state["panels"], global_step)
    return logs

  def _write_panels(self, panels, global_step):
    step = int(global_step.numpy()) if hasattr(global_step, "numpy") else (
        int(global_step or 0))
    writer = tf.summary.create_file_writer(
        os.path.join(self.logging_dir, "validation_images"))
    with writer.as_default():
      for i, (image, gt, pred, heatmap) in enumerate(panels):
        gt_overlay = _overlay(image, gt, self.metadata)
        pred_overlay = _overlay(image, pred, self.metadata)
        heat = np.clip(heatmap, 0.0, 1.0)
        heat = (np.stack([heat] * 3, axis=-1) * 255).astype(np.uint8)
        panel = np.concatenate([image, gt_overlay, pred_overlay, heat], axis=1)
        tf.summary.image(f"panel_{i}/input_gt_prediction_center",
                         panel[None], step=step)
    writer.flush()


class SemanticSegmentationTask(_BaseTask):
  """Semantic segmentation (SegNeXt, ISANet) with mIoU evaluation."""

  def __init__(self, params, logging_dir=None, name=None):
    super().__init__(params, logging_dir, name)
    losses = params.losses
    self._ce = panoptic_losses.WeightedBootstrappedCrossEntropy(
        top_k_percent=losses.top_k_percent,
        ignore_label=self.metadata.ignore_label)

  def build_inputs(self, params: configs.DataConfig, input_context=None):
    meta = self.metadata
    panoptic = meta.task == "panoptic"
    config = input_pipeline.SemanticParserConfig(
        crop_size=tuple(params.crop_size), min_scale=params.min_scale,
        max_scale=params.max_scale, scale_step=params.scale_step,
        flip_probability=params.flip_probability,
        ignore_label=meta.ignore_label, num_classes=meta.num_classes,
        label_source="panoptic" if panoptic else "semantic",
        label_divisor=meta.label_divisor if panoptic else 0,
        eval_pad_to_crop=params.eval_pad_to_crop)
    return self._build_dataset(params, config, input_context)

  def build_losses(self, labels, model_outputs, aux_losses=None):
    semantic = labels["semantic"]
    losses = {"semantic_loss": self._ce(semantic,
                                        model_outputs["semantic_logits"])}
    total = losses["semantic_loss"]
    if "aux_logits" in model_outputs:
      losses["aux_loss"] = self.task_config.losses.auxiliary_loss_weight * (
          self._ce(semantic, model_outputs["aux_logits"]))
      total = total + losses["aux_loss"]
    if aux_losses is not None:
      total = total + aux_losses
    losses["total_loss"] = total
    return losses

  def build_metrics(self, training=True):
    return [tf_keras.metrics.Mean("semantic_loss", dtype=tf.float32)]

  def _validation_step(self, inputs, model, metrics=None):
    _, labels, outputs, losses = self._validation_forward(inputs, model,
                                                          metrics)
    return {
        self.loss: losses["total_loss"],
        "semantic_pred": tf.argmax(outputs["semantic_logits"], axis=-1,
                                   output_type=tf.int32),
        "semantic_gt": labels["semantic"],
        "original_size": labels["original_size"],
    }

  def aggregate_logs(self, state=None, step_outputs=None):
    if state is None:
      state = segmentation_metrics.MeanIoU(
          num_classes=self.metadata.num_classes,
          ignored_label=self.metadata.ignore_label)
    if step_outputs is None:
      return state
    for gts, preds, sizes in zip(step_outputs["semantic_gt"],
                                 step_outputs["semantic_pred"],
                                 step_outputs["original_size"]):
      gts, preds, sizes = np.asarray(gts), np.asarray(preds), np.asarray(
          sizes)
      for i in range(gts.shape[0]):
        h, w = (int(v) for v in sizes[i])
        state.update(gts[i, :h, :w], preds[i, :h, :w])
    return state

  def reduce_aggregated_logs(self, aggregated_logs, global_step=None):
    result = aggregated_logs.result()
    return {"mean_iou": float(result["miou"]),
            "pixel_accuracy": float(result["pixel_accuracy"])}


class ImageClassificationTask(_BaseTask):
  """ImageNet-style classification (Axial-ResNet pretraining)."""

  def build_inputs(self, params: configs.DataConfig, input_context=None):
    config = input_pipeline.ClassificationParserConfig(
        image_size=tuple(params.crop_size),
        flip_probability=params.flip_probability,
        num_classes=self.metadata.num_classes)
    return self._build_dataset(params, config, input_context)

  def build_losses(self, labels, model_outputs, aux_losses=None):
    loss = tf_keras.losses.sparse_categorical_crossentropy(
        labels["label"], model_outputs["logits"], from_logits=True)
    loss = tf.reduce_mean(loss)
    if aux_losses is not None:
      loss = loss + aux_losses
    return loss

  def build_metrics(self, training=True):
    return [tf_keras.metrics.SparseCategoricalAccuracy("accuracy"),
            tf_keras.metrics.SparseTopKCategoricalAccuracy(5, "top_5_accuracy")]

  def _total_loss(self, losses):
    return losses  # build_losses returns the scalar loss itself.

  def _update_metrics(self, metrics, labels, outputs, losses) -> None:
    del losses  # Accuracy metrics compare labels and logits.
    for metric in metrics or []:
      metric.update_state(labels["label"], outputs["logits"])

  def _validation_step(self, inputs, model, metrics=None):
    loss = self._validation_forward(inputs, model, metrics)[3]
    return {self.loss: loss}


task_factory.register_task_cls(configs.PanopticTaskConfig)(
    PanopticSegmentationTask)
task_factory.register_task_cls(configs.SemanticTaskConfig)(
    SemanticSegmentationTask)
task_factory.register_task_cls(configs.ClassificationTaskConfig)(
    ImageClassificationTask)


def build_task(experiment_config, logging_dir: Optional[str] = None
              ) -> base_task.Task:
  """Builds the registered task of an ExperimentConfig.

  Call in the strategy's scope: trainer.jit_compile (resolved by
  `resolve_jit_compile`) is checked against the strategy.
  """
  task = task_factory.get_task(experiment_config.task,
                               logging_dir=logging_dir)
  task.set_jit_compile(resolve_jit_compile(
      getattr(experiment_config.trainer, "jit_compile", None),
      experiment_config.runtime.distribution_strategy))
  return task
