r"""LiteRT (.tflite) and ONNX exports of the zoo models, and their runner.

The exported file holds the network only, at a fixed input size chosen at
export: uint8 `images` [1, height, width, 3] in, the model's float32
outputs out (panoptic: semantic_logits, center_heatmap, offset_map;
semantic: semantic_logits; classification: logits). LiteRT files use
built-in ops only (no Flex, no custom op); ONNX files are written by
tf2onnx (opset 17). Post-processing is a separate small step that
`PortablePredictor` runs with TensorFlow: the same functions the SavedModel
signatures run (the panoptic post-processor, softmax, argmax, resizing to
the image size), so its outputs are those of `serving_default`.

A JSON description is written beside the file (`<file>.json`): format,
quantization, input size, task, classes, post-processor settings and
dataset metadata, like a SavedModel export's `axial_deeplab_serving.json`.

Images of another size than the export's are resized (bilinear) to it
before the network and its outputs are resized back (offsets scaled), as
the SavedModel does for models that predict at another resolution.

Quantization (LiteRT): "float32"; "float16" (weights stored as float16,
computed in float32); "int8" (dynamic range: int8 weights, activations
quantized on the fly). ONNX exports are float32.

Command line (tools/export_tflite.py, tools/export_onnx.py):

  python tools/export_tflite.py --model=axial_deeplab_s --set=... \
      --checkpoint_path=RUN --input_size=513,513 --quantization=int8 \
      --output=/tmp/model.tflite
"""

import json
import os
import sys
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

from absl import flags

from axial_deeplab_tf.serving import cli
from axial_deeplab_tf.utils import io as io_lib

FORMATS = ("tflite", "onnx")
QUANTIZATIONS = ("float32", "float16", "int8")
ONNX_OPSET = 17
CONFIG_SUFFIX = ".json"
INPUT_NAME = "images"

_NETWORK_OUTPUTS = {
    "panoptic": ("semantic_logits", "center_heatmap", "offset_map"),
    "semantic": ("semantic_logits",),
    "classification": ("logits",),
}


def _tf():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf


def check_input_size(input_size) -> Tuple[int, int]:
  """(height, width) as two positive ints."""
  try:
    size = tuple(int(v) for v in input_size)
  except (TypeError, ValueError) as e:
    raise ValueError(f"input_size must be (height, width), got "
                     f"{input_size!r}.") from e
  if len(size) != 2 or min(size) < 1:
    raise ValueError(f"input_size must be two positive ints (height, "
                     f"width), got {input_size!r}.")
  return size


def network_function(model, task: str, input_size: Sequence[int]):
  """The concrete function exported: uint8 [1, h, w, 3] -> float32 dict.

  Traced without the fused attention kernel (standard ops only).
  """
  tf = _tf()
  from axial_deeplab_tf.ops import fused_attention  # pylint: disable=g-import-not-at-top
  height, width = check_input_size(input_size)
  keys = _NETWORK_OUTPUTS[task]

  def network(images):
    outputs = model(images, training=False)
    return {k: tf.cast(outputs[k], tf.float32) for k in keys}

  fn = tf.function(fused_attention.without_fused(network), input_signature=[
      tf.TensorSpec([1, height, width, 3], tf.uint8, name=INPUT_NAME)])
  return fn, fn.get_concrete_function()


def convert_tflite(model, task: str, input_size: Sequence[int],
                   quantization: str = "float32") -> bytes:
  """The LiteRT flatbuffer of the network (built-in ops only)."""
  tf = _tf()
  if quantization not in QUANTIZATIONS:
    raise ValueError(f"quantization must be one of {QUANTIZATIONS}, got "
                     f"{quantization!r}.")
  _, concrete = network_function(model, task, input_size)
  converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete],
                                                              model)
  converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
  if quantization != "float32":
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
  if quantization == "float16":
    converter.target_spec.supported_types = [tf.float16]
  return converter.convert()


def convert_onnx(model, task: str, input_size: Sequence[int]) -> bytes:
  """The ONNX model (tf2onnx, opset ONNX_OPSET) of the network."""
  tf = _tf()
  try:
    import tf2onnx  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError("ONNX export needs tf2onnx and onnx: pip install "
                      "'axial_deeplab_tf[export]'.") from e
  fn, _ = network_function(model, task, input_size)
  height, width = check_input_size(input_size)
  proto, _ = tf2onnx.convert.from_function(
      fn, input_signature=[tf.TensorSpec([1, height, width, 3], tf.uint8,
                                         name=INPUT_NAME)],
      opset=ONNX_OPSET,
      custom_op_handlers={op: (_resize_to_sizes, []) for op in (
          "ResizeBilinear", "ResizeNearestNeighbor")})
  # Its "sizes" branch puts the sizes where the scales go (third input);
  # ONNX wants them fourth, after an empty scales input.
  int64 = {t.name for t in proto.graph.initializer if t.data_type == 7}
  for node in proto.graph.node:
    if node.op_type == "Resize" and len(node.input) == 3 and (
        node.input[2] in int64):
      sizes = node.input[2]
      node.input[2] = ""
      node.input.append(sizes)
  return proto.SerializeToString()


