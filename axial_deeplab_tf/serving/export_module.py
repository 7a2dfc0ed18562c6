"""SavedModel export of the zoo models: signatures, in-graph processing.

Built on Model Garden's `official.core.export_base.ExportModule`. One module
per task:

  * panoptic (Axial-DeepLab, Panoptic-DeepLab): model (optionally multi-scale
    and flipped), then the pure-TF Panoptic-DeepLab post-processor;
  * semantic (SegNeXt, ISANet): per-pixel class probabilities and argmax;
  * classification (Axial-ResNet): logits, probabilities, top class.

Signatures (keys of `SIGNATURE_NAMES`):

  * `serving_default` ("image_tensor"): `images`, uint8
    [batch, height, width, 3] of any height, width and batch size. The spec
    is saved with unknown rank so that a wrong rank or channel count reaches
    the graph's own check and fails with a readable message instead of a
    kernel crash; the dtype (uint8) is enforced by the signature.
  * `serve_image_bytes` ("image_bytes"): `encoded_images`, a [batch] string
    tensor of JPEG/PNG/GIF/BMP files.
  * `serve_tf_example` ("tf_example"): `serialized_examples`, a [batch]
    string tensor of tf.train.Example protos holding the encoded image under
    `image/encoded` (the project's TFRecord schema).

Encoded images of one request may differ in size. When all have the same
size they run as one batch (the result equals `serving_default` on the
stacked images); otherwise each image runs on its own at its own size and
the per-pixel outputs are padded at the bottom and right to the largest
height and width of the request: int32 maps with -1, float maps with 0. The
`image_size` output ([batch, 2] int32, (height, width)) tells each image's
valid region. Every signature returns `image_size`.

In the graph: the checks of the input, the model (which normalises the
uint8 images itself), test-time augmentation if asked, the post-processing
and the resize of every per-pixel output back to the input size (a model
that predicts at a lower resolution is resized bilinearly, its offsets
scaled by the ratio; outputs already at the input size pass untouched).

Panoptic outputs (all at the input resolution):
  panoptic_pred   int32 [b, h, w]  semantic * label_divisor + instance;
                                   void pixels ignore_label * label_divisor.
  semantic_pred   int32 [b, h, w]  argmax class.
  instance_pred   int32 [b, h, w]  1 + center slot of thing pixels, else 0.
  semantic_probs  float32 [b, h, w, num_classes]  softmax (mean over the
                                   test-time augmentations when used).
  center_heatmap  float32 [b, h, w, 1]  the model's raw center heatmap (it
                                   has no sigmoid: trained by MSE towards
                                   Gaussians of peak 1); mean over TTA.
  offset_map      float32 [b, h, w, 2]  (dy, dx) in input pixels from each
                                   pixel to its instance center.
  instance_scores float32 [b, K]   heatmap value of each center slot, 0 for
                                   empty slots (K = keep_k_centers).
  instance_centers int32 [b, K, 2] (y, x) of each center slot, -1 if empty.
Semantic outputs: semantic_pred, semantic_probs. Classification outputs:
logits, probabilities [b, num_classes] float32, classes [b] int32.

Only the model's variables are saved with the signatures (not the Keras
objects, nor the traced model as a function of its own), so
`tf.saved_model.load` needs nothing but TensorFlow, and saving traces the
model only once. A JSON description of the export (task, classes,
post-processing settings, dataset metadata) is written to
`assets.extra/axial_deeplab_serving.json` inside the export.
"""

import abc
import dataclasses
import json
import os
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import tensorflow as tf
import tf_keras

from official.core import export_base

from axial_deeplab_tf.attention_math import check_positive_int
from axial_deeplab_tf.data import metadata as metadata_lib
from axial_deeplab_tf.data import tfrecord_schema
from axial_deeplab_tf.ops import fused_attention
from axial_deeplab_tf.ops import post_processing
from axial_deeplab_tf.ops import test_time_augmentation
from axial_deeplab_tf.utils import io as io_lib
# Model loading lives in model_loading; its names stay reachable here.
from axial_deeplab_tf.serving.model_loading import (  # pylint: disable=unused-import
    DTYPES, LoadedModel, compute_dtype_scope, load_model,
    panoptic_post_processor, parse_overrides, resolve_checkpoint,
    resolve_post_processor, restore_checkpoint)

TASKS = ("panoptic", "semantic", "classification")

# Function key (Model Garden's naming) -> signature name in the SavedModel.
SIGNATURE_NAMES = {
    "image_tensor": tf.saved_model.DEFAULT_SERVING_SIGNATURE_DEF_KEY,
    "image_bytes": "serve_image_bytes",
    "tf_example": "serve_tf_example",
}
INPUT_NAMES = {
    "image_tensor": "images",
    "image_bytes": "encoded_images",
    "tf_example": "serialized_examples",
}
SERVING_CONFIG_FILENAME = "axial_deeplab_serving.json"
SERVING_CONFIG_DIR = "assets.extra"
SERVING_CONFIG_VERSION = 1

