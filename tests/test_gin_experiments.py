"""Every gin experiment parses, names a zoo model and builds it."""

import collections
import glob
import inspect
import os
import typing

import numpy as np
import pytest

from official.core import task_factory

from axial_deeplab_tf import models
from axial_deeplab_tf.data import context_synthetic
from axial_deeplab_tf.data import metadata
from axial_deeplab_tf.data import synthetic
from axial_deeplab_tf.modeling import registry
from axial_deeplab_tf.tasks import configs
from axial_deeplab_tf.tasks import experiment
from axial_deeplab_tf.tasks import segmentation

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIN_FILES = sorted(
    p for p in glob.glob(os.path.join(ROOT, "gin", "*", "*.gin"))
    if os.sep + "common" + os.sep not in p and not p.endswith(
        ("_base.gin", "common.gin")))


def test_there_is_an_experiment_per_paper_setting():
  names = {os.path.relpath(p, os.path.join(ROOT, "gin")) for p in GIN_FILES}
  for expected in ["coco/axial_deeplab_s.gin", "coco/axial_deeplab_m.gin",
                   "coco/axial_deeplab_l.gin", "coco/axial_deeplab_xl.gin",
                   "cityscapes/axial_deeplab_l.gin",
                   "mapillary/axial_deeplab_l.gin",
                   "imagenet/axial_resnet_50l.gin",
                   "imagenet/full_axial_resnet_50l.gin",
                   "ade20k/segnext_t.gin", "cityscapes/segnext_b.gin",
                   "cityscapes/isanet_r101.gin",
                   "quickstart/axial_deeplab.gin"]:
    assert expected in names


# Keyword arguments a tf_keras Model's own constructor takes.
KERAS_MODEL_KWARGS = {"name", "trainable", "dtype", "autocast", "dynamic"}


def _accepted_arguments(builder):
  """Argument names `builder` takes, or None when it takes any.

  A builder that passes **kwargs on to the model class of this package it
  returns (SegNeXt, ISANet) takes that class's arguments; the class's own
  **kwargs go to tf_keras.Model, which takes only KERAS_MODEL_KWARGS.
  """
  params = dict(inspect.signature(builder).parameters)
  if any(p.kind == p.VAR_KEYWORD for p in params.values()):
    model_class = typing.get_type_hints(builder).get("return")
    if not (inspect.isclass(model_class) and
            model_class.__module__.startswith("axial_deeplab_tf.")):
      return None  # Checked by building (the slow test below).
    params.update(inspect.signature(model_class.__init__).parameters)
    params.update({k: None for k in KERAS_MODEL_KWARGS})
  return {k for k, p in params.items()
          if p is None or p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
         } - {"self"}


def test_a_binding_the_model_class_does_not_take_is_found():
  # build_segnext takes **kwargs; the check reaches SegNeXt's arguments.
  accepted = _accepted_arguments(registry.get_entry("segnext_t").builder)
  assert {"embed_dims", "md_r", "num_classes", "input_size"} <= accepted
  assert "embed_dim" not in accepted and "kwargs" not in accepted
  accepted = _accepted_arguments(registry.get_entry("isanet_r50").builder)
  assert {"backbone_depth", "key_channels", "name"} <= accepted
  assert "key_channel" not in accepted


@pytest.mark.parametrize("path", GIN_FILES,
                         ids=lambda p: os.path.relpath(p, ROOT))
def test_experiment_parses_and_fits_the_model(path):
  config = experiment.parse_experiment([path])
  entry = registry.get_entry(config.task.model.name)
  assert config.task.model.name in models.list_models()
  task_kind = type(config.task).__name__.replace("TaskConfig", "").lower()
  assert entry.task == task_kind, (entry.task, task_kind)
  overrides = config.task.model.overrides.as_dict()
  params = _accepted_arguments(entry.builder)
  for key in overrides:
    assert params is None or key in params, (path, key, sorted(params))
  assert config.trainer.train_steps > 0
  assert config.task.train_data.input_path


def _dataset_metadata(path, kind):
  """The metadata of the dataset a gin experiment trains on.

  The converters write it beside the TFRecords; these are the same
  builders (the synthetic sets' converter takes label_divisor 256, as
  scripts/quickstart.sh passes it).
  """
  folder = os.path.basename(os.path.dirname(path))
  if folder == "coco" or (folder == "deeplab2" and "_coco_" in path):
    return metadata.coco_panoptic()
  if folder in ("cityscapes", "deeplab2"):
    return metadata.cityscapes(task=kind)
  if folder == "ade20k":
    return metadata.ade20k()
  if folder == "mapillary":
    return metadata.mapillary_vistas()
  if folder == "imagenet":
    return metadata.imagenet([f"n{i:08d}" for i in range(1000)])
  categories = {"quickstart": synthetic.CATEGORIES,
                "stress": context_synthetic.CATEGORIES}.get(folder)
  assert categories is not None, f"no dataset known for {path}"
  return metadata.from_categories(categories, name=folder, label_divisor=256,
                                  task=kind)


# The dataset task each experiment's task config reads.
TASK_KINDS = {cls: kind for kind, cls in configs.TASK_CONFIGS.items()}


