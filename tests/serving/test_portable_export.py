"""LiteRT and ONNX exports agree with the SavedModel of the same model.

A tiny panoptic model with an AxialAttention2D (seeded random weights,
scaled batch-norm statistics) is exported once per format; its semantic
logits must match the model's in this process within 1e-4 (relative to
the largest logit) in float32, and the panoptic maps after the
post-processing step must equal the SavedModel's `serving_default`.
"""

import json

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from axial_deeplab_tf.ops import fused_attention
from axial_deeplab_tf.serving import export_module as em
from axial_deeplab_tf.serving import portable_export as pe
from axial_deeplab_tf.serving import predictor
from tests.serving import serving_utils as su

SIZE = (24, 20)
POST = dict(thing_class_ids=[2, 3], num_classes=4, label_divisor=256,
            ignore_label=255, stuff_area_limit=8, nms_kernel=3,
            keep_k_centers=16)


def _model():
  # Layers without a seed argument draw from the global generator: seeded
  # here so the model does not depend on what ran before in the process.
  tf_keras.utils.set_random_seed(5)
  model = su.built(su.TinyAxialPanoptic(4, seed=5,
                                        semantic_bias=(0., 0., 4., 4.)))
  rng = np.random.default_rng(5)
  for w in model.weights:
    if "moving_variance" in w.name or "gamma" in w.name:
      w.assign(rng.uniform(0.5, 1.5, w.shape))
    elif "moving_mean" in w.name or "beta" in w.name:
      w.assign(rng.normal(0.0, 0.3, w.shape))
  return model


# Its tests share one worker (pytest-xdist --dist=loadgroup), which exports
# once.
@pytest.fixture(scope="module")
def exports(tmp_path_factory):
  root = tmp_path_factory.mktemp("portable")
  model = _model()
  post = em.build_export_module(em.ServingParams(task="panoptic"), model,
                                POST).post_processor
  loaded = em.LoadedModel(model=model, task="panoptic", dtype="float32",
                          post_processor=post, dataset_metadata=None,
                          input_size=None, description={"model": "tiny"})
  paths = {"saved": em.export_loaded_model(
      loaded, str(root / "saved"), function_keys=["image_tensor"])}
  for fmt, quant in (("onnx", "float32"), ("tflite", "float32"),
                     ("tflite", "float16"), ("tflite", "int8")):
    paths[f"{fmt}_{quant}"] = pe.export_portable(
        loaded, str(root / f"model_{quant}.{fmt}"), fmt=fmt,
        input_size=SIZE, quantization=quant)
  return model, paths


def _images():
  rng = np.random.default_rng(7)
  return [su.scene(rng, *SIZE, rectangles=5) for _ in range(3)]


def _relative(got, expected):
  return float(np.abs(got - expected).max() / np.abs(expected).max())


@pytest.mark.slow
@pytest.mark.parametrize("key", ["onnx_float32", "tflite_float32"])
@pytest.mark.xdist_group("portable_exports")
def test_float32_exports_match_the_saved_model(exports, key):
  model, paths = exports
  saved = predictor.load_predictor(paths["saved"])
  portable = predictor.load_predictor(paths[key])
  assert isinstance(portable, pe.PortablePredictor)
  network = tf.function(fused_attention.without_fused(
      lambda x: model(x, training=False)))
  things = 0
  for image in _images():
    expected = network(image[None])
    raw = portable.network_outputs(image)
    for name in ("semantic_logits", "center_heatmap", "offset_map"):
      assert _relative(raw[name], expected[name].numpy()) <= 1e-4, name
    got, want = portable.predict(image), saved.predict(image)
    for name in ("panoptic_pred", "semantic_pred", "instance_pred"):
      np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    things += int(np.sum(want["instance_pred"] > 0))
    np.testing.assert_allclose(got["semantic_probs"], want["semantic_probs"],
                               atol=1e-5)
  assert things > 0  # The scenes hold instances: grouping was compared.


@pytest.mark.slow
@pytest.mark.xdist_group("portable_exports")
def test_litert_is_built_in_ops_only_and_quantized_variants_run(exports):
  _, paths = exports
  # (The converter leaves tensors under 1024 elements unquantized, so this
  # tiny model's three files compute alike; scripts/benchmark_deploy.py
  # measures quantization on the quickstart model.)
  reference = predictor.load_predictor(paths["tflite_float32"])
  for quant in ("float16", "int8"):
    runner = predictor.load_predictor(paths[f"tflite_{quant}"])
    config = json.loads(open(paths[f"tflite_{quant}"] + ".json").read())
    assert config["quantization"] == quant
    assert config["input_size"] == list(SIZE)
    for image in _images():
      got = runner.network_outputs(image)["semantic_logits"]
      want = reference.network_outputs(image)["semantic_logits"]
      assert _relative(got, want) <= (2e-3 if quant == "float16" else 0.1)
      out = runner.predict(image)
      assert out["panoptic_pred"].shape == SIZE
  # Built-in ops only: the converter was told so (it fails otherwise), and
  # no custom op name is in the file.
  for quant in ("float32", "float16", "int8"):
    data = open(paths[f"tflite_{quant}"], "rb").read()
    assert b"AxialSpanAttention" not in data and b"Flex" not in data


@pytest.mark.slow
@pytest.mark.xdist_group("portable_exports")
def test_other_image_sizes_are_resized_to_the_export(exports):
  _, paths = exports
  runner = predictor.load_predictor(paths["onnx_float32"])
  image = su.scene(np.random.default_rng(8), 31, 17)
  out = runner.predict(image)
  assert out["panoptic_pred"].shape == (31, 17)
  assert out["offset_map"].shape == (31, 17, 2)
  np.testing.assert_array_equal(out["image_size"], [31, 17])


def test_export_arguments_are_checked(tmp_path):
  with pytest.raises(ValueError, match="input_size"):
    pe.check_input_size((0, 4))
  with pytest.raises(ValueError, match="input_size"):
    pe.check_input_size("big")
  assert pe.check_input_size(["5", 7]) == (5, 7)
  with pytest.raises(FileNotFoundError, match="export_tflite"):
    pe.read_portable_config(str(tmp_path / "model.tflite"))
  with pytest.raises(ValueError, match="neither a SavedModel"):
    predictor.load_predictor(str(tmp_path / "model.bin"))


@pytest.mark.parametrize("tool,args,expected", [
    ("export_tflite", ["--model=axial_deeplab_s"], "--output is required"),
    ("export_onnx", ["--output=x.onnx", "--model=axial_deeplab_s"],
     "--input_size is required"),
    ("export_tflite", ["--output=x.tflite", "--input_size=5",
                       "--model=axial_deeplab_s"], "input_size"),
    ("export_tflite", ["--output=x.tflite", "--input_size=8,8",
                       "--model=axial_deeplab_s", "--quantization=int4"],
     "quantization"),
    ("export_onnx", ["--output=x.onnx", "--input_size=8,8"],
     "either --model"),
])
def test_export_tools_report_usage_errors(tool, args, expected):
  su.assert_usage_error(tool, args, expected)
