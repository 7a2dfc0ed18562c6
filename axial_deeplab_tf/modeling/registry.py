"""The model zoo: maps a model name to a builder and its default arguments.

Family modules register their models here when they are imported; this
module imports none of them (`modeling/zoo.py` lists and imports the
families, and the `modeling` package imports the zoo).
"""

import dataclasses
from typing import Any, Callable, Dict, List

import tf_keras


@dataclasses.dataclass(frozen=True)
class ModelEntry:
  """One zoo entry: how to build the model and with which defaults."""
  name: str
  builder: Callable[..., tf_keras.Model]
  defaults: Dict[str, Any]
  task: str  # "classification", "panoptic" or "semantic".
  description: str


_REGISTRY: Dict[str, ModelEntry] = {}


def register_model(model_name: str,
                   builder: Callable[..., tf_keras.Model], *, task: str,
                   description: str = "", **defaults) -> None:
  """Registers `builder(**defaults)` under `name`.

  Args:
    model_name: zoo name, e.g. "axial_resnet_50l".
    builder: a callable returning a tf_keras.Model given keyword arguments.
    task: what the model predicts: "classification", "panoptic", "semantic".
    description: one line shown by `list_models(verbose=True)`.
    **defaults: keyword arguments passed to `builder` unless overridden.
  """
  if model_name in _REGISTRY:
    raise ValueError(f"Model name {model_name!r} is already registered.")
  if task not in ("classification", "panoptic", "semantic"):
    raise ValueError(f"task must be classification, panoptic or semantic, "
                     f"got {task!r} for model {model_name!r}.")
  _REGISTRY[model_name] = ModelEntry(model_name, builder, dict(defaults),
                                     task, description)


def list_models(task: str = None) -> List[str]:
  """Returns the sorted zoo names, optionally only those of one task."""
  return sorted(n for n, e in _REGISTRY.items() if task in (None, e.task))


def get_entry(name: str) -> ModelEntry:
  """Returns the zoo entry of `name`; ValueError naming the choices if unknown."""
  if name not in _REGISTRY:
    raise ValueError(f"Unknown model name {name!r}; expected one of "
                     f"{sorted(_REGISTRY)}.")
  return _REGISTRY[name]


def build(name: str, **overrides) -> tf_keras.Model:
  """Builds zoo model `name` with its defaults updated by `overrides`.

  Args:
    name: a name from `list_models()`.
    **overrides: builder arguments, e.g. num_classes=133,
      input_size=(224, 224).

  Returns:
    A tf_keras.Model.
  """
  entry = get_entry(name)
  kwargs = dict(entry.defaults)
  kwargs.update(overrides)
  model = entry.builder(**kwargs)
  for step in _AFTER_BUILD:
    step(model)
  return model


# Run on every model `build` returns (`after_build`).
_AFTER_BUILD: List[Callable[[tf_keras.Model], Any]] = []


def after_build(step: Callable[[tf_keras.Model], Any]) -> None:
  """Adds `step(model)` to what `build` does to every model it built (zoo.py
  adds the two-pass synchronized batch-norm statistics)."""
  if step not in _AFTER_BUILD:
    _AFTER_BUILD.append(step)
