"""Counts multiply-adds (M-Adds) and trainable parameters of tf_keras models.

Method: the model is traced once, as `model(x, training=False)` inside a
`tf.function`, for one input of a fully static shape (e.g. [1, H, W, 3]);
every operation of the resulting graph (and of any function it calls) is
visited and the multiply-adds of these op types are summed:

- Conv2D, Conv3D: output elements x kernel window x input channels per
  group (the filter's input dimension, so grouped convolutions count right).
- DepthwiseConv2dNative: output elements x kernel window.
- Conv2DBackpropInput (transposed convolution): input (out_backprop)
  elements x kernel window x output channels.
- MatMul, BatchMatMul(V2/V3): output elements x contraction size.
- Einsum: product of the sizes of all distinct indices of the operands
  (each index, including broadcast '...' dimensions, once), times
  (operands - 1); single-operand einsums (sums, transposes) count 0.
- AxialSpanAttention (the fused axial-attention kernel): for every
  in-span (query, key) pair of every row and head, one multiply-add per
  depth channel of each term it computes: q.k, q.r^q and k.r^k (key depth
  each), a v and a r^v (value depth each).

Element-wise operations (bias, batch norm, activations, softmax,
additions), pooling, resizing, reductions and data movement are not
counted, as is usual for M-Adds figures in papers. Branches of a
conditional count as the largest branch; a while loop (unknown trip count)
or an unknown dimension raises ValueError rather than giving a guess.

Why not TensorFlow's profiler: its float-operation count only knows ops
with a registered "flops" statistic, and Einsum has none, so every
einsum product counts as zero and attention written with einsums is
undercounted, often by most of its cost.

The count is of the operations the graph executes; where a layer computes
more than the textbook formula (e.g. LocalSelfAttention2D's block-and-halo
form evaluates logits for the whole halo and masks the excess), that work
is included.
"""

import collections
import dataclasses
import math
from typing import Any, Callable, Dict, Iterable, Optional, Sequence

import numpy as np
import tensorflow as tf
import tf_keras

from tensorflow.core.framework import function_pb2
from tensorflow.python.framework import function_def_to_graph

METHOD = ("graph walk of the traced inference graph for one input of the "
          "given shape: multiply-adds of Conv2D/Conv3D/DepthwiseConv2dNative/"
          "Conv2DBackpropInput/MatMul/BatchMatMul/Einsum (einsum: product of "
          "all distinct index sizes) and of the fused axial-attention kernel "
          "(in-span query/key pairs x the depths of its five products); "
          "element-wise ops, pooling and resizing not counted")

_CALL_OPS = ("PartitionedCall", "StatefulPartitionedCall")
_COND_OPS = ("If", "StatelessIf", "Case", "StatelessCase")
_LOOP_OPS = ("While", "StatelessWhile")
# Heavy ops this counter does not know how to count; meeting one is an error
# rather than a silent undercount.
_UNSUPPORTED_OPS = ("Conv3DBackpropInputV2",
                    "DepthwiseConv2dNativeBackpropInput",
                    "Conv2DBackpropFilter", "SparseMatMul", "XlaDot",
                    "XlaDotV2", "XlaConv", "XlaConvV2")


@dataclasses.dataclass(frozen=True)
class MAddsCount:
  """Multiply-adds of one forward pass.

  Attributes:
    total: all counted multiply-adds.
    by_op_type: multiply-adds per op type (only types that occurred).
    op_counts: number of counted ops per op type.
  """
  total: int
  by_op_type: Dict[str, int]
  op_counts: Dict[str, int]


class _UnknownShapeError(ValueError):
  """An op to count has a tensor whose shape is not fully static."""


def _static_shape(tensor: tf.Tensor, op: tf.Operation) -> Sequence[int]:
  shape = tensor.shape
  if shape.rank is None or any(d is None for d in shape.as_list()):
    raise _UnknownShapeError(
        f"Op {op.name!r} ({op.type}) has a tensor of unknown shape {shape}; "
        f"M-Adds need static shapes. Make the layer keep static shapes when "
        f"the input shape is static.")
  return shape.as_list()


