"""Model Garden tasks: panoptic segmentation, semantic segmentation, classification.

Each is an `official.core.base_task.Task` registered with Model Garden's task
factory for its config class, so `train_lib.run_experiment` and the Orbit
controller drive it. Evaluation metrics that need whole images (PQ, AP,
mIoU) are aggregated on the host in `aggregate_logs`, as Model Garden's
panoptic task does.
"""

import os
from typing import Any, Dict, List, Optional

from absl import logging
import numpy as np
import tensorflow as tf
import tf_keras

from official.core import base_task
from official.core import task_factory

from axial_deeplab_tf import models
from axial_deeplab_tf.data import input_pipeline
from axial_deeplab_tf.data import metadata as metadata_lib
from axial_deeplab_tf.evaluation import instance_ap
from axial_deeplab_tf.evaluation import panoptic_quality
from axial_deeplab_tf.evaluation import segmentation_metrics
from axial_deeplab_tf.losses import panoptic_losses
from axial_deeplab_tf.ops import post_processing
from axial_deeplab_tf.optimizers import configs as optimizer_configs
from axial_deeplab_tf.tasks import configs

_LOSS_KEYS = ("semantic_loss", "center_loss", "offset_loss")


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


class _BaseTask(base_task.Task):
  """Shared model building, initialisation and optimizer creation."""

  def __init__(self, params, logging_dir: Optional[str] = None,
               name: Optional[str] = None):
    super().__init__(params, logging_dir=logging_dir, name=name)
    self.metadata = load_metadata(params)

  @classmethod
  def create_optimizer(cls, optimizer_config, runtime_config=None,
                       dp_config=None):
    del dp_config
    return optimizer_configs.build_optimizer(optimizer_config, runtime_config)

  def build_model(self) -> tf_keras.Model:
    overrides = self.task_config.model.overrides.as_dict() if hasattr(
        self.task_config.model.overrides, "as_dict") else dict(
            self.task_config.model.overrides)
    try:
      model = models.build(self.task_config.model.name,
                           num_classes=self.metadata.num_classes, **overrides)
    except TypeError as e:
      raise ValueError(f"model.overrides {overrides} do not fit model "
                       f"{self.task_config.model.name!r}: {e}") from e
    return model

  def initialize(self, model: tf_keras.Model):
    """Loads the backbone (or whole model) from init_checkpoint."""
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
      ckpt = tf.train.Checkpoint(model=model)
    elif modules == "backbone":
      # Classifier and segmentation checkpoints both save the model with a
      # `backbone` attribute: restore just that sub-model.
      ckpt = tf.train.Checkpoint(
          model=tf.train.Checkpoint(backbone=model.backbone))
    else:
      raise ValueError(f"init_checkpoint_modules must be 'all' or "
                       f"'backbone', got {modules!r}.")
    status = ckpt.read(path)
    status.expect_partial().assert_existing_objects_matched()
    logging.info("Initialised %s of the model from %s.", modules, path)

  def _regularization(self, model):
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
        keep_k_centers=p.keep_k_centers, stuff_area_limit=p.stuff_area_limit)

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
    return input_pipeline.build_dataset(
        params.input_path, self.parser_config(params), params.is_training,
        params.global_batch_size, input_context=input_context,
        shuffle_buffer_size=params.shuffle_buffer_size, seed=params.seed,
        deterministic=params.deterministic, cache=params.cache)

  def build_losses(self, labels, model_outputs, aux_losses=None):
    losses = dict(self._loss_fn(model_outputs, labels))
    total = losses["total_loss"]
    if aux_losses is not None:
      total = total + aux_losses
    losses["total_loss"] = total
    return losses

  def build_metrics(self, training: bool = True) -> List[tf_keras.metrics.Metric]:
    return [tf_keras.metrics.Mean(k, dtype=tf.float32) for k in _LOSS_KEYS]

  def train_step(self, inputs, model, optimizer, metrics=None):
    features, labels = inputs
    with tf.GradientTape() as tape:
      outputs = model(features["image"], training=True)
      losses = self.build_losses(labels, outputs,
                                 self._regularization(model))
      loss = losses["total_loss"]
      scaled_loss = self._scale_loss(loss, optimizer)
    self._apply_gradients(tape, scaled_loss, model, optimizer)
    logs = {self.loss: loss}
    for metric in metrics or []:
      metric.update_state(losses[metric.name])
    return logs

  def validation_step(self, inputs, model, metrics=None):
    features, labels = inputs
    outputs = model(features["image"], training=False)
    losses = self.build_losses(labels, outputs)
    for metric in metrics or []:
      metric.update_state(losses[metric.name])
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
    return input_pipeline.build_dataset(
        params.input_path, config, params.is_training,
        params.global_batch_size, input_context=input_context,
        shuffle_buffer_size=params.shuffle_buffer_size, seed=params.seed,
        deterministic=params.deterministic, cache=params.cache)

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

  def train_step(self, inputs, model, optimizer, metrics=None):
    features, labels = inputs
    with tf.GradientTape() as tape:
      outputs = model(features["image"], training=True)
      losses = self.build_losses(labels, outputs,
                                 self._regularization(model))
      loss = losses["total_loss"]
      scaled_loss = self._scale_loss(loss, optimizer)
    self._apply_gradients(tape, scaled_loss, model, optimizer)
    for metric in metrics or []:
      metric.update_state(losses[metric.name])
    return {self.loss: loss}

  def validation_step(self, inputs, model, metrics=None):
    features, labels = inputs
    outputs = model(features["image"], training=False)
    losses = self.build_losses(labels, outputs)
    for metric in metrics or []:
      metric.update_state(losses[metric.name])
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
    return input_pipeline.build_dataset(
        params.input_path, config, params.is_training,
        params.global_batch_size, input_context=input_context,
        shuffle_buffer_size=params.shuffle_buffer_size, seed=params.seed,
        deterministic=params.deterministic, cache=params.cache)

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

  def train_step(self, inputs, model, optimizer, metrics=None):
    features, labels = inputs
    with tf.GradientTape() as tape:
      outputs = model(features["image"], training=True)
      loss = self.build_losses(labels, outputs, self._regularization(model))
      scaled_loss = self._scale_loss(loss, optimizer)
    self._apply_gradients(tape, scaled_loss, model, optimizer)
    for metric in metrics or []:
      metric.update_state(labels["label"], outputs["logits"])
    return {self.loss: loss}

  def validation_step(self, inputs, model, metrics=None):
    features, labels = inputs
    outputs = model(features["image"], training=False)
    loss = self.build_losses(labels, outputs)
    for metric in metrics or []:
      metric.update_state(labels["label"], outputs["logits"])
    return {self.loss: loss}


task_factory.register_task_cls(configs.PanopticTaskConfig)(
    PanopticSegmentationTask)
task_factory.register_task_cls(configs.SemanticTaskConfig)(
    SemanticSegmentationTask)
task_factory.register_task_cls(configs.ClassificationTaskConfig)(
    ImageClassificationTask)


def build_task(experiment_config, logging_dir: Optional[str] = None
              ) -> base_task.Task:
  """Builds the registered task of an ExperimentConfig."""
  return task_factory.get_task(experiment_config.task,
                               logging_dir=logging_dir)