def _resize_to_sizes(ctx, node, name, args):  # pylint: disable=unused-argument
  """tf2onnx handler of ResizeBilinear / ResizeNearestNeighbor: by sizes.

  tf2onnx (1.17) turns a `tf.image.resize` to a static size into an ONNX
  Resize by float scales (out / in); ONNX Runtime floors in * scale, so an
  upsampling like 5 -> 9 (1.8 = 1.79999995 in float32) yields 8 and the
  model fails to load ("Can't merge shape info" at the decoder's
  concatenation) whenever a feature map has an odd size, e.g. at 513 x 513
  or 1025 x 2049. Its own handler takes the exact target `sizes` when the
  TensorFlow node has a "sizes" attribute, which this one adds.
  """
  import numpy as np  # pylint: disable=g-import-not-at-top
  import onnx  # pylint: disable=g-import-not-at-top
  from tf2onnx.onnx_opset import nn  # pylint: disable=g-import-not-at-top
  batch, _, _, channels = ctx.get_shape(node.input[0])
  output = node.output[0]
  node.attr["sizes"] = onnx.helper.make_attribute("sizes", 1)
  nn.Resize.version_11(ctx, node)
  # That branch writes sizes (1, 1, h, w): batch and channels are fixed
  # here (NCHW); -1 (unknown) would not be a size.
  resize = ctx.get_node_by_output(output).inputs[0]
  sizes = resize.inputs[2]
  value = np.array(sizes.get_tensor_value(as_list=True), np.int64)
  if batch < 1 or channels < 1:
    raise ValueError(f"Resize {node.name}: batch and channels must be "
                     f"static, got {(batch, channels)}.")
  value[:2] = (batch, channels)
  sizes.set_tensor_value(value)


def export_portable(loaded, output: str, *, fmt: str,
                    input_size: Sequence[int],
                    quantization: str = "float32",
                    post_processor_args: Optional[Mapping[str, Any]] = None,
                    overwrite: bool = False) -> str:
  """Writes a LiteRT or ONNX file of a LoadedModel and its description.

  Args:
    loaded: from `model_loading.load_model`.
    output: the .tflite or .onnx file to write.
    fmt: "tflite" or "onnx".
    input_size: (height, width) of the exported network.
    quantization: LiteRT only: "float32", "float16" or "int8".
    post_processor_args: panoptic zoo models: as for
      `export_module.export_loaded_model`.
    overwrite: replace existing files.

  Returns:
    output.
  """
  from axial_deeplab_tf.serving import export_module as em  # pylint: disable=g-import-not-at-top
  from axial_deeplab_tf.serving import model_loading  # pylint: disable=g-import-not-at-top
  if fmt not in FORMATS:
    raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}.")
  if fmt == "onnx" and quantization != "float32":
    raise ValueError(f"ONNX exports are float32; got quantization="
                     f"{quantization!r}.")
  if quantization not in QUANTIZATIONS:
    raise ValueError(f"quantization must be one of {QUANTIZATIONS}, got "
                     f"{quantization!r}.")
  if loaded.dtype != "float32":
    raise ValueError(f"LiteRT and ONNX exports take a float32 model, got "
                     f"dtype {loaded.dtype!r}.")
  size = check_input_size(input_size)
  config_path = output + CONFIG_SUFFIX
  for path in (output, config_path):
    if os.path.exists(path) and not overwrite:
      raise ValueError(f"output {path!r} exists; choose another name or "
                       f"pass overwrite=True (--overwrite).")
  # The description of the SavedModel export of the same model.
  module_params = em.ServingParams(task=loaded.task, dtype=loaded.dtype,
                                   input_size=loaded.input_size)
  post_processor = model_loading.resolve_post_processor(loaded,
                                                        post_processor_args)
  module = em.build_export_module(module_params, loaded.model,
                                  post_processor)
  config = module.serving_config()
  config.update({
      "format": fmt, "quantization": quantization,
      "input_size": list(size), "input": INPUT_NAME,
      "network_outputs": list(_NETWORK_OUTPUTS[loaded.task]),
      "dataset": em.metadata_dict(loaded.dataset_metadata),
      "model": loaded.description,
      "checkpoint_path": loaded.description.get("checkpoint_path"),
  })
  if fmt == "tflite":
    data = convert_tflite(loaded.model, loaded.task, size, quantization)
  else:
    data = convert_onnx(loaded.model, loaded.task, size)
  io_lib.write_text_atomically(output, data)
  io_lib.write_text_atomically(
      config_path, json.dumps(config, indent=1, sort_keys=True).encode())
  return output