# Padding of per-pixel outputs when encoded images differ in size.
INT_PAD_VALUE = -1
FLOAT_PAD_VALUE = 0.0

_PANOPTIC_KEYS = ("panoptic_pred", "semantic_pred", "instance_pred",
                  "semantic_probs", "center_heatmap", "offset_map",
                  "instance_scores", "instance_centers")
_SEMANTIC_KEYS = ("semantic_pred", "semantic_probs")
_CLASSIFICATION_KEYS = ("logits", "probabilities", "classes")
# Outputs with [batch, height, width, ...] layout (padded per image).
_PIXEL_KEYS = ("panoptic_pred", "semantic_pred", "instance_pred",
               "semantic_probs", "center_heatmap", "offset_map")


@dataclasses.dataclass(frozen=True)
class ServingParams:
  """What the exported signatures compute.

  Attributes:
    task: "panoptic", "semantic" or "classification".
    scales: test-time input scales (panoptic and semantic); (1.0,) runs the
      model once on the input as is.
    flip: also run every scale on the left-right mirrored image and average.
    dtype: compute dtype the model was built with: "float32" or "bfloat16"
      (build under `compute_dtype_scope("bfloat16")`). Outputs are float32.
    input_size: classification only: (height, width) the images are resized
      to (bilinear) before the model; None feeds them as they are.
    image_feature_key: tf.train.Example key of the encoded image.
    max_pixels: encoded images (serve_image_bytes, serve_tf_example) whose
      header declares more than this many pixels are refused before
      decoding; None: no limit. The default fits 4K frames.
  """
  task: str
  scales: Tuple[float, ...] = (1.0,)
  flip: bool = False
  dtype: str = "float32"
  input_size: Optional[Tuple[int, int]] = None
  image_feature_key: str = tfrecord_schema.IMAGE_ENCODED
  max_pixels: Optional[int] = 4096 * 4096

  def __post_init__(self):
    if self.task not in TASKS:
      raise ValueError(f"task must be one of {TASKS}, got {self.task!r}.")
    try:
      scales = tuple(float(s) for s in self.scales)
    except (TypeError, ValueError) as e:
      raise ValueError(f"scales must be a sequence of positive numbers, got "
                       f"{self.scales!r}.") from e
    if not scales or any(not s > 0 for s in scales):
      raise ValueError(f"scales must be a non-empty sequence of positive "
                       f"numbers, got {self.scales!r}.")
    object.__setattr__(self, "scales", scales)
    if not isinstance(self.flip, bool):
      raise TypeError(f"flip must be a bool, got {self.flip!r}.")
    if self.dtype not in DTYPES:
      raise ValueError(f"dtype must be one of {DTYPES}, got {self.dtype!r}.")
    if self.task == "classification":
      if scales != (1.0,) or self.flip:
        raise ValueError(f"Test-time augmentation (scales={scales}, flip="
                         f"{self.flip}) is for panoptic and semantic models, "
                         f"not classification.")
    if self.input_size is not None:
      if self.task != "classification":
        raise ValueError(f"input_size is for classification models (images "
                         f"are resized to it); a {self.task} model takes "
                         f"any size. Got input_size={self.input_size!r}.")
      try:
        size = tuple(int(v) for v in self.input_size)
      except (TypeError, ValueError) as e:
        raise ValueError(f"input_size must be (height, width), got "
                         f"{self.input_size!r}.") from e
      if len(size) != 2 or min(size) <= 0:
        raise ValueError(f"input_size must be two positive ints, got "
                         f"{self.input_size!r}.")
      object.__setattr__(self, "input_size", size)
    if not isinstance(self.image_feature_key, str) or not (
        self.image_feature_key):
      raise ValueError(f"image_feature_key must be a non-empty str, got "
                       f"{self.image_feature_key!r}.")

    if self.max_pixels is not None:
      check_positive_int("max_pixels", self.max_pixels)

  @property
  def uses_test_time_augmentation(self) -> bool:
    return self.scales != (1.0,) or self.flip

  def to_dict(self) -> Dict[str, Any]:
    return {
        "task": self.task,
        "scales": list(self.scales),
        "flip": self.flip,
        "dtype": self.dtype,
        "input_size": list(self.input_size) if self.input_size else None,
        "image_feature_key": self.image_feature_key,
        "max_pixels": self.max_pixels,
    }


