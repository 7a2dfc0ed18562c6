"""Restoring a (sub-)model from a checkpoint of a different model by name.

Object-based checkpoints key variables by their path in the saved object
graph (`model/backbone/layer_with_weights-3/kernel`), and Keras functional
models name those paths by layer position. A classifier with a "conv" stem
and a segmentation model with an "inception" stem therefore disagree on every
position after the stem even where the layers are the same. The object graph
also records each variable's name when it was saved (`res3_block2/attention/
qkv/kernel`); those names come from the layer names, which the backbone
builder fixes, so matching by name finds the shared layers whatever precedes
them.

`restore_by_name` restores every variable whose name and shape match,
converts relative positional tables between spans (see below), and reports
what it restored, converted and left alone.
"""

import dataclasses
import re
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
import tf_keras

from tensorflow.core.protobuf import trackable_object_graph_pb2

_OBJECT_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"
_VALUE_ATTRIBUTE = "VARIABLE_VALUE"
# AxialAttention's relative tables: row r holds distance r - radius, so two
# tables of radii R >= r agree on distances -r..r (the centre rows).
_POSITIONAL = re.compile(r"(query|key|value)_positional$")
# Where a model's backbone sits in the object graphs this project writes:
# Trainer checkpoints (root.model.backbone), plain tf.train.Checkpoint(
# model=...) saves (the same), and `checkpoint_items` exports
# (root.backbone).
_BACKBONE_PATHS = (("model", "backbone"), ("backbone",), ("model",))


@dataclasses.dataclass
class RestoreReport:
  """What `restore_by_name` did, by variable name.

  Attributes:
    restored: restored unchanged.
    cropped: relative positional tables restored from the centre rows of a
      larger-span table: (name, checkpoint shape, model shape).
    shape_mismatch: same name, incompatible shape; left as initialised:
      (name, checkpoint shape, model shape).
    missing: model variables with no variable of that name in the checkpoint
      (left as initialised).
    unused: checkpoint variables (of the searched subtree) no model variable
      is named after.
    checkpoint_scope: the object-graph path that was searched.
  """
  restored: List[str] = dataclasses.field(default_factory=list)
  cropped: List[Tuple[str, Tuple[int, ...], Tuple[int, ...]]] = (
      dataclasses.field(default_factory=list))
  shape_mismatch: List[Tuple[str, Tuple[int, ...], Tuple[int, ...]]] = (
      dataclasses.field(default_factory=list))
  missing: List[str] = dataclasses.field(default_factory=list)
  unused: List[str] = dataclasses.field(default_factory=list)
  checkpoint_scope: str = ""

  def summary(self, max_names: int = 8) -> str:
    """One paragraph: counts, then the first names of each problem list."""

    def names(items):
      items = [i if isinstance(i, str) else
               f"{i[0]} {list(i[1])}->{list(i[2])}" for i in items]
      more = len(items) - max_names
      text = ", ".join(items[:max_names])
      return text + (f", ... ({more} more)" if more > 0 else "")

    parts = [f"restored {len(self.restored)} variables from "
             f"'{self.checkpoint_scope}'"]
    if self.cropped:
      parts.append(f"cropped {len(self.cropped)} positional tables to the "
                   f"model's span ({names(self.cropped)})")
    if self.shape_mismatch:
      parts.append(f"kept {len(self.shape_mismatch)} initialised for a shape "
                   f"mismatch ({names(self.shape_mismatch)})")
    if self.missing:
      parts.append(f"kept {len(self.missing)} initialised, absent from the "
                   f"checkpoint ({names(self.missing)})")
    if self.unused:
      parts.append(f"{len(self.unused)} checkpoint variables unused "
                   f"({names(self.unused)})")
    return "; ".join(parts) + "."


def _strip_device_suffix(name: str) -> str:
  return name[:-2] if name.endswith(":0") else name


def _object_graph(reader) -> trackable_object_graph_pb2.TrackableObjectGraph:
  graph = trackable_object_graph_pb2.TrackableObjectGraph()
  graph.ParseFromString(reader.get_tensor(_OBJECT_GRAPH_KEY))
  return graph


def _find_scope(graph, paths: Sequence[Tuple[str, ...]]
               ) -> Tuple[Optional[int], str]:
  """The node id of the first child path that exists, and that path."""
  for path in paths:
    node = 0
    for local_name in path:
      children = {c.local_name: c.node_id for c in graph.nodes[node].children}
      if local_name not in children:
        break
      node = children[local_name]
    else:
      return node, "/".join(path)
  return None, ""