def read_portable_config(path: str) -> Dict[str, Any]:
  """The description written beside a LiteRT / ONNX export."""
  config_path = path + CONFIG_SUFFIX
  if not os.path.isfile(config_path):
    raise FileNotFoundError(f"{config_path} not found; {path!r} was not "
                            f"written by tools/export_tflite.py or "
                            f"tools/export_onnx.py.")
  with open(config_path) as f:
    return json.load(f)


class NetworkRunner:
  """Runs the network of a .tflite (LiteRT) or .onnx (onnxruntime) file."""

  def __init__(self, path: str, num_threads: Optional[int] = None):
    self.path = path
    self.config = read_portable_config(path)
    self.format = self.config["format"]
    self.input_size = tuple(self.config["input_size"])
    if self.format == "tflite":
      try:
        from ai_edge_litert.interpreter import Interpreter  # pylint: disable=g-import-not-at-top
      except ImportError:  # Older setups: TensorFlow's own interpreter.
        Interpreter = _tf().lite.Interpreter  # pylint: disable=invalid-name
      self._interpreter = Interpreter(model_path=path,
                                      num_threads=num_threads)
      self._interpreter.allocate_tensors()
      self._runner = self._interpreter.get_signature_runner()
    elif self.format == "onnx":
      try:
        import onnxruntime  # pylint: disable=g-import-not-at-top
      except ImportError as e:
        raise ImportError("Running ONNX exports needs onnxruntime: pip "
                          "install 'axial_deeplab_tf[export]'.") from e
      options = onnxruntime.SessionOptions()
      if num_threads:
        options.intra_op_num_threads = num_threads
      self._session = onnxruntime.InferenceSession(
          path, options, providers=["CPUExecutionProvider"])
      self._input = self._session.get_inputs()[0].name
      self._outputs = [o.name for o in self._session.get_outputs()]
    else:
      raise ValueError(f"{path}: unknown format {self.format!r}.")

  def __call__(self, images):
    """uint8 [1, h, w, 3] numpy at the export size -> {name: float32}."""
    import numpy as np  # pylint: disable=g-import-not-at-top
    images = np.ascontiguousarray(images, np.uint8)
    if self.format == "tflite":
      return dict(self._runner(**{INPUT_NAME: images}))
    values = self._session.run(self._outputs, {self._input: images})
    return dict(zip(self._outputs, values))


class PortablePredictor:
  """`SavedModelPredictor`'s interface over a LiteRT or ONNX export.

  `predict(image)` resizes the image to the export's input size if needed,
  runs the network file, then the post-processing step (TensorFlow) at the
  image's own size, and returns what `serving_default` returns.
  """

  def __init__(self, path: str, num_threads: Optional[int] = None):
    tf = _tf()
    from axial_deeplab_tf.ops import post_processing  # pylint: disable=g-import-not-at-top
    self._tf = tf
    self.network = NetworkRunner(path, num_threads)
    self.config = self.network.config
    post_processor = None
    if self.task == "panoptic":
      post_processor = post_processing.PanopticDeepLabPostProcessor(
          **self.config["post_processor"])
    self._post_processor = post_processor
    self._post = tf.function(self._post_step)

  @property
  def task(self) -> str:
    return self.config["task"]

  def _post_step(self, outputs, size):
    """Post-processing of network outputs for an image of `size`."""
    from axial_deeplab_tf.serving import export_module as em  # pylint: disable=g-import-not-at-top
    tf = self._tf
    if self.task == "classification":
      logits = outputs["logits"]
      return {"logits": logits,
              "probabilities": tf.nn.softmax(logits, axis=-1),
              "classes": tf.argmax(logits, axis=-1, output_type=tf.int32)}
    if self.task == "semantic":
      logits = tf.image.resize(outputs["semantic_logits"], size)
      probs = tf.nn.softmax(logits, axis=-1)
      return {"semantic_pred": tf.argmax(probs, axis=-1,
                                         output_type=tf.int32),
              "semantic_probs": probs}
    outputs = em.at_input_size(outputs, size)
    result = self._post_processor(outputs)
    keys = ("panoptic_pred", "semantic_pred", "instance_pred",
            "instance_scores", "instance_centers")
    final = {k: result[k] for k in keys}
    final["semantic_probs"] = tf.nn.softmax(outputs["semantic_logits"],
                                            axis=-1)
    final["center_heatmap"] = outputs["center_heatmap"]
    final["offset_map"] = outputs["offset_map"]
    return final

  def network_outputs(self, image):
    """Raw network outputs for uint8 [h, w, 3] (resized to the export)."""
    import numpy as np  # pylint: disable=g-import-not-at-top
    tf = self._tf
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
      raise ValueError(f"image must be uint8 [height, width, 3], got dtype "
                       f"{image.dtype} and shape {image.shape}.")
    if image.shape[:2] != self.network.input_size:
      # As the SavedModel's classification export: bilinear, rounded.
      image = tf.cast(tf.round(tf.clip_by_value(tf.image.resize(
          image, self.network.input_size), 0, 255)), tf.uint8).numpy()
    return self.network(image[None])

  def predict(self, image) -> Dict[str, Any]:
    """Outputs for one uint8 [height, width, 3] image, batch axis removed."""
    tf = self._tf
    outputs = self.network_outputs(image)
    size = tf.constant(image.shape[:2], tf.int32)
    final = self._post({k: tf.constant(v) for k, v in outputs.items()}, size)
    final = {k: v.numpy()[0] for k, v in final.items()}
    final["image_size"] = size.numpy()
    return final