def _task(path, monkeypatch):
  """The experiment's own task, given its dataset's metadata."""
  config = experiment.parse_experiment([path])
  meta = _dataset_metadata(path, TASK_KINDS[type(config.task)])
  monkeypatch.setattr(segmentation, "load_metadata", lambda params: meta)
  task = task_factory.get_task(config.task)
  assert isinstance(task, segmentation._BaseTask)  # pylint: disable=protected-access
  return config, task


def _builds():
  """(model name, overrides, weight decay on) -> the gin files.

  Experiments that differ only in the dataset (the class count of the
  classifier) or the schedule build the same model: it is built once, with
  the class count of the first of them.
  """
  groups = collections.OrderedDict()
  for path in GIN_FILES:
    config = experiment.parse_experiment([path])
    key = (config.task.model.name,
           repr(sorted(config.task.model.overrides.as_dict().items())),
           config.task.losses.l2_weight_decay > 0)
    groups.setdefault(key, []).append(os.path.relpath(path, ROOT))
  return groups


BUILDS = _builds()


@pytest.mark.parametrize("path", GIN_FILES,
                         ids=[os.path.relpath(p, ROOT) for p in GIN_FILES])
def test_experiment_task_accepts_its_dataset(path, monkeypatch):
  # The task's checks of its config against the dataset (post-processing
  # against the label divisor, ignore label, class names) pass for every
  # experiment with the metadata its dataset's converter writes.
  config, task = _task(path, monkeypatch)
  assert task.metadata.task == TASK_KINDS[type(config.task)]


@pytest.mark.slow
@pytest.mark.parametrize("key", list(BUILDS),
                         ids=[" + ".join(v) for v in BUILDS.values()])
def test_experiment_builds_its_model_with_its_overrides(key, monkeypatch):
  # The experiment's own task (its checks of the config, overrides,
  # num_classes, the weight-decay regularizer, the evaluation precision)
  # builds every variable; a binding the model's constructor does not take
  # fails here, also for builders that pass **kwargs on. Only the dataset
  # metadata, read from the TFRecords' folder, is given here.
  path = os.path.join(ROOT, BUILDS[key][0])
  config, task = _task(path, monkeypatch)
  classes = task.metadata.num_classes
  model = task.build_model()
  assert model.built
  count = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
  assert count > 0
  overrides = config.task.model.overrides.as_dict()
  config_of = getattr(model, "get_config", None)
  if "num_classes" not in overrides and config_of is not None:
    try:
      got = config_of().get("num_classes")
    except NotImplementedError:
      got = None
    assert got in (None, classes), (got, classes)
  # An experiment with weight decay gets its regularization losses.
  assert bool(model.losses) == key[2]


def test_unknown_binding_names_file_and_line(tmp_path):
  bad = tmp_path / "bad.gin"
  bad.write_text("include 'quickstart/axial_deeplab.gin'\n"
                 "trainer.train_stepz = 3\n")
  with pytest.raises(ValueError, match=r"train_stepz[\s\S]*bad\.gin.*line 2"):
    experiment.parse_experiment([str(bad)])


def test_gin_param_overrides_and_missing_file():
  config = experiment.parse_experiment(
      [os.path.join(ROOT, "gin", "quickstart", "axial_deeplab.gin")],
      ["trainer.train_steps = 70", "train/data.global_batch_size = 2"])
  assert config.trainer.train_steps == 70
  assert config.task.train_data.global_batch_size == 2
  with pytest.raises(FileNotFoundError, match="nope.gin"):
    experiment.parse_experiment(["nope.gin"])


@pytest.mark.parametrize("binding", [
    "losses.l2_weight_decai = 0.1",
    "optimization.lookahead_sync_periods = 2",
    "post_processing.nms = 3",
    "evaluation.compute_pq = True",
])
def test_unknown_parameter_of_any_configurable_names_file_and_line(
    tmp_path, binding):
  bad = tmp_path / "bad.gin"
  bad.write_text(f"include 'quickstart/axial_deeplab.gin'\n{binding}\n")
  name = binding.split(" ")[0].split(".")[1]
  with pytest.raises(ValueError, match=rf"{name}[\s\S]*bad\.gin.*line 2"):
    experiment.parse_experiment([str(bad)])


def test_imagenet_recipe_optimizer_and_weight_decay():
  config = experiment.parse_experiment(
      [os.path.join(ROOT, "gin", "imagenet", "axial_resnet_50l.gin")],
      ["optimization.lookahead_sync_period = 3"])
  assert config.task.losses.l2_weight_decay == 8e-5
  optimizer = config.trainer.optimizer_config.optimizer
  assert optimizer.type == "sgd"
  assert (optimizer.sgd.momentum, optimizer.sgd.nesterov) == (0.9, True)
  assert config.trainer.optimizer_config.lookahead is None
  config = experiment.parse_experiment(
      [os.path.join(ROOT, "gin", "imagenet", "axial_resnet_50l.gin")],
      ["optimization.lookahead = True",
       "optimization.lookahead_sync_period = 3"])
  assert config.trainer.optimizer_config.lookahead.sync_period == 3
  with pytest.raises(ValueError, match="weight_decay"):
    experiment.parse_experiment(
        [os.path.join(ROOT, "gin", "imagenet", "axial_resnet_50l.gin")],
        ["optimization.weight_decay = 0.0001"])
