"""Attention maps of position-sensitive axial attention (paper Appendix C).

`AxialAttention` does not return its attention weights (its fast path never
materialises the full [length, length] map). Here the weights of one query
are recomputed from the layer's variables, in float64 numpy, with the
inference-time (moving) batch-norm statistics:

  qkv = BN(x W)                      split per head into q, k, v
  s_m = BN_c(q_l . k_m) + BN_q(q_l . r^q[m - l]) + BN_k(k_m . r^k[m - l])
  a_m = softmax over keys m with |m - l| <= radius (all keys if global)
  y_l = BN_v(sum_m a_m v_m) + BN_r(sum_m a_m r^v[m - l])

(relative tables indexed by m - l + radius; BN_c/q/k are the per-head
similarity norms, BN_v/r the per-channel output norms). `y_l` rebuilt from
the weights must equal the layer's own output at l, which is how the
weights are checked against the layer.

For a whole model, `attention_maps` runs the model once on an image,
records the input of the chosen AxialAttention2D, rebuilds the columns its
height layer attends over and the rows (of the height layer's output) its
width layer attends over, and returns the height-axis weights of the query
pixel over its column and the width-axis weights over its row.
"""

import contextlib
import dataclasses
from typing import Dict, List, Tuple, Union

import numpy as np
import tensorflow as tf
import tf_keras

from axial_deeplab_tf.layers.axial_attention import AxialAttention
from axial_deeplab_tf.layers.axial_attention import AxialAttention2D


@dataclasses.dataclass
class QueryAttention:
  """Attention of one query position of a 1D axial-attention layer.

  Attributes:
    weights: float64 [batch, heads, length]; attention of the query over
      the keys (0 outside the span), summing to 1 per head.
    similarity: float64 [batch, heads, length]; the normalised logits before
      the softmax, -inf outside the span.
    output: float64 [batch, value_depth]; the layer output at the query
      rebuilt from the weights.
  """
  weights: np.ndarray
  similarity: np.ndarray
  output: np.ndarray


def _sublayer(layer: tf_keras.layers.Layer, name: str):
  for value in vars(layer).values():
    if isinstance(value, tf_keras.layers.Layer) and value.name == name:
      return value
  raise ValueError(f"AxialAttention layer {layer.name!r} has no sub-layer "
                   f"named {name!r}; the attention-map code must follow the "
                   f"layer's structure.")


def _bn_inference(x, bn: tf_keras.layers.BatchNormalization, epsilon: float):
  """Batch norm with moving statistics; parameters broadcast on the right."""
  mean = np.asarray(bn.moving_mean.numpy(), np.float64)
  var = np.asarray(bn.moving_variance.numpy(), np.float64)
  gamma = (np.asarray(bn.gamma.numpy(), np.float64)
           if bn.gamma is not None else 1.0)
  beta = (np.asarray(bn.beta.numpy(), np.float64)
          if bn.beta is not None else 0.0)
  return (x - mean) / np.sqrt(var + epsilon) * gamma + beta