def einsum_madds(equation: str, shapes: Sequence[Sequence[int]]) -> int:
  """Multiply-adds of an einsum: product of distinct index sizes x (n - 1).

  Args:
    equation: einsum equation, e.g. "bqd,bkd->bqk"; may use "...".
    shapes: static shapes of the operands.

  Returns:
    The multiply-add count (0 for a single operand).
  """
  inputs = equation.replace(" ", "").split("->")[0].split(",")
  if len(inputs) != len(shapes):
    raise ValueError(f"Einsum equation {equation!r} has {len(inputs)} "
                     f"operands but {len(shapes)} shapes were given.")
  if len(inputs) < 2:
    return 0
  sizes = {}
  ellipsis = []  # Broadcast dims, aligned to the right as numpy does.
  for term, shape in zip(inputs, shapes):
    if "..." in term:
      head, tail = term.split("...")
      n = len(shape) - len(head) - len(tail)
      labels = list(head) + [None] * n + list(tail)
      dims = list(shape[len(head):len(head) + n])
      for i, d in enumerate(reversed(dims)):
        if i < len(ellipsis):
          ellipsis[i] = max(ellipsis[i], d)
        else:
          ellipsis.append(d)
    else:
      labels = list(term)
    if len(labels) != len(shape):
      raise ValueError(f"Einsum term {term!r} of {equation!r} does not match "
                       f"operand shape {list(shape)}.")
    for label, d in zip(labels, shape):
      if label is not None:
        # A size-1 dim may broadcast against a larger one of the same index.
        sizes[label] = max(sizes.get(label, 1), d)
  return (len(inputs) - 1) * math.prod(sizes.values()) * math.prod(ellipsis)


def _op_madds(op: tf.Operation) -> int:
  """Multiply-adds of one counted op."""
  kind = op.type
  if kind == "Einsum":
    equation = op.get_attr("equation")
    if isinstance(equation, bytes):
      equation = equation.decode()
    return einsum_madds(equation, [_static_shape(t, op) for t in op.inputs])
  if kind == "MatMul":
    a = _static_shape(op.inputs[0], op)
    k = a[0] if op.get_attr("transpose_a") else a[1]
    return math.prod(_static_shape(op.outputs[0], op)) * k
  if kind.startswith("BatchMatMul"):
    a = _static_shape(op.inputs[0], op)
    k = a[-2] if op.get_attr("adj_x") else a[-1]
    return math.prod(_static_shape(op.outputs[0], op)) * k
  if kind in ("Conv2D", "Conv3D"):
    kernel = _static_shape(op.inputs[1], op)
    return math.prod(_static_shape(op.outputs[0], op)) * math.prod(kernel[:-1])
  if kind == "DepthwiseConv2dNative":
    kernel = _static_shape(op.inputs[1], op)
    return math.prod(_static_shape(op.outputs[0], op)) * math.prod(kernel[:2])
  if kind == "AxialSpanAttention":
    return _span_attention_madds(op)
  if kind == "Conv2DBackpropInput":
    kernel = _static_shape(op.inputs[1], op)  # [kh, kw, out_ch, in_ch]
    grad = _static_shape(op.inputs[2], op)  # [B, h, w, in_ch]
    return math.prod(grad) * kernel[0] * kernel[1] * kernel[2]
  raise AssertionError(kind)


_COUNTED = ("Einsum", "MatMul", "BatchMatMul", "BatchMatMulV2",
            "BatchMatMulV3", "Conv2D", "Conv3D", "DepthwiseConv2dNative",
            "Conv2DBackpropInput", "AxialSpanAttention")


def in_span_pairs(length: int, radius: int) -> int:
  """(query, key) pairs of an axis of `length` with |m - l| <= radius."""
  return sum(min(length - 1, l + radius) - max(0, l - radius) + 1
             for l in range(length))


def _span_attention_madds(op: tf.Operation) -> int:
  """M-Adds of the fused axial-attention op (see the module docstring)."""
  query = _static_shape(op.inputs[0], op)
  value = _static_shape(op.inputs[2], op)
  tables = [_static_shape(op.inputs[i], op)[0] for i in (3, 4, 5)]
  sequence_major = op.get_attr("sequence_major")
  rows, length = (query[1], query[0]) if sequence_major else (query[0],
                                                               query[1])
  heads, key_depth, value_depth = query[2], query[3], value[3]
  per_pair = (key_depth * (1 + int(tables[0] > 0) + int(tables[1] > 0)) +
              value_depth * (1 + int(tables[2] > 0)))
  pairs = in_span_pairs(length, op.get_attr("radius"))
  return rows * heads * pairs * per_pair


def _function_graphs(root, name: str, op: tf.Operation, inputs):
  """Yields graphs of library function `name`, most specific first.

  First the body as traced; if that lacks static shapes (tf_keras, e.g.,
  traces grouped convolutions once with unknown sizes), the body rebuilt
  from its FunctionDef with the caller's static input shapes, which lets
  shape inference fill them in again (variables read inside stay as traced).
  """
  graph, function = root, None
  while graph is not None and function is None:
    function = graph._get_function(name)  # pylint: disable=protected-access
    graph = getattr(graph, "outer_graph", None)
  if function is None:
    raise ValueError(f"Cannot find the body of function {name!r} called by "
                     f"op {op.name!r} ({op.type}); cannot count its M-Adds.")
  yield function.graph
  fdef = function_pb2.FunctionDef()
  fdef.CopyFrom(function.cached_definition)
  for arg in fdef.arg_attr.values():
    # Recorded input shapes would override the caller's static ones.
    if "_output_shapes" in arg.attr:
      del arg.attr["_output_shapes"]
  yield function_def_to_graph.function_def_to_graph(
      fdef, input_shapes=[t.shape for t in inputs])


