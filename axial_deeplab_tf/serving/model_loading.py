"""Loading a model to serve, evaluate or stress: build, restore, describe.

One route from a zoo name (with builder overrides and dataset metadata) or a
gin experiment (model, post-processor and metadata from its task) to a built
tf_keras model with its weights restored from a `model=` checkpoint (Model
Garden trainer layout). Export (`export_module`), the prediction and export
tools, the checkpoint importers and the scale-stress experiment all load
models here.
"""

import ast
import contextlib
import dataclasses
import os
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import tensorflow as tf
import tf_keras

from axial_deeplab_tf.data import metadata as metadata_lib
from axial_deeplab_tf.modeling import registry
from axial_deeplab_tf.ops import post_processing

DTYPES = ("float32", "bfloat16")


@contextlib.contextmanager
def compute_dtype_scope(dtype: str):
  """Builds models inside with compute dtype `dtype` (float32 variables).

  Args:
    dtype: "float32" or "bfloat16" (the "mixed_bfloat16" Keras policy).

  Yields:
    Nothing; the previous global Keras policy is restored on exit.
  """
  if dtype not in DTYPES:
    raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}.")
  previous = tf_keras.mixed_precision.global_policy()
  tf_keras.mixed_precision.set_global_policy(
      "float32" if dtype == "float32" else "mixed_bfloat16")
  try:
    yield
  finally:
    tf_keras.mixed_precision.set_global_policy(previous)


def resolve_checkpoint(checkpoint_path: str) -> str:
  """Checkpoint prefix of a prefix or folder (its latest checkpoint).

  Raises:
    FileNotFoundError: no checkpoint there.
  """
  path = checkpoint_path
  if tf.io.gfile.isdir(path):
    path = tf.train.latest_checkpoint(path)
    if not path:
      raise FileNotFoundError(f"checkpoint_path {checkpoint_path!r} is a "
                              f"folder without checkpoints.")
  elif not tf.io.gfile.exists(path + ".index"):
    raise FileNotFoundError(f"checkpoint_path {checkpoint_path!r}: no "
                            f"checkpoint ({path}.index not found).")
  return path


def parse_overrides(assignments: Sequence[str]) -> Dict[str, Any]:
  """Parses `key=value` builder overrides; values are Python literals.

  "width_multiplier=0.125" -> 0.125, "span=None" -> None,
  "input_size=(64, 64)" -> (64, 64); a value that is not a literal stays a
  string ("name=tiny" -> "tiny").

  Raises:
    ValueError: an item without "=" or with an empty or repeated key.
  """
  overrides = {}
  for item in assignments:
    if "=" not in item:
      raise ValueError(f"Override {item!r} must look like key=value.")
    key, value = item.split("=", 1)
    key = key.strip()
    if not key.isidentifier():
      raise ValueError(f"Override {item!r}: {key!r} is not a valid argument "
                       f"name.")
    if key in overrides:
      raise ValueError(f"Override key {key!r} is given twice.")
    try:
      overrides[key] = ast.literal_eval(value.strip())
    except (ValueError, SyntaxError):
      overrides[key] = value.strip()
  return overrides


@dataclasses.dataclass
class LoadedModel:
  """A model ready for export with what describes it.

  Attributes:
    model: the built tf_keras model (weights restored if a checkpoint was
      given).
    task: "panoptic", "semantic" or "classification".
    dtype: compute dtype, "float32" or "bfloat16".
    post_processor: the panoptic post-processor of an experiment, else None.
    dataset_metadata: the dataset's DatasetMetadata, if known.
    input_size: classification models: the (height, width) they were built
      for (images are resized to it when served), else None.
    description: JSON-ready facts (model name, overrides, gin files,
      checkpoint).
    experiment: the experiment config when built from gin files, else None.
    gin_files: the experiment's gin files as given (empty for zoo models).
    label: the model's name in reports; default its zoo name.
  """
  model: tf_keras.Model
  task: str
  dtype: str
  post_processor: Optional[post_processing.PanopticDeepLabPostProcessor]
  dataset_metadata: Optional[metadata_lib.DatasetMetadata]
  input_size: Optional[Tuple[int, int]]
  description: Dict[str, Any]
  experiment: Any = None
  gin_files: Sequence[str] = ()
  label: Optional[str] = None

  @property
  def name(self) -> str:
    return self.label or self.description.get("model_name")

  @property
  def checkpoint(self) -> Optional[str]:
    return self.description.get("checkpoint_path")

  @property
  def metadata(self) -> Optional[metadata_lib.DatasetMetadata]:
    return self.dataset_metadata

  @property
  def num_params(self) -> int:
    return int(self.model.count_params())

  @property
  def train_crop_size(self):
    """The experiment's training crop [height, width]."""
    if self.experiment is None:
      raise ValueError(f"{self.name!r} was not built from an experiment; "
                       f"it has no training crop size.")
    return list(self.experiment.task.train_data.crop_size)