def check_images(images: tf.Tensor) -> tf.Tensor:
  """Checks serving images and returns them as uint8 [batch, h, w, 3].

  Static properties (dtype, known rank or channels) are checked in Python
  and raise; the rest is checked when the graph runs: a tensor that is not
  [batch >= 1, height >= 1, width >= 1, 3] fails with InvalidArgumentError
  naming the expected and the received shape before any model op runs.

  Args:
    images: uint8 tensor, rank 4 with 3 channels.

  Returns:
    The images with static shape [None, None, None, 3] (or more specific).

  Raises:
    TypeError: images not a uint8 tensor.
    ValueError: statically known rank other than 4 or channels other than 3.
  """
  if not tf.is_tensor(images):
    images = tf.convert_to_tensor(images)
  if images.dtype != tf.uint8:
    raise TypeError(f"images must be a uint8 tensor [batch, height, width, 3]"
                    f" with values 0..255, got dtype {images.dtype.name}.")
  rank = images.shape.rank
  if rank is not None and rank != 4:
    raise ValueError(f"images must be [batch, height, width, 3], got shape "
                     f"{images.shape} (rank {rank}).")
  if rank == 4 and images.shape[-1] is not None and images.shape[-1] != 3:
    raise ValueError(f"images must have 3 (RGB) channels, got shape "
                     f"{images.shape}.")
  # Index a padded shape so that a wrong rank cannot break the check itself.
  shape = tf.concat([tf.shape(images), tf.zeros([4], tf.int32)], axis=0)
  ok = tf.reduce_all([
      tf.equal(tf.rank(images), 4), tf.equal(shape[3], 3), shape[0] >= 1,
      shape[1] >= 1, shape[2] >= 1
  ])
  check = tf.debugging.Assert(ok, [
      "images must be uint8 [batch >= 1, height >= 1, width >= 1, 3]; got "
      "shape", tf.shape(images)], summarize=8)
  # The model ops depend on the reshape, so nothing runs before the check.
  with tf.control_dependencies([check]):
    checked = tf.reshape(images, tf.stack([-1, shape[1], shape[2], 3]))
  if rank == 4:
    checked.set_shape(images.shape)
  return checked


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def declared_pixels(encoded: tf.Tensor) -> tf.Tensor:
  """width * height an encoded image's header declares (int64 scalar).

  Reads only the header: PNG (IHDR), GIF (logical screen), BMP (info
  header) and JPEG (`tf.image.extract_jpeg_shape`, which stops at the
  frame header). -1 for any other content.
  """
  head = tf.strings.substr(tf.strings.join([encoded, "\0" * 32]), 0, 32)
  b = tf.cast(tf.io.decode_raw(head, tf.uint8), tf.int64)

  def number(start, count, little):
    order = range(count) if little else range(count - 1, -1, -1)
    return tf.add_n([b[start + k] * (256 ** i) for i, k in
                     enumerate(order)])

  def signed32(value):
    return tf.abs(tf.where(value >= 2 ** 31, value - 2 ** 32, value))

  def prefix(sig):
    return tf.equal(tf.strings.substr(head, 0, len(sig)), sig)

  def jpeg():
    shape = tf.cast(tf.image.extract_jpeg_shape(encoded), tf.int64)
    return shape[0] * shape[1]

  png = number(16, 4, False) * number(20, 4, False)
  gif = number(6, 2, True) * number(8, 2, True)
  bmp = signed32(number(18, 4, True)) * signed32(number(22, 4, True))
  return tf.case([
      (prefix(_PNG_SIGNATURE), lambda: png),
      (prefix(b"GIF8"), lambda: gif),
      (prefix(b"BM"), lambda: bmp),
      (prefix(b"\xff\xd8\xff"), jpeg),
  ], default=lambda: tf.constant(-1, tf.int64), exclusive=True)


def _resize_to(x, size, method="bilinear"):
  return tf.image.resize(x, size, method=method)