# ----------------------------------------------------------------- the CLI
def define_flags(fmt: str, flag_values: flags.FlagValues) -> None:
  cli.define_model_flags("without it the model keeps its initial weights.",
                         flag_values=flag_values)
  flags.DEFINE_string("dataset_metadata", None,
                      "metadata.json (or its folder) of the dataset, for "
                      "--model.", flag_values=flag_values)
  flags.DEFINE_string("output", None, f"Output .{fmt} file (a .json "
                      f"description is written beside it).",
                      flag_values=flag_values)
  flags.DEFINE_list("input_size", None, "Fixed input size height,width of "
                    "the exported network (other images are resized to "
                    "it).", flag_values=flag_values)
  if fmt == "tflite":
    flags.DEFINE_enum("quantization", "float32", list(QUANTIZATIONS),
                      "float32, float16 (weights) or int8 (dynamic range).",
                      flag_values=flag_values)
  flags.DEFINE_list("thing_class_ids", None,
                    "Panoptic --model without metadata: thing train ids.",
                    flag_values=flag_values)
  flags.DEFINE_integer("label_divisor", None, "Panoptic label divisor.",
                       flag_values=flag_values)
  flags.DEFINE_integer("ignore_label", None, "Panoptic ignore label.",
                       flag_values=flag_values)
  flags.DEFINE_float("center_threshold", None, "Post-processing: center "
                     "threshold.", flag_values=flag_values)
  flags.DEFINE_integer("nms_kernel", None, "Post-processing: NMS window.",
                       flag_values=flag_values)
  flags.DEFINE_integer("keep_k_centers", None, "Post-processing: center "
                       "slots.", flag_values=flag_values)
  flags.DEFINE_integer("stuff_area_limit", None, "Post-processing: "
                       "smallest stuff area.", flag_values=flag_values)
  flags.DEFINE_bool("overwrite", False, "Replace an existing --output.",
                    flag_values=flag_values)


def main(argv: Sequence[str], fmt: str) -> int:
  """Command line of tools/export_tflite.py (fmt "tflite") and
  tools/export_onnx.py ("onnx"); argv[0] is the program name."""
  if fmt not in FORMATS:
    raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}.")
  values = flags.FlagValues()
  define_flags(fmt, values)
  try:
    rest = values(list(argv))
  except flags.Error as e:
    return cli.usage_error(str(e))
  status = cli.check_usage(rest, values, required=("output", "input_size"),
                           model_flags=True)
  if status is not None:
    return status
  try:
    size = check_input_size(cli.parse_list("input_size", values.input_size,
                                           int, "two integers"))
    things = cli.parse_list("thing_class_ids", values.thing_class_ids, int,
                            "integers")
  except ValueError as e:
    return cli.report_error(e)
  try:
    loaded = cli.load_model_from_flags(
        values, dataset_metadata=values.dataset_metadata)
    post_processor_args = {
        "thing_class_ids": things,
        "label_divisor": values.label_divisor,
        "ignore_label": values.ignore_label,
        "center_threshold": values.center_threshold,
        "nms_kernel": values.nms_kernel,
        "keep_k_centers": values.keep_k_centers,
        "stuff_area_limit": values.stuff_area_limit,
    }
    output = export_portable(
        loaded, values.output, fmt=fmt, input_size=size,
        quantization=(values.quantization if fmt == "tflite" else
                      "float32"),
        post_processor_args=post_processor_args, overwrite=values.overwrite)
  except (ValueError, TypeError, OSError, AssertionError, ImportError) as e:
    return cli.report_error(e)
  if not values.checkpoint_path:
    print("warning: no --checkpoint_path; exported the initial weights.",
          file=sys.stderr)
  print(json.dumps({"output": output, "format": fmt,
                    "input_size": list(size),
                    "bytes": os.path.getsize(output)}, sort_keys=True))
  return 0
