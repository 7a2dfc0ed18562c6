"""Restoring a backbone from a checkpoint of a different model.

Object-based checkpoints key variables by their path in the saved object
graph (`model/backbone/layer_with_weights-3/_attention/_qkv_bn/gamma`), and
Keras functional models name the first step below the model by layer
position. A classifier with a "conv" stem and a segmentation model with an
"inception" stem therefore disagree on every position after the stem even
where the layers are the same, so a plain `tf.train.Checkpoint` restore
either fails or pairs the wrong layers. Variable names do not help either:
sub-layers built inside their parent's `build` share the parent's name
scope, so one block can hold several variables named `.../gamma`.

`restore_by_name` pairs the layers by their names (which the backbone
builder fixes, e.g. `res3_block2`) and, inside a pair, variables by their
object path below the layer (attribute names of the same layer class). It
restores what matches, converts relative positional tables between spans
(see below) and reports what it restored, converted and left alone.
"""

import collections
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
  """What `restore_by_name` did; names are "<layer name>/<object path>".

  Attributes:
    restored: restored unchanged.
    cropped: relative positional tables restored from the centre rows of a
      larger-span table: (name, checkpoint shape, model shape).
    shape_mismatch: present in both, incompatible shapes; left as
      initialised: (name, checkpoint shape, model shape).
    missing: model variables the checkpoint does not hold (left as
      initialised).
    unused: checkpoint variables (of the searched model) that no model
      variable corresponds to.
    checkpoint_scope: the object-graph path of the saved model.
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
    for found, what in (
        (self.cropped, "cropped {} positional tables to the model's span"),
        (self.shape_mismatch, "kept {} initialised for a shape mismatch"),
        (self.missing, "kept {} initialised, absent from the checkpoint"),
        (self.unused, "{} checkpoint variables unused")):
      if found:
        parts.append(f"{what.format(len(found))} ({names(found)})")
    return "; ".join(parts) + "."


def restore_whole_model(model: tf_keras.Model, path: str) -> None:
  """Restores every variable of `model` from `model=` of checkpoint `path`.

  The layout of Model Garden's trainer and of the importers; optimizer
  slots and the step counter in the checkpoint are left unread.

  Raises:
    AssertionError: the checkpoint does not cover every model variable.
  """
  status = tf.train.Checkpoint(model=model).read(path)
  status.expect_partial().assert_existing_objects_matched()


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


def _checkpoint_subtree(graph, root: int) -> Dict[str, Tuple[str, str]]:
  """{relative path: (checkpoint key, saved variable name)} below `root`.

  Breadth-first with children in saved order, the first path to a node
  wins: the same rule TensorFlow uses to name checkpoint keys, and the one
  `_model_subtree` applies to the live layer.
  """
  found, seen, queue = {}, {root}, collections.deque([(root, "")])
  while queue:
    node_id, path = queue.popleft()
    for attribute in graph.nodes[node_id].attributes:
      if attribute.name == _VALUE_ATTRIBUTE:
        found[path] = (attribute.checkpoint_key, attribute.full_name)
    for child in graph.nodes[node_id].children:
      if child.node_id not in seen:
        seen.add(child.node_id)
        queue.append((child.node_id,
                      f"{path}/{child.local_name}" if path else
                      child.local_name))
  return found


def _model_subtree(layer) -> Dict[str, tf.Variable]:
  """{relative path: variable} below a live layer (see _checkpoint_subtree)."""
  view = tf.train.TrackableView(layer)
  found, seen, queue = {}, {id(layer)}, collections.deque([(layer, "")])
  while queue:
    obj, path = queue.popleft()
    if isinstance(obj, tf.Variable):
      found[path] = obj
      continue
    for name, child in view.children(obj).items():
      if id(child) not in seen:
        seen.add(id(child))
        queue.append((child, f"{path}/{name}" if path else name))
  return found


def checkpoint_layers(path: str,
                      scopes: Sequence[Tuple[str, ...]] = _BACKBONE_PATHS
                     ) -> Tuple[Dict[str, Dict[str, str]], str]:
  """The layers of a saved (functional) model, by layer name.

  A layer's name is read off the saved names of its variables (their first
  component, e.g. `res3_block2/...`); layers without variables are left
  out, and so are two saved layers that claim the same name.

  Args:
    path: a checkpoint prefix (".../ckpt-100").
    scopes: candidate object-graph paths of the model, tried in order.

  Returns:
    ({layer name: {path below the layer: checkpoint key}}, the scope used).

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
  layers: Dict[str, Dict[str, str]] = {}
  claimed: Dict[str, int] = {}
  for child in graph.nodes[root].children:
    variables = _checkpoint_subtree(graph, child.node_id)
    names = collections.Counter(full.split("/")[0]
                                for _, full in variables.values() if full)
    if not names:
      continue
    name = names.most_common(1)[0][0]
    if claimed.get(name, child.node_id) != child.node_id:
      layers.pop(name, None)  # Ambiguous: two saved layers, one name.
      continue
    claimed[name] = child.node_id
    layers[name] = {rel: key for rel, (key, _) in variables.items()}
  return layers, scope


