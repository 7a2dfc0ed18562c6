"""Every gin experiment parses, names a zoo model and builds it."""

import collections
import glob
import inspect
import os
import types
import typing

import numpy as np
import pytest

from axial_deeplab_tf import models
from axial_deeplab_tf.modeling import registry
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


# Classes of the dataset each experiment folder trains on (the task reads
# them from metadata.json beside the shards, which the test does not have).
DATASET_CLASSES = {"coco": 133, "deeplab2": 133, "cityscapes": 19,
                   "ade20k": 150, "mapillary": 65, "imagenet": 1000,
                   "quickstart": 7, "stress": 4}


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


def test_every_experiment_folder_has_a_class_count():
  folders = {os.path.basename(os.path.dirname(p)) for p in GIN_FILES}
  assert folders <= set(DATASET_CLASSES), folders - set(DATASET_CLASSES)


@pytest.mark.slow
@pytest.mark.parametrize("key", list(BUILDS),
                         ids=[" + ".join(v) for v in BUILDS.values()])
def test_experiment_builds_its_model_with_its_overrides(key):
  # The task's own build_model (overrides, num_classes, the weight-decay
  # regularizer) builds every variable; a binding the model's constructor
  # does not take fails here, also for builders that pass **kwargs on.
  path = os.path.join(ROOT, BUILDS[key][0])
  config = experiment.parse_experiment([path])
  classes = DATASET_CLASSES[os.path.basename(os.path.dirname(path))]
  task = types.SimpleNamespace(
      task_config=config.task,
      metadata=types.SimpleNamespace(num_classes=classes))
  model = segmentation._BaseTask.build_model(task)  # pylint: disable=protected-access
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