def restore_checkpoint(model: tf_keras.Model, checkpoint_path: str) -> str:
  """Restores every variable of `model` from a `model=` checkpoint.

  Args:
    model: the built model.
    checkpoint_path: checkpoint prefix, or a folder (its latest checkpoint).

  Returns:
    The checkpoint prefix read.

  Raises:
    FileNotFoundError: no checkpoint there.
    AssertionError: the checkpoint does not cover every model variable.
  """
  from axial_deeplab_tf.tasks import checkpoint_utils  # pylint: disable=g-import-not-at-top
  path = resolve_checkpoint(checkpoint_path)
  checkpoint_utils.restore_whole_model(model, path)
  return path


def _as_metadata(dataset_metadata) -> Optional[metadata_lib.DatasetMetadata]:
  if dataset_metadata is None or isinstance(dataset_metadata,
                                            metadata_lib.DatasetMetadata):
    return dataset_metadata
  if isinstance(dataset_metadata, str):
    return metadata_lib.DatasetMetadata.load(dataset_metadata)
  if isinstance(dataset_metadata, Mapping):
    return metadata_lib.DatasetMetadata.from_dict(dataset_metadata)
  raise TypeError(f"dataset_metadata must be a DatasetMetadata, its dict or "
                  f"a metadata.json path, got "
                  f"{type(dataset_metadata).__name__}.")


def load_model(*,
               model_name: Optional[str] = None,
               overrides: Optional[Mapping[str, Any]] = None,
               dataset_metadata=None,
               gin_files: Sequence[str] = (),
               gin_params: Sequence[str] = (),
               checkpoint_path: Optional[str] = None,
               dtype: str = "float32",
               label: Optional[str] = None) -> LoadedModel:
  """Builds a zoo model or an experiment's model and restores its weights.

  Exactly one of `model_name` (a zoo model with builder `overrides`) and
  `gin_files` (an experiment: model, post-processor and dataset metadata
  come from its task) must be given.

  Args:
    model_name: zoo name, e.g. "axial_deeplab_s".
    overrides: builder arguments for model_name.
    dataset_metadata: for model_name: DatasetMetadata, its dict or a
      metadata.json path; num_classes defaults to its class count.
    gin_files: experiment gin files.
    gin_params: extra gin bindings.
    checkpoint_path: optional checkpoint (file prefix or folder).
    dtype: "float32" or "bfloat16" compute dtype.
    label: the model's name in reports (LoadedModel.name); default its zoo
      name.

  Returns:
    A LoadedModel.
  """
  if bool(model_name) == bool(gin_files):
    raise ValueError(f"Give exactly one of model_name and gin_files; got "
                     f"model_name={model_name!r}, gin_files="
                     f"{list(gin_files)}.")
  overrides = dict(overrides or {})
  post_processor = None
  experiment_config = None
  with compute_dtype_scope(dtype):
    if model_name:
      if gin_params:
        raise ValueError("gin_params need gin_files.")
      meta = _as_metadata(dataset_metadata)
      entry = registry.get_entry(model_name)
      if meta is not None:
        if meta.task != entry.task:
          raise ValueError(f"dataset_metadata describes a {meta.task} "
                           f"dataset but {model_name!r} is a {entry.task} "
                           f"model.")
        num_classes = overrides.setdefault("num_classes", meta.num_classes)
        if num_classes != meta.num_classes:
          raise ValueError(f"num_classes={num_classes} disagrees with the "
                           f"{meta.num_classes} classes of dataset "
                           f"{meta.name!r}.")
      try:
        model = registry.build(model_name, **overrides)
      except TypeError as e:
        raise ValueError(f"overrides {overrides} do not fit model "
                         f"{model_name!r}: {e}") from e
      task = entry.task
      input_size = overrides.get("input_size",
                                 entry.defaults.get("input_size"))
      description = {"model_name": model_name,
                     "model_overrides": {k: repr(v)
                                         for k, v in overrides.items()}}
    else:
      if overrides or dataset_metadata is not None:
        raise ValueError("overrides and dataset_metadata are for model_name; "
                         "an experiment takes them from its gin files.")
      from axial_deeplab_tf import tasks  # pylint: disable=g-import-not-at-top
      experiment_config = tasks.experiment.parse_experiment(
          list(gin_files), list(gin_params))
      model_config = experiment_config.task.model
      if model_config.name is None:
        raise ValueError(f"The experiment {list(gin_files)} names no model.")
      task_obj = tasks.build_task(experiment_config)
      model = task_obj.build_model()
      entry = registry.get_entry(model_config.name)
      task = entry.task
      if task == "panoptic":
        post_processor = task_obj.build_post_processor()
      meta = getattr(task_obj, "metadata", None)
      model_overrides = model_config.overrides
      if hasattr(model_overrides, "as_dict"):
        model_overrides = model_overrides.as_dict()
      input_size = dict(model_overrides).get(
          "input_size", entry.defaults.get("input_size"))
      description = {"model_name": model_config.name,
                     "gin_files": [os.path.abspath(p) for p in gin_files],
                     "gin_params": list(gin_params)}
  if task != "classification":
    input_size = None
  elif input_size is not None:
    input_size = tuple(int(v) for v in input_size)
  if checkpoint_path:
    description["checkpoint_path"] = restore_checkpoint(model,
                                                        checkpoint_path)
  return LoadedModel(model=model, task=task, dtype=dtype,
                     post_processor=post_processor, dataset_metadata=meta,
                     input_size=input_size, description=description,
                     experiment=experiment_config, gin_files=list(gin_files),
                     label=label)