class ImageExportModule(export_base.ExportModule):
  """Model Garden export module shared by the three tasks.

  Subclasses implement `serve(images)` on checked uint8 [b, h, w, 3] images
  and list their output keys in `output_keys`.
  """

  output_keys: Tuple[str, ...] = ()

  def __init__(self, params: ServingParams, model: tf_keras.Model):
    """Creates the module.

    Args:
      params: ServingParams.
      model: a built tf_keras model of params.task taking [b, h, w, 3] images
        in [0, 255].

    Raises:
      ValueError: model compute dtype differs from params.dtype.
    """
    if not isinstance(params, ServingParams):
      raise TypeError(f"params must be a ServingParams, got "
                      f"{type(params).__name__}.")
    if not isinstance(model, tf_keras.Model):
      raise TypeError(f"model must be a tf_keras.Model, got "
                      f"{type(model).__name__}.")
    compute_dtype = tf.as_dtype(model.compute_dtype).name
    if compute_dtype != params.dtype:
      raise ValueError(
          f"The model computes in {compute_dtype} but params.dtype is "
          f"{params.dtype!r}; build the model inside "
          f"compute_dtype_scope({params.dtype!r}).")
    if not model.built or not model.variables:
      raise ValueError("model must be built (call it once) before export.")
    super().__init__(params, model, inference_step=_inference_step)
    # Keep the Keras object out of the SavedModel object graph: saving a
    # Keras model re-traces every layer for Keras-specific metadata, which a
    # service that loads with plain TensorFlow never uses. Its variables are
    # tracked through a plain list instead.
    del self.model
    object.__setattr__(self, "model", model)
    self.model_variables = list(model.variables)
    # Held in a plain dict, not as an attribute: saving writes every
    # tf.function attribute as an object of its own and traces it once more
    # (the whole model again); the signatures already hold its graph.
    # Traced without the fused attention kernel, so the SavedModel holds
    # only standard TensorFlow ops and loads without this package.
    object.__setattr__(self, "_functions", {
        "serve": tf.function(
            fused_attention.without_fused(self.serve), input_signature=[
                tf.TensorSpec([None, None, None, 3], tf.uint8)])
    })

  # --------------------------------------------------------------- serving
  @abc.abstractmethod
  def serve(self, images: tf.Tensor) -> Dict[str, tf.Tensor]:
    """Outputs of checked uint8 [batch, height, width, 3] images."""

  def _serve_images(self, images: tf.Tensor) -> Dict[str, tf.Tensor]:
    """`serve` as one traced function shared by all signatures."""
    return self._functions["serve"](images)

  def _output_specs(self) -> Dict[str, tf.TensorSpec]:
    """Specs of the `serve` outputs, batch axis included."""
    outputs = self._functions["serve"].get_concrete_function(
    ).structured_outputs
    return {k: tf.TensorSpec(v.shape, v.dtype) for k, v in outputs.items()}

  def _with_size(self, outputs, images):
    outputs = dict(outputs)
    size = tf.shape(images)[1:3]
    outputs["image_size"] = tf.tile(size[tf.newaxis], [tf.shape(images)[0],
                                                       1])
    return outputs

  def inference_from_image_tensors(self, images: tf.Tensor
                                  ) -> Dict[str, tf.Tensor]:
    """Signature body of `serving_default`: uint8 [b, h, w, 3] images."""
    images = check_images(images)
    return self._with_size(self._serve_images(images), images)

  def _decode(self, encoded: tf.Tensor) -> tf.Tensor:
    checks = []
    if self.params.max_pixels is not None:
      pixels = declared_pixels(encoded)
      checks = [
          tf.debugging.Assert(pixels >= 0, [
              "unsupported image format: expected JPEG, PNG, GIF or BMP "
              "(the size is read from the header before decoding)"]),
          tf.debugging.Assert(pixels <= self.params.max_pixels, [
              "refused: the image header declares", pixels,
              "pixels, above the limit of", self.params.max_pixels,
              "(max_pixels); not decoded"])]
    with tf.control_dependencies(checks):
      encoded = tf.identity(encoded)
    image = tf.io.decode_image(encoded, channels=3, dtype=tf.uint8,
                               expand_animations=False)
    image.set_shape([None, None, 3])
    return image

  def _serve_encoded(self, encoded: tf.Tensor) -> Dict[str, tf.Tensor]:
    """Decodes a [n] batch of encoded images and serves them."""
    encoded = tf.convert_to_tensor(encoded)
    if encoded.dtype != tf.string:
      raise TypeError(f"encoded images must be a string tensor, got dtype "
                      f"{encoded.dtype.name}.")
    check = tf.debugging.Assert(
        tf.logical_and(tf.equal(tf.rank(encoded), 1),
                       tf.size(encoded) >= 1),
        ["encoded images must be a non-empty [batch] string tensor; got "
         "shape", tf.shape(encoded)], summarize=8)
    with tf.control_dependencies([check]):
      encoded = tf.reshape(encoded, [-1])
    count = tf.shape(encoded)[0]
    images = tf.TensorArray(tf.uint8, size=count, infer_shape=False,
                            element_shape=tf.TensorShape([None, None, 3]))
    sizes = tf.TensorArray(tf.int32, size=count,
                           element_shape=tf.TensorShape([2]))

    def decode_body(i, images, sizes):
      image = self._decode(encoded[i])
      return i + 1, images.write(i, image), sizes.write(i,
                                                        tf.shape(image)[:2])

    _, images, sizes = tf.while_loop(lambda i, *_: i < count, decode_body,
                                     (0, images, sizes))
    sizes = sizes.stack()
    same_size = tf.reduce_all(tf.equal(sizes, sizes[0]))

    def batched():
      stacked = images.stack()
      stacked.set_shape([None, None, None, 3])
      return self._serve_images(stacked)

    def one_by_one():
      max_size = tf.reduce_max(sizes, axis=0)
      specs = {k: tf.TensorSpec(v.shape[1:], v.dtype)
               for k, v in self._output_specs().items()}

      def serve_one(i):
        image = images.read(i)
        image.set_shape([None, None, 3])
        out = self._serve_images(image[tf.newaxis])
        padded = {}
        for key, value in out.items():
          value = value[0]
          if key in _PIXEL_KEYS:
            pad = max_size - tf.shape(value)[:2]
            paddings = tf.concat(
                [[[0, pad[0]], [0, pad[1]]],
                 tf.zeros([value.shape.rank - 2, 2], tf.int32)], axis=0)
            fill = INT_PAD_VALUE if value.dtype.is_integer else FLOAT_PAD_VALUE
            value = tf.pad(value, paddings, constant_values=fill)
          padded[key] = value
        return padded

      # One image at a time keeps the memory of a single forward pass.
      return tf.map_fn(serve_one, tf.range(count), fn_output_signature=specs,
                       parallel_iterations=1)

    outputs = tf.cond(same_size, batched, one_by_one)
    outputs["image_size"] = sizes
    return outputs

  def inference_from_image_bytes(self, encoded_images: tf.Tensor
                                ) -> Dict[str, tf.Tensor]:
    """Signature body of `serve_image_bytes`: [b] encoded image strings."""
    return self._serve_encoded(encoded_images)

  def inference_from_tf_example(self, serialized_examples: tf.Tensor
                               ) -> Dict[str, tf.Tensor]:
    """Signature body of `serve_tf_example`: [b] serialized tf.Examples."""
    key = self.params.image_feature_key
    parsed = tf.io.parse_example(
        tf.reshape(serialized_examples, [-1]),
        {key: tf.io.FixedLenFeature([], tf.string)})
    return self._serve_encoded(parsed[key])

  def get_inference_signatures(
      self, function_keys: Mapping[str, str]) -> Dict[str, Any]:
    """Concrete functions of the requested signatures.

    Args:
      function_keys: {function key: signature name}; function keys are
        "image_tensor", "image_bytes", "tf_example".

    Returns:
      {signature name: concrete function}.
    """
    functions = {
        "image_tensor": (self.inference_from_image_tensors,
                         tf.TensorSpec(None, tf.uint8,
                                       name=INPUT_NAMES["image_tensor"])),
        "image_bytes": (self.inference_from_image_bytes,
                        tf.TensorSpec([None], tf.string,
                                      name=INPUT_NAMES["image_bytes"])),
        "tf_example": (self.inference_from_tf_example,
                       tf.TensorSpec([None], tf.string,
                                     name=INPUT_NAMES["tf_example"])),
    }
    signatures = {}
    for key, name in function_keys.items():
      if key not in functions:
        raise ValueError(f"Unknown signature function key {key!r}; expected "
                         f"one of {sorted(functions)}.")
      fn, spec = functions[key]
      signatures[name] = tf.function(fn).get_concrete_function(spec)
    return signatures

  # -------------------------------------------------------------- metadata
  def num_classes(self) -> int:
    key = "probabilities" if self.params.task == "classification" else (
        "semantic_probs")
    return int(self._output_specs()[key].shape[-1])

  def serving_config(self) -> Dict[str, Any]:
    """JSON-ready description of what the export computes."""
    return {
        "format_version": SERVING_CONFIG_VERSION,
        "task": self.params.task,
        "params": self.params.to_dict(),
        "num_classes": self.num_classes(),
        "outputs": list(self.output_keys) + ["image_size"],
        "pad_values": {"int": INT_PAD_VALUE, "float": FLOAT_PAD_VALUE},
    }