def _walk_function(root, name, op, inputs, by_type, counts):
  """Adds the M-Adds of a called function; see _function_graphs."""
  error = None
  for graph in _function_graphs(root, name, op, inputs):
    inner_type, inner_counts = collections.Counter(), collections.Counter()
    try:
      _walk(root, graph, inner_type, inner_counts)
    except _UnknownShapeError as e:
      error = e
      continue
    by_type.update(inner_type)
    counts.update(inner_counts)
    return
  raise error


def _function_name(attr) -> str:
  return attr.name if hasattr(attr, "name") else attr.decode()


def _walk(root, graph, by_type: Dict[str, int],
          counts: Dict[str, int]) -> None:
  """Adds the M-Adds of `graph`'s ops (and called functions) to the tallies."""
  for op in graph.get_operations():
    kind = op.type
    if kind in _COUNTED:
      by_type[kind] += _op_madds(op)
      counts[kind] += 1
    elif kind in _CALL_OPS:
      _walk_function(root, _function_name(op.get_attr("f")), op, op.inputs,
                     by_type, counts)
    elif kind in _COND_OPS:
      if "If" in kind:
        names = [_function_name(op.get_attr(a))
                 for a in ("then_branch", "else_branch")]
      else:
        names = [_function_name(f) for f in op.get_attr("branches")]
      best = None
      for name in names:  # Input 0 is the predicate / branch index.
        branch_type = collections.Counter()
        branch_counts = collections.Counter()
        _walk_function(root, name, op, op.inputs[1:], branch_type,
                       branch_counts)
        if best is None or sum(branch_type.values()) > sum(best[0].values()):
          best = (branch_type, branch_counts)
      by_type.update(best[0])
      counts.update(best[1])
    elif kind in _LOOP_OPS:
      raise ValueError(f"Op {op.name!r} is a while loop; its trip count is "
                       f"unknown, so its M-Adds cannot be counted.")
    elif kind in _UNSUPPORTED_OPS:
      raise ValueError(f"Op {op.name!r} of type {kind} is not supported by "
                       f"the M-Adds counter.")


def _check_shape(input_shape: Iterable[Any]) -> list:
  try:
    shape = list(input_shape)
  except TypeError:
    raise TypeError(f"input_shape must be a sequence of positive ints, got "
                    f"{input_shape!r}.") from None
  if not shape or any(isinstance(d, bool) or
                      not isinstance(d, (int, np.integer)) or d <= 0
                      for d in shape):
    raise ValueError(f"input_shape must be a non-empty sequence of positive "
                     f"ints (a full static shape such as [1, H, W, C]), got "
                     f"{input_shape!r}.")
  return [int(d) for d in shape]


def count_madds(model: Callable[..., Any], input_shape: Sequence[int],
                dtype: Optional[tf.dtypes.DType] = None) -> MAddsCount:
  """Counts the multiply-adds of one inference pass of `model`.

  Args:
    model: a tf_keras model or layer with a single input, called as
      `model(x, training=False)`.
    input_shape: full static input shape, e.g. [1, height, width, 3].
    dtype: input dtype; default the model's input dtype if it has one,
      else float32.

  Returns:
    MAddsCount with the total and a per-op-type breakdown.

  Raises:
    ValueError: bad input_shape, a model with several inputs, an op whose
      shape stays unknown, a while loop or an unsupported heavy op.
  """
  shape = _check_shape(input_shape)
  inputs = getattr(model, "inputs", None)
  if inputs is not None and len(inputs) != 1:
    raise ValueError(f"count_madds supports models with one input, got "
                     f"{len(inputs)} inputs.")
  if dtype is None:
    dtype = inputs[0].dtype if inputs else tf.float32
  function = tf.function(lambda x: model(x, training=False))
  graph = function.get_concrete_function(tf.TensorSpec(shape, dtype)).graph
  by_type = collections.Counter()
  counts = collections.Counter()
  _walk(graph, graph, by_type, counts)
  return MAddsCount(total=int(sum(by_type.values())),
                    by_op_type=dict(sorted(by_type.items())),
                    op_counts=dict(sorted(counts.items())))


def count_params(model: tf_keras.layers.Layer) -> int:
  """Number of trainable parameters (shared weights counted once)."""
  return int(sum(math.prod(w.shape) for w in model.trainable_weights))