def query_attention(layer: AxialAttention,
                    inputs: Union[np.ndarray, tf.Tensor],
                    query_index: int) -> QueryAttention:
  """Recomputes the attention of one query of a built AxialAttention layer.

  Args:
    layer: a built AxialAttention (1D) layer.
    inputs: [batch, length, channels] inputs of the layer.
    query_index: query position l in 0..length-1.

  Returns:
    QueryAttention.

  Raises:
    ValueError: unbuilt layer, wrong input shape or query out of range.
  """
  if not isinstance(layer, AxialAttention):
    raise TypeError(f"layer must be an AxialAttention, got "
                    f"{type(layer).__name__}.")
  if not layer.built:
    raise ValueError(f"layer {layer.name!r} must be built (called once).")
  x = np.asarray(inputs, np.float64)
  if x.ndim != 3:
    raise ValueError(f"inputs must be [batch, length, channels], got shape "
                     f"{x.shape}.")
  batch, length, _ = x.shape
  if not isinstance(query_index, (int, np.integer)) or not (
      0 <= query_index < length):
    raise ValueError(f"query_index must be an int in 0..{length - 1}, got "
                     f"{query_index!r}.")
  config = layer.get_config()
  heads = config["num_heads"]
  dk, dv = config["key_depth"], config["value_depth"]
  dq, dvh = dk // heads, dv // heads
  eps = config["norm_epsilon"]
  span = config["span"]
  if span is None:
    radius = config["max_length"] - 1
    if length > config["max_length"]:
      raise ValueError(f"Global layer {layer.name!r} covers at most "
                       f"{config['max_length']} positions, got {length}.")
  else:
    radius = (span - 1) // 2
  l = int(query_index)

  kernel = np.asarray(_sublayer(layer, "qkv").kernel.numpy(), np.float64)
  if kernel.shape[0] != x.shape[-1]:
    raise ValueError(f"inputs have {x.shape[-1]} channels but layer "
                     f"{layer.name!r} was built for {kernel.shape[0]}.")
  qkv = _bn_inference(x @ kernel, _sublayer(layer, "qkv_bn"), eps)
  q = qkv[:, l, :dk].reshape(batch, heads, dq)
  k = qkv[..., dk:2 * dk].reshape(batch, length, heads, dq)
  v = qkv[..., 2 * dk:].reshape(batch, length, heads, dvh)

  keys = np.arange(length)
  in_span = np.abs(keys - l) <= radius
  rows = np.clip(keys - l + radius, 0, 2 * radius)

  terms = [np.einsum("bnd,bmnd->bnm", q, k)]
  if config["use_query_positional"]:
    rq = np.asarray(layer.query_positional.numpy(), np.float64)[rows]
    terms.append(np.einsum("bnd,md->bnm", q, rq))
  if config["use_key_positional"]:
    rk = np.asarray(layer.key_positional.numpy(), np.float64)[rows]
    terms.append(np.einsum("bmnd,md->bnm", k, rk))
  gamma = np.asarray(layer.similarity_gamma.numpy(), np.float64)
  beta = np.asarray(layer.similarity_beta.numpy(), np.float64)
  mean = np.asarray(layer.similarity_moving_mean.numpy(), np.float64)
  var = np.asarray(layer.similarity_moving_variance.numpy(), np.float64)
  similarity = np.zeros([batch, heads, length])
  for i, term in enumerate(terms):
    scale = (gamma[i] / np.sqrt(var[i] + eps))[None, :, None]
    similarity += (term - mean[i][None, :, None]) * scale + beta[i][None, :,
                                                                    None]
  similarity = np.where(in_span, similarity, -np.inf)
  shifted = similarity - similarity.max(axis=-1, keepdims=True)
  weights = np.exp(shifted)
  weights /= weights.sum(axis=-1, keepdims=True)

  outputs = [np.einsum("bnm,bmnd->bnd", weights, v).reshape(batch, dv)]
  if config["use_value_positional"]:
    rv = np.asarray(layer.value_positional.numpy(), np.float64)[rows]
    outputs.append(np.einsum("bnm,md->bnd", weights, rv).reshape(batch, dv))
  stacked = np.stack(outputs, axis=1)  # [batch, terms, value_depth]
  output_bn = _sublayer(layer, "output_bn")

  def flat(t):
    return np.asarray(t.numpy(), np.float64).reshape(-1, dv)

  normed = (stacked - flat(output_bn.moving_mean)) / np.sqrt(
      flat(output_bn.moving_variance) + eps)
  if output_bn.gamma is not None:
    normed = normed * flat(output_bn.gamma)
  if output_bn.beta is not None:
    normed = normed + flat(output_bn.beta)
  return QueryAttention(weights=weights, similarity=similarity,
                        output=normed.sum(axis=1))


# ------------------------------------------------------------------ models
def _children(layer) -> List[tf_keras.layers.Layer]:
  """Direct sub-layers in attribute order (also inside lists and dicts)."""
  found, seen = [], set()

  def add(value):
    if isinstance(value, tf_keras.layers.Layer):
      if id(value) not in seen and value is not layer:
        seen.add(id(value))
        found.append(value)
    elif isinstance(value, (list, tuple)):
      for v in value:
        add(v)
    elif isinstance(value, dict):
      for v in value.values():
        add(v)

  if isinstance(layer, tf_keras.Model):
    for sub in layer.layers:
      add(sub)
  for value in vars(layer).values():
    add(value)
  return found


def find_axial_attention_2d(model: tf_keras.layers.Layer
                           ) -> Dict[str, AxialAttention2D]:
  """All AxialAttention2D layers of a model, by path name, in model order.

  The path joins the layer names from the model down, e.g.
  "backbone/res4_block2/attention".
  """
  found: Dict[str, AxialAttention2D] = {}
  visited = set()

  def walk(layer, prefix):
    if id(layer) in visited:
      return
    visited.add(id(layer))
    for child in _children(layer):
      path = f"{prefix}{child.name}"
      if isinstance(child, AxialAttention2D):
        name = path
        n = 2
        while name in found:
          name = f"{path}_{n}"
          n += 1
        found[name] = child
      else:
        walk(child, path + "/")

  walk(model, "")
  return found


def select_block(model: tf_keras.layers.Layer,
                 block: Union[int, str]) -> Tuple[str, AxialAttention2D]:
  """Finds an AxialAttention2D by index (model order) or path name.

  A name may also be the path of the enclosing block (e.g.
  "backbone/res4_block2"), which selects the attention layer inside it.
  """
  layers = find_axial_attention_2d(model)
  if not layers:
    raise ValueError(f"Model {model.name!r} has no AxialAttention2D layer.")
  names = list(layers)
  if isinstance(block, (int, np.integer)) and not isinstance(block, bool):
    if not -len(names) <= block < len(names):
      raise ValueError(f"block index {block} is out of range; the model has "
                       f"{len(names)} axial-attention layers: {names}.")
    name = names[block]
    return name, layers[name]
  if block in layers:
    return block, layers[block]
  inside = [n for n in names if n.startswith(f"{block}/")]
  if len(inside) == 1:
    return inside[0], layers[inside[0]]
  raise ValueError(f"Unknown block {block!r}; expected an index in "
                   f"0..{len(names) - 1} or one of {names}.")