def checkpoint_variables(path: str,
                         scopes: Sequence[Tuple[str, ...]] = _BACKBONE_PATHS
                        ) -> Tuple[Dict[str, str], str]:
  """Variables of the first existing object-graph scope, by saved name.

  Args:
    path: a checkpoint prefix (".../ckpt-100").
    scopes: candidate object-graph paths from the root, tried in order.

  Returns:
    ({variable name: checkpoint key}, the scope used). Names saved more
    than once in the subtree (ambiguous) are left out.

  Raises:
    ValueError: the checkpoint has no object graph or none of the scopes.
  """
  reader = tf.train.load_checkpoint(path)
  if not reader.has_tensor(_OBJECT_GRAPH_KEY):
    raise ValueError(f"{path} is not an object-based (TF2) checkpoint: it "
                     f"has no {_OBJECT_GRAPH_KEY}.")
  graph = _object_graph(reader)
  root, scope = _find_scope(graph, scopes)
  if root is None:
    top = sorted(c.local_name for c in graph.nodes[0].children)
    raise ValueError(f"{path} holds none of the object paths "
                     f"{['/'.join(s) for s in scopes]}; its top level has "
                     f"{top}.")
  found: Dict[str, List[str]] = {}
  seen, stack = set(), [root]
  while stack:
    node_id = stack.pop()
    if node_id in seen:
      continue
    seen.add(node_id)
    node = graph.nodes[node_id]
    for attribute in node.attributes:
      if attribute.name == _VALUE_ATTRIBUTE and attribute.full_name:
        found.setdefault(attribute.full_name, []).append(
            attribute.checkpoint_key)
    stack.extend(c.node_id for c in node.children)
  variables = {name: keys[0] for name, keys in found.items()
               if len(set(keys)) == 1}
  return variables, scope


def _center_rows(table: np.ndarray, rows: int) -> np.ndarray:
  start = (table.shape[0] - rows) // 2
  return table[start:start + rows]


def restore_by_name(model: tf_keras.Model, path: str,
                    scopes: Sequence[Tuple[str, ...]] = _BACKBONE_PATHS,
                    require_any: bool = True) -> RestoreReport:
  """Assigns checkpoint values to the model variables of the same name.

  Names are compared without the ":0" suffix. Relative positional tables
  (`*_positional`, [2 * radius + 1, depth]) whose checkpoint table has a
  larger radius are restored from its centre rows: the same relative
  distances, so a global-span ImageNet table initialises a local-span one
  exactly. Everything else with a different shape is reported, not forced.

  Args:
    model: the (sub-)model to initialise, built.
    path: checkpoint prefix.
    scopes: object-graph paths to search (first existing one is used).
    require_any: raise if no variable at all could be restored (the
      checkpoint is of some unrelated model).

  Returns:
    A RestoreReport.

  Raises:
    ValueError: unreadable/unsuitable checkpoint, no match with
      require_any, or duplicate variable names in the model.
  """
  if not model.built:
    raise ValueError(f"model {model.name!r} must be built before restoring.")
  saved, scope = checkpoint_variables(path, scopes)
  reader = tf.train.load_checkpoint(path)
  report = RestoreReport(checkpoint_scope=scope)
  by_name: Dict[str, tf.Variable] = {}
  for variable in model.variables:
    name = _strip_device_suffix(variable.name)
    if name in by_name and by_name[name] is not variable:
      raise ValueError(f"model {model.name!r} has two variables named "
                       f"{name!r}; restoring by name would be ambiguous.")
    by_name[name] = variable
  for name, variable in by_name.items():
    if name not in saved:
      report.missing.append(name)
      continue
    value = reader.get_tensor(saved[name])
    model_shape = tuple(variable.shape.as_list())
    if value.shape == model_shape:
      variable.assign(tf.cast(value, variable.dtype))
      report.restored.append(name)
    elif (_POSITIONAL.search(name) and value.ndim == 2 and
          len(model_shape) == 2 and value.shape[1] == model_shape[1] and
          value.shape[0] > model_shape[0] and value.shape[0] % 2 == 1 and
          model_shape[0] % 2 == 1):
      variable.assign(tf.cast(_center_rows(value, model_shape[0]),
                              variable.dtype))
      report.cropped.append((name, value.shape, model_shape))
    else:
      report.shape_mismatch.append((name, value.shape, model_shape))
  report.unused = sorted(set(saved) - set(by_name))
  if require_any and not (report.restored or report.cropped):
    raise ValueError(
        f"No variable of {model.name!r} matches a variable of {path} "
        f"(scope '{scope}') by name and shape: {report.summary()}")
  return report