def _inference_step(images, model=None):
  return model(images, training=False)


def _semantic_tta(model_fn, images, scales, flip):
  """Mean softmax over scales and mirroring, at the input size (float32)."""
  size = tf.shape(images)[1:3]
  total, passes = None, 0
  for scale in scales:
    scaled = images
    if scale != 1.0:
      scaled_size = tf.maximum(tf.cast(tf.round(
          tf.cast(size, tf.float32) * scale), tf.int32), 1)
      scaled = tf.cast(tf.round(_resize_to(images, scaled_size)), tf.uint8)
    for mirrored in ((False, True) if flip else (False,)):
      x = tf.reverse(scaled, axis=[2]) if mirrored else scaled
      logits = tf.cast(model_fn(x)["semantic_logits"], tf.float32)
      if mirrored:
        logits = tf.reverse(logits, axis=[2])
      probs = tf.nn.softmax(_resize_to(logits, size), axis=-1)
      total = probs if total is None else total + probs
      passes += 1
  return total / passes


def at_input_size(outputs: Mapping[str, tf.Tensor],
                   size: tf.Tensor) -> Dict[str, tf.Tensor]:
  """Panoptic model outputs (float32) at the input size `size` = (h, w).

  Outputs already at the input size pass through untouched (so the result
  is exactly the model's); a model that predicts at another resolution gets
  its logits and heatmap resized bilinearly and its offsets, which are in
  pixels of its own grid, also multiplied by the resize ratio of each axis.
  """
  outputs = {k: tf.cast(outputs[k], tf.float32)
             for k in ("semantic_logits", "center_heatmap", "offset_map")}
  out_size = tf.shape(outputs["semantic_logits"])[1:3]

  def resized():
    ratio = tf.cast(size, tf.float32) / tf.cast(out_size, tf.float32)
    result = {k: _resize_to(v, size) for k, v in outputs.items()}
    result["offset_map"] = result["offset_map"] * ratio
    return result

  return tf.cond(tf.reduce_all(tf.equal(out_size, size)),
                 lambda: dict(outputs), resized)