@contextlib.contextmanager
def _record_inputs(layers: Dict[str, tf_keras.layers.Layer],
                   records: Dict[str, List[np.ndarray]]):
  """Records the first positional input of each layer's call."""
  originals = []
  try:
    for key, layer in layers.items():
      originals.append((layer, vars(layer).get("call")))
      original = layer.call

      def recorder(inputs, *args, _original=original, _key=key, **kwargs):
        records[_key].append(np.asarray(inputs))
        return _original(inputs, *args, **kwargs)

      layer.call = recorder
    yield
  finally:
    for layer, own in originals:
      if own is None:
        del layer.call
      else:
        layer.call = own


@dataclasses.dataclass
class AttentionMaps:
  """Axial attention maps of one query pixel, one block and one head.

  Attributes:
    block: path name of the AxialAttention2D layer.
    head: the head.
    query: (y, x) query pixel in the image.
    query_feature: (row, column) of the query in the layer's feature map.
    feature_size: (height, width) of the layer's feature map.
    image_size: (height, width) of the image.
    height_weights: float64 [feature_height], the height-axis layer's
      attention of the query over its feature column.
    width_weights: float64 [feature_width], the width-axis layer's attention
      of the query over its feature row.
  """
  block: str
  head: int
  query: Tuple[int, int]
  query_feature: Tuple[int, int]
  feature_size: Tuple[int, int]
  image_size: Tuple[int, int]
  height_weights: np.ndarray
  width_weights: np.ndarray


def attention_maps(model: tf_keras.Model,
                   image: np.ndarray,
                   block: Union[int, str],
                   head: int,
                   query: Tuple[int, int],
                   model_fn=None) -> AttentionMaps:
  """Height- and width-axis attention maps of a query pixel.

  Args:
    model: a model containing AxialAttention2D layers, taking uint8 or
      float [1, h, w, 3] images.
    image: uint8 [height, width, 3].
    block: index or path name of the AxialAttention2D (see
      `find_axial_attention_2d`).
    head: attention head, 0..num_heads-1.
    query: (y, x) pixel of the image; its feature cell is
      (floor(y * feature_height / height), floor(x * feature_width / width)).
    model_fn: optional callable(model, images) running the forward pass;
      default `model(images, training=False)`.

  Returns:
    AttentionMaps.
  """
  image = np.asarray(image)
  if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
    raise ValueError(f"image must be uint8 [height, width, 3], got dtype "
                     f"{image.dtype} and shape {image.shape}.")
  height, width = image.shape[:2]
  try:
    y, x = (int(v) for v in query)
  except (TypeError, ValueError) as e:
    raise ValueError(f"query must be (y, x), got {query!r}.") from e
  if not (0 <= y < height and 0 <= x < width):
    raise ValueError(f"query {query!r} is outside the {height}x{width} "
                     f"image.")
  name, layer = select_block(model, block)
  num_heads = layer.height_attention.get_config()["num_heads"]
  if isinstance(head, bool) or not isinstance(head, (int, np.integer)) or (
      not 0 <= head < num_heads):
    raise ValueError(f"head must be an int in 0..{num_heads - 1} for block "
                     f"{name!r}, got {head!r}.")
  # Only the input of the 2D layer is recorded; the column and row inputs of
  # its two 1D layers are rebuilt from it as the layer defines them (height
  # pass on columns, width pass on the rows of its output), so nothing here
  # depends on how the layer lays its tensors out internally.
  records = {"input": []}
  images = tf.convert_to_tensor(image[np.newaxis])
  with _record_inputs({"input": layer}, records):
    if model_fn is None:
      model(images, training=False)
    else:
      model_fn(model, images)
  if len(records["input"]) != 1:
    raise ValueError(f"Expected one call of block {name!r} in the forward "
                     f"pass, saw {len(records['input'])} (run the model "
                     f"eagerly).")
  features = records["input"][0]  # [1, feature_height, feature_width, c]
  if features.ndim != 4 or features.shape[0] != 1:
    raise ValueError(f"Unexpected input of block {name!r}: shape "
                     f"{features.shape}.")
  fh, fw = features.shape[1], features.shape[2]
  fy = min(y * fh // height, fh - 1)
  fx = min(x * fw // width, fw - 1)
  columns = np.transpose(features[0], (1, 0, 2))  # [fw, fh, c]
  column = query_attention(layer.height_attention, columns[fx:fx + 1], fy)
  # The width layer's input row fy: the height layer's output at row fy of
  # every column.
  height_out = layer.height_attention(
      tf.convert_to_tensor(columns, dtype=layer.height_attention.compute_dtype),
      training=False)
  rows = np.transpose(np.asarray(height_out), (1, 0, 2))  # [fh, fw, dv]
  row = query_attention(layer.width_attention, rows[fy:fy + 1], fx)
  return AttentionMaps(block=name, head=int(head), query=(y, x),
                       query_feature=(fy, fx), feature_size=(fh, fw),
                       image_size=(height, width),
                       height_weights=column.weights[0, head],
                       width_weights=row.weights[0, head])
