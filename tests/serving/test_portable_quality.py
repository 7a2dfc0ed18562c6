"""Deployed formats keep the panoptic quality on quickstart-style images.

A small model with fixed, hand-set weights segments the synthetic shapes
dataset (the quickstart's data, `data/synthetic.py`, here 64x64): each
pixel's class is the nearest class color (a wide ReLU layer that carries
the color, then a linear layer holding 2 c.x - |c|^2 per class), centers
are the peaks of the blurred thing probability and offsets are zero. Its
layers hold more than 1024 weights each, so the int8 (dynamic range)
LiteRT file really is quantized. Exported to SavedModel, ONNX and LiteRT
float32 / int8, it runs on validation images with ground truth:

- float32 semantic logits within 1e-4 (relative to the largest logit) of
  the model, panoptic maps identical to the SavedModel's;
- PQ of every format against the ground truth, by the project's evaluator
  (COCO panopticapi rules): int8 within 0.02 of float32.
"""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from axial_deeplab_tf import evaluation
from axial_deeplab_tf.data import synthetic
from axial_deeplab_tf.evaluation import coco_panoptic_format as coco
from axial_deeplab_tf.ops import fused_attention
from axial_deeplab_tf.serving import export_module as em
from axial_deeplab_tf.serving import portable_export as pe
from axial_deeplab_tf.serving import predictor

SIZE = (64, 64)
NUM_IMAGES = 4
CATEGORIES = list(synthetic.CATEGORIES)  # Train id = position.
THINGS = [k for k, c in enumerate(CATEGORIES) if c["isthing"]]
POST = dict(thing_class_ids=THINGS, num_classes=len(CATEGORIES),
            label_divisor=256, ignore_label=255, stuff_area_limit=16,
            nms_kernel=5, keep_k_centers=16, center_threshold=0.3)
COPIES = 64  # Copies of the +-color channels in the hidden layer.


class NearestColorPanoptic(tf_keras.Model):
  """Panoptic outputs from class colors (weights set by hand)."""

  def __init__(self, colors, thing_ids, **kwargs):
    super().__init__(**kwargs)
    colors = np.asarray(colors, np.float32) / 127.5 - 1.0  # [K, 3]
    signs = np.concatenate([np.eye(3), -np.eye(3)], axis=1)  # [3, 6]
    hidden = np.tile(signs, (1, COPIES))  # relu(x) - relu(-x) = x.
    # x = (sum of the + copies - sum of the - copies) / COPIES.
    unpack = np.tile(np.concatenate([np.eye(3), -np.eye(3)]),
                     (COPIES, 1)) / COPIES  # [6 * COPIES, 3]
    scale = 8.0
    kernel = unpack @ (2.0 * scale * colors.T)  # [6 * COPIES, K]
    bias = -scale * np.sum(colors ** 2, axis=1)
    self.hidden = tf_keras.layers.Conv2D(
        hidden.shape[1], 1, activation="relu",
        kernel_initializer=tf_keras.initializers.Constant(hidden[None, None]),
        bias_initializer="zeros")
    self.classes = tf_keras.layers.Conv2D(
        len(colors), 1,
        kernel_initializer=tf_keras.initializers.Constant(kernel[None, None]),
        bias_initializer=tf_keras.initializers.Constant(bias))
    self.is_thing = np.zeros([len(colors)], np.float32)
    self.is_thing[list(thing_ids)] = 1.0

  def call(self, images, training=None):
    x = tf.cast(images, tf.float32) / 127.5 - 1.0
    logits = self.classes(self.hidden(x))
    things = tf.reduce_sum(tf.nn.softmax(logits) * self.is_thing, axis=-1,
                           keepdims=True)
    heat = tf.nn.avg_pool2d(tf.nn.avg_pool2d(things, 7, 1, "SAME"), 7, 1,
                            "SAME")
    return {"semantic_logits": logits, "center_heatmap": heat,
            "offset_map": tf.concat([heat, heat], axis=-1) * 0.0}


def _validation_set(folder):
  paths = synthetic.write_split(str(folder), "val", NUM_IMAGES, SIZE, seed=3)
  annotations = coco.read_json(paths["panoptic_json"])
  names = {a["id"]: a["file_name"] for a in annotations["images"]}
  data = []
  for annotation in annotations["annotations"]:
    image = predictor.read_image(
        f"{paths['image_dir']}/{names[annotation['image_id']]}")
    truth = coco.read_annotation(paths["panoptic_dir"], annotation,
                                 CATEGORIES)
    data.append((image, truth))
  return data


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  root = tmp_path_factory.mktemp("quality")
  tf_keras.utils.set_random_seed(3)
  model = NearestColorPanoptic([c["color"] for c in CATEGORIES], THINGS)
  model(tf.zeros([1, 8, 8, 3], tf.uint8))
  post = em.build_export_module(em.ServingParams(task="panoptic"), model,
                                POST).post_processor
  loaded = em.LoadedModel(model=model, task="panoptic", dtype="float32",
                          post_processor=post, dataset_metadata=None,
                          input_size=None, description={"model": "colors"})
  paths = {"saved": em.export_loaded_model(
      loaded, str(root / "saved"), function_keys=["image_tensor"])}
  for fmt, quant in (("onnx", "float32"), ("tflite", "float32"),
                     ("tflite", "int8")):
    paths[f"{fmt}_{quant}"] = pe.export_portable(
        loaded, str(root / f"model_{quant}.{fmt}"), fmt=fmt,
        input_size=SIZE, quantization=quant)
  return model, paths, _validation_set(root / "data")


def _quality(data, maps):
  metric = evaluation.PanopticQuality(len(CATEGORIES), THINGS)
  for (_, truth), panoptic in zip(data, maps):
    metric.update(truth, panoptic)
  return metric.result()["pq"]


def _relative(got, expected):
  return float(np.abs(got - expected).max() / np.abs(expected).max())


@pytest.mark.slow
def test_exports_keep_maps_and_panoptic_quality(setup):
  model, paths, data = setup
  network = tf.function(fused_attention.without_fused(
      lambda x: model(x, training=False)))
  saved = predictor.load_predictor(paths["saved"])
  reference = [saved.predict(image)["panoptic_pred"] for image, _ in data]
  saved_pq = _quality(data, reference)
  # The hand-set model segments the scenes (so the PQ comparison below
  # compares real segmentations, things included).
  assert saved_pq > 0.5, saved_pq
  assert sum(len(np.unique(m[np.isin(m // 256, THINGS)])) for m in
             reference) >= NUM_IMAGES * 2
  quality = {}
  logits = {}
  for key in ("onnx_float32", "tflite_float32", "tflite_int8"):
    runner = predictor.load_predictor(paths[key])
    maps, logits[key] = [], []
    for image, _ in data:
      got = runner.network_outputs(image)["semantic_logits"]
      logits[key].append(got)
      if key.endswith("float32"):
        want = network(image[None])["semantic_logits"].numpy()
        assert _relative(got, want) <= 1e-4, key
      maps.append(runner.predict(image)["panoptic_pred"])
    if key.endswith("float32"):
      for got, want in zip(maps, reference):
        np.testing.assert_array_equal(got, want, err_msg=key)
    quality[key] = _quality(data, maps)
  assert quality["onnx_float32"] == quality["tflite_float32"] == saved_pq
  # int8 is quantized (its logits move), yet keeps the quality.
  moved = max(_relative(a, b) for a, b in zip(logits["tflite_int8"],
                                              logits["tflite_float32"]))
  assert moved > 1e-4, moved
  assert abs(quality["tflite_int8"] - quality["tflite_float32"]) <= 0.02, (
      quality)