class PanopticExportModule(ImageExportModule):
  """Panoptic-DeepLab outputs and pure-TF post-processing."""

  output_keys = _PANOPTIC_KEYS

  def __init__(self, params: ServingParams, model: tf_keras.Model,
               post_processor: post_processing.PanopticDeepLabPostProcessor):
    """Creates the module.

    Args:
      params: ServingParams with task "panoptic".
      model: model returning semantic_logits, center_heatmap, offset_map.
      post_processor: a PanopticDeepLabPostProcessor.
    """
    if params.task != "panoptic":
      raise ValueError(f"PanopticExportModule needs params.task 'panoptic', "
                       f"got {params.task!r}.")
    if not isinstance(post_processor,
                      post_processing.PanopticDeepLabPostProcessor):
      raise TypeError(f"post_processor must be a PanopticDeepLabPostProcessor"
                      f", got {type(post_processor).__name__}.")
    num_classes = getattr(model, "num_classes", None)
    if num_classes is not None and num_classes != post_processor.num_classes:
      raise ValueError(f"The model predicts {num_classes} classes but the "
                       f"post-processor expects "
                       f"{post_processor.num_classes}.")
    # Set before the base class builds the tf.function over `serve`.
    object.__setattr__(self, "_post_processor", post_processor)
    super().__init__(params, model)

  @property
  def post_processor(self):
    return self._post_processor

  def serve(self, images: tf.Tensor) -> Dict[str, tf.Tensor]:
    """Model and post-processing on checked uint8 [b, h, w, 3] images."""
    if self.params.uses_test_time_augmentation:
      outputs = test_time_augmentation.multi_scale_flip_inference(
          self.inference_step, images, scales=self.params.scales,
          flip=self.params.flip)
      semantic_probs = outputs["semantic_probs"]
    else:
      outputs = at_input_size(self.inference_step(images),
                               tf.shape(images)[1:3])
      semantic_probs = tf.nn.softmax(outputs["semantic_logits"], axis=-1)
    result = self._post_processor(outputs)
    return {
        "panoptic_pred": result["panoptic_pred"],
        "semantic_pred": result["semantic_pred"],
        "instance_pred": result["instance_pred"],
        "semantic_probs": semantic_probs,
        "center_heatmap": tf.cast(outputs["center_heatmap"], tf.float32),
        "offset_map": tf.cast(outputs["offset_map"], tf.float32),
        "instance_scores": result["instance_scores"],
        "instance_centers": result["instance_centers"],
    }

  def serving_config(self) -> Dict[str, Any]:
    config = super().serving_config()
    pp = self._post_processor.get_config()
    config["post_processor"] = pp
    config["label_divisor"] = pp["label_divisor"]
    config["ignore_label"] = pp["ignore_label"]
    config["thing_class_ids"] = list(pp["thing_class_ids"])
    return config


class SemanticExportModule(ImageExportModule):
  """Per-pixel class probabilities and argmax at the input size."""

  output_keys = _SEMANTIC_KEYS

  def serve(self, images: tf.Tensor) -> Dict[str, tf.Tensor]:
    """Model on checked uint8 [b, h, w, 3] images."""
    if self.params.uses_test_time_augmentation:
      probs = _semantic_tta(self.inference_step, images, self.params.scales,
                            self.params.flip)
    else:
      logits = tf.cast(self.inference_step(images)["semantic_logits"],
                       tf.float32)
      # Models that predict at a lower resolution are brought to the input.
      logits = _resize_to(logits, tf.shape(images)[1:3])
      probs = tf.nn.softmax(logits, axis=-1)
    return {
        "semantic_pred": tf.argmax(probs, axis=-1, output_type=tf.int32),
        "semantic_probs": probs,
    }


class ClassificationExportModule(ImageExportModule):
  """Logits, probabilities and the top class per image."""

  output_keys = _CLASSIFICATION_KEYS

  def serve(self, images: tf.Tensor) -> Dict[str, tf.Tensor]:
    """Model on checked uint8 [b, h, w, 3] images (resized if asked)."""
    x = images
    if self.params.input_size is not None:
      x = _resize_to(tf.cast(images, tf.float32), self.params.input_size)
    logits = tf.cast(self.inference_step(x)["logits"], tf.float32)
    return {
        "logits": logits,
        "probabilities": tf.nn.softmax(logits, axis=-1),
        "classes": tf.argmax(logits, axis=-1, output_type=tf.int32),
    }