def _center_rows(table: np.ndarray, rows: int) -> np.ndarray:
  start = (table.shape[0] - rows) // 2
  return table[start:start + rows]


def _is_relative_table(name: str, saved: np.ndarray, shape) -> bool:
  return bool(_POSITIONAL.search(name) and saved.ndim == 2 and
              len(shape) == 2 and saved.shape[1] == shape[1] and
              saved.shape[0] > shape[0] and saved.shape[0] % 2 == 1 and
              shape[0] % 2 == 1)


def restore_by_name(model: tf_keras.Model, path: str,
                    scopes: Sequence[Tuple[str, ...]] = _BACKBONE_PATHS,
                    require_any: bool = True) -> RestoreReport:
  """Restores the layers of `model` that a checkpoint holds under their names.

  Layers are paired by name, variables inside a pair by object path. A
  variable of the same shape is restored. A relative positional table
  (`*_positional`, [2 * radius + 1, depth]) whose saved table has a larger
  radius is restored from the saved centre rows: the same relative
  distances, so a global-span ImageNet table initialises a local-span one
  exactly. Every other difference is reported, never forced.

  Args:
    model: the functional (sub-)model to initialise, built.
    path: checkpoint prefix.
    scopes: object-graph paths of the saved model (first existing one).
    require_any: raise if nothing could be restored (the checkpoint is of
      an unrelated model).

  Returns:
    A RestoreReport; names are "<layer name>/<path below the layer>".

  Raises:
    ValueError: unreadable or unsuitable checkpoint, nothing restored with
      require_any, or an unbuilt model.
  """
  if not model.built:
    raise ValueError(f"model {model.name!r} must be built before restoring.")
  saved_layers, scope = checkpoint_layers(path, scopes)
  reader = tf.train.load_checkpoint(path)
  report = RestoreReport(checkpoint_scope=scope)
  model_names = set()
  for layer in model.layers:
    model_names.add(layer.name)
    saved = saved_layers.get(layer.name, {})
    live = _model_subtree(layer)
    for rel, variable in live.items():
      name = f"{layer.name}/{rel}"
      if rel not in saved:
        report.missing.append(name)
        continue
      value = reader.get_tensor(saved[rel])
      shape = tuple(variable.shape.as_list())
      if value.shape == shape:
        variable.assign(tf.cast(value, variable.dtype))
        report.restored.append(name)
      elif _is_relative_table(rel, value, shape):
        variable.assign(tf.cast(_center_rows(value, shape[0]),
                                variable.dtype))
        report.cropped.append((name, value.shape, shape))
      else:
        report.shape_mismatch.append((name, value.shape, shape))
    report.unused.extend(f"{layer.name}/{rel}" for rel in sorted(saved)
                         if rel not in live)
  for name in sorted(set(saved_layers) - model_names):
    report.unused.extend(f"{name}/{rel}" for rel in sorted(saved_layers[name]))
  if require_any and not (report.restored or report.cropped):
    raise ValueError(
        f"No variable of {model.name!r} matches a variable of {path} "
        f"(scope '{scope}') by layer name, path and shape: "
        f"{report.summary()}")
  return report