def panoptic_post_processor(
    num_classes: int,
    dataset_metadata: Optional[metadata_lib.DatasetMetadata] = None,
    thing_class_ids: Optional[Sequence[int]] = None,
    label_divisor: Optional[int] = None,
    ignore_label: Optional[int] = None,
    **settings) -> post_processing.PanopticDeepLabPostProcessor:
  """The post-processor of a zoo model, from dataset metadata and/or values.

  Label facts (thing_class_ids, label_divisor, ignore_label) come from
  `dataset_metadata` unless given; given values must agree with it.
  thing_class_ids are required when there is no metadata; label_divisor
  defaults to 256 and ignore_label to 255 then.

  Args:
    num_classes: classes the model predicts.
    dataset_metadata: optional DatasetMetadata.
    thing_class_ids, label_divisor, ignore_label: label facts.
    **settings: center_threshold, nms_kernel, keep_k_centers,
      stuff_area_limit (None values are dropped: the defaults apply).

  Returns:
    A PanopticDeepLabPostProcessor.
  """
  facts = {"thing_class_ids": thing_class_ids, "label_divisor": label_divisor,
           "ignore_label": ignore_label}
  if dataset_metadata is not None:
    known = {"thing_class_ids": list(dataset_metadata.thing_class_ids),
             "label_divisor": dataset_metadata.label_divisor,
             "ignore_label": dataset_metadata.ignore_label}
    for key, value in facts.items():
      if value is None:
        facts[key] = known[key]
      elif (sorted(value) if key == "thing_class_ids" else value) != (
          known[key]):
        raise ValueError(f"{key}={value!r} disagrees with dataset "
                         f"{dataset_metadata.name!r}, which has "
                         f"{known[key]!r}.")
  if facts["thing_class_ids"] is None:
    raise ValueError("thing_class_ids are required without dataset "
                     "metadata.")
  if facts["label_divisor"] is None:
    facts["label_divisor"] = 256
  if facts["ignore_label"] is None:
    facts["ignore_label"] = 255
  settings = {k: v for k, v in settings.items() if v is not None}
  return post_processing.PanopticDeepLabPostProcessor(
      num_classes=num_classes, **facts, **settings)


def resolve_post_processor(
    loaded: LoadedModel,
    post_processor_args: Optional[Mapping[str, Any]] = None
) -> Optional[post_processing.PanopticDeepLabPostProcessor]:
  """The post-processor of a LoadedModel (None unless panoptic).

  Experiments bring theirs; panoptic zoo models get one from
  `panoptic_post_processor` with `post_processor_args` (None values are
  dropped).
  """
  args = {k: v for k, v in dict(post_processor_args or {}).items()
          if v is not None}
  if loaded.task == "panoptic":
    if loaded.post_processor is not None:
      if args:
        raise ValueError(f"The experiment defines the post-processor; set "
                         f"{sorted(args)} with gin bindings instead.")
      return loaded.post_processor
    num_classes = getattr(loaded.model, "num_classes", None)
    if num_classes is None:
      raise ValueError("The panoptic model does not report num_classes.")
    return panoptic_post_processor(num_classes, loaded.dataset_metadata,
                                   **args)
  if args:
    raise ValueError(f"Post-processing settings {sorted(args)} are for "
                     f"panoptic models, not {loaded.task}.")
  return None