def build_export_module(
    params: ServingParams,
    model: tf_keras.Model,
    post_processor: Union[None, Mapping[str, Any],
                          post_processing.PanopticDeepLabPostProcessor] = None
) -> ImageExportModule:
  """Returns the export module of params.task.

  Args:
    params: ServingParams.
    model: the built model.
    post_processor: panoptic only: a PanopticDeepLabPostProcessor or its
      constructor arguments (thing_class_ids, num_classes, label_divisor,
      ignore_label, center_threshold, nms_kernel, keep_k_centers,
      stuff_area_limit).

  Raises:
    ValueError: a post-processor missing for a panoptic model or given for
      another task.
  """
  if params.task == "panoptic":
    if post_processor is None:
      raise ValueError("A panoptic export needs post_processor (a "
                       "PanopticDeepLabPostProcessor or its arguments).")
    if isinstance(post_processor, Mapping):
      post_processor = post_processing.PanopticDeepLabPostProcessor(
          **post_processor)
    return PanopticExportModule(params, model, post_processor)
  if post_processor is not None:
    raise ValueError(f"post_processor is only for panoptic models, got one "
                     f"for task {params.task!r}.")
  if params.task == "semantic":
    return SemanticExportModule(params, model)
  return ClassificationExportModule(params, model)


def metadata_dict(dataset_metadata) -> Optional[Dict[str, Any]]:
  if dataset_metadata is None:
    return None
  if isinstance(dataset_metadata, metadata_lib.DatasetMetadata):
    return dataset_metadata.to_dict()
  if isinstance(dataset_metadata, Mapping):
    return metadata_lib.DatasetMetadata.from_dict(dataset_metadata).to_dict()
  raise TypeError(f"dataset_metadata must be a DatasetMetadata or its dict, "
                  f"got {type(dataset_metadata).__name__}.")


def _check_metadata(config: Mapping[str, Any],
                    meta: Optional[Mapping[str, Any]]) -> None:
  """Raises if the dataset metadata contradicts the exported model."""
  if meta is None:
    return
  if meta["num_classes"] != config["num_classes"]:
    raise ValueError(f"dataset_metadata has {meta['num_classes']} classes but "
                     f"the model predicts {config['num_classes']}.")
  if config["task"] == "panoptic":
    mismatched = [
        key for key in ("label_divisor", "ignore_label")
        if int(meta[key]) != int(config[key])
    ]
    if sorted(meta["thing_class_ids"]) != sorted(config["thing_class_ids"]):
      mismatched.append("thing_class_ids")
    if mismatched:
      raise ValueError(
          f"dataset_metadata and the post-processor disagree on "
          f"{mismatched}: metadata "
          f"{ {k: meta[k] for k in mismatched} }, post-processor "
          f"{ {k: config[k] for k in mismatched} }.")


def read_serving_config(export_dir: str) -> Dict[str, Any]:
  """Reads the JSON description written beside an export.

  Raises:
    FileNotFoundError: the export has no description (not written here).
  """
  path = os.path.join(export_dir, SERVING_CONFIG_DIR, SERVING_CONFIG_FILENAME)
  if not os.path.isfile(path):
    raise FileNotFoundError(
        f"{path} not found; {export_dir!r} was not exported by "
        f"tools/export_saved_model.py (or is not a SavedModel directory).")
  with open(path) as f:
    return json.load(f)


def export_saved_model(
    module: ImageExportModule,
    export_dir: str,
    *,
    checkpoint_path: Optional[str] = None,
    function_keys: Sequence[str] = ("image_tensor", "image_bytes",
                                    "tf_example"),
    dataset_metadata=None,
    extra_config: Optional[Mapping[str, Any]] = None,
    overwrite: bool = False) -> str:
  """Writes the SavedModel of `module` to `export_dir`.

  The export is written to a temporary folder beside `export_dir` and moved
  into place when complete, so a failed export leaves nothing half-written.

  Args:
    module: from `build_export_module`.
    export_dir: output folder; must not exist (or be empty) unless overwrite.
    checkpoint_path: optional checkpoint file or folder (latest checkpoint)
      holding `model=` (Model Garden trainer layout); every model variable
      must be restored from it.
    function_keys: which signatures to write (see SIGNATURE_NAMES).
    dataset_metadata: optional DatasetMetadata (or its dict): classes,
      colors and original category ids, stored in the export description.
    extra_config: more JSON-ready entries for the description (e.g. the
      model name and builder overrides).
    overwrite: replace an existing non-empty export_dir.

  Returns:
    export_dir.
  """
  function_keys = list(function_keys)
  if not function_keys or len(set(function_keys)) != len(function_keys):
    raise ValueError(f"function_keys must be distinct and non-empty, got "
                     f"{function_keys}.")
  unknown = [k for k in function_keys if k not in SIGNATURE_NAMES]
  if unknown:
    raise ValueError(f"Unknown function_keys {unknown}; expected some of "
                     f"{sorted(SIGNATURE_NAMES)}.")
  if "image_tensor" not in function_keys:
    raise ValueError("function_keys must include 'image_tensor' (the "
                     "serving_default signature).")
  export_dir = os.path.abspath(export_dir)
  check_replaceable_export_dir(export_dir, overwrite)
  if checkpoint_path is not None:
    checkpoint_path = resolve_checkpoint(checkpoint_path)
  meta = metadata_dict(dataset_metadata)
  config = module.serving_config()
  _check_metadata(config, meta)
  config["signatures"] = {
      SIGNATURE_NAMES[k]: {"function_key": k, "input": INPUT_NAMES[k]}
      for k in function_keys
  }
  config["dataset"] = meta
  config["checkpoint_path"] = checkpoint_path
  if extra_config:
    config.update(dict(extra_config))


  def write(tmp_dir):
    export_base.export(
        module, {k: SIGNATURE_NAMES[k] for k in function_keys}, tmp_dir,
        checkpoint_path=checkpoint_path, timestamped=False)
    extra = os.path.join(tmp_dir, SERVING_CONFIG_DIR)
    os.makedirs(extra, exist_ok=True)
    with open(os.path.join(extra, SERVING_CONFIG_FILENAME), "w") as f:
      json.dump(config, f, indent=1, sort_keys=True)

  io_lib.write_atomically(export_dir, write, folder=True)
  return export_dir


# What a SavedModel folder of export_saved_model may hold.
_EXPORT_ENTRIES = frozenset({"saved_model.pb", "saved_model.pbtxt",
                             "variables", "assets", SERVING_CONFIG_DIR,
                             "fingerprint.pb", "keras_metadata.pb"})


def check_replaceable_export_dir(export_dir: str, overwrite: bool) -> None:
  """Refuses an export_dir whose content an export must not replace.

  A missing or empty folder is fine. With overwrite, a folder holding a
  previous export (saved_model.pb and variables/, nothing but export
  files) is replaced; anything else (a file, a folder of other files) is
  refused, so that --overwrite never deletes what is not an export.

  Raises:
    errors.UserError: naming the folder and why.
  """
  from axial_deeplab_tf.utils import errors  # pylint: disable=g-import-not-at-top
  if not os.path.lexists(export_dir):
    return
  if os.path.islink(export_dir) or not os.path.isdir(export_dir):
    raise errors.UserError("--export_dir is not a folder", export_dir,
                           "an existing file or link; choose a folder")
  entries = set(os.listdir(export_dir))
  if not entries:
    return
  if not overwrite:
    raise errors.UserError("--export_dir is not empty", export_dir,
                           "choose another folder, or pass --overwrite to "
                           "replace a previous export")
  is_export = ("saved_model.pb" in entries and
               os.path.isdir(os.path.join(export_dir, "variables")))
  others = sorted(entries - _EXPORT_ENTRIES)
  if not is_export or others:
    why = (f"it holds {others[:5]} besides an export" if is_export and others
           else "it holds no saved_model.pb with variables/")
    raise errors.UserError(
        "--overwrite refused: not a previous export", export_dir,
        f"{why}; --overwrite replaces only a SavedModel folder or an empty "
        f"one, remove the folder yourself if it should go")


def export_loaded_model(loaded: LoadedModel,
                        export_dir: str,
                        *,
                        scales: Sequence[float] = (1.0,),
                        flip: bool = False,
                        function_keys: Sequence[str] = (
                            "image_tensor", "image_bytes", "tf_example"),
                        post_processor_args: Optional[Mapping[str,
                                                              Any]] = None,
                        overwrite: bool = False) -> str:
  """Exports a LoadedModel (what tools/export_saved_model.py does).

  Args:
    loaded: from `load_model`.
    export_dir: output folder.
    scales, flip: test-time augmentation.
    function_keys: signatures to write.
    post_processor_args: panoptic zoo models: `panoptic_post_processor`
      keyword arguments (thing_class_ids, label_divisor, ignore_label,
      center_threshold, nms_kernel, keep_k_centers, stuff_area_limit).
      Experiments take their post-processor from the task.
    overwrite: replace an existing export_dir.

  Returns:
    export_dir.
  """
  params = ServingParams(task=loaded.task, scales=tuple(scales), flip=flip,
                         dtype=loaded.dtype, input_size=loaded.input_size)
  post_processor = resolve_post_processor(loaded, post_processor_args)
  module = build_export_module(params, loaded.model, post_processor)
  return export_saved_model(
      module, export_dir, function_keys=function_keys,
      dataset_metadata=loaded.dataset_metadata,
      extra_config={"model": loaded.description,
                    "checkpoint_path": loaded.description.get(
                        "checkpoint_path")},
      overwrite=overwrite)
