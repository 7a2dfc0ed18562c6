"""Export modules on small stand-in models (the zoo model is exported in
tests/tools/test_export_saved_model.py)."""

import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from axial_deeplab_tf.data import metadata as metadata_lib
from axial_deeplab_tf.ops import post_processing
from axial_deeplab_tf.serving import export_module as em
from tests.serving import serving_utils as su

NUM_CLASSES = 4
THINGS = (2, 3)
PP_ARGS = dict(thing_class_ids=list(THINGS), num_classes=NUM_CLASSES,
               label_divisor=256, ignore_label=255, stuff_area_limit=8,
               nms_kernel=3, keep_k_centers=16)


class _TinySemantic(tf_keras.Model):
  """Predicts at half resolution, to exercise the resize to the input."""

  def __init__(self, **kwargs):
    super().__init__(**kwargs)
    init = tf_keras.initializers.RandomNormal(stddev=0.5, seed=2)
    self.conv = tf_keras.layers.Conv2D(NUM_CLASSES, 3, strides=2,
                                       padding="same", kernel_initializer=init)

  def call(self, images, training=None):
    x = tf.cast(images, self.compute_dtype) / 127.5 - 1.0
    return {"semantic_logits": tf.cast(self.conv(x), tf.float32)}


class _TinyClassifier(tf_keras.Model):

  def __init__(self, **kwargs):
    super().__init__(**kwargs)
    init = tf_keras.initializers.RandomNormal(stddev=0.5, seed=3)
    self.conv = tf_keras.layers.Conv2D(NUM_CLASSES, 3, padding="valid",
                                       kernel_initializer=init)

  def call(self, images, training=None):
    x = tf.cast(images, self.compute_dtype) / 127.5 - 1.0
    return {"logits": tf.cast(tf.reduce_mean(self.conv(x), axis=[1, 2]),
                              tf.float32)}


def _built(model_cls):
  return su.built(model_cls())


def _tiny_panoptic(**kwargs):
  return su.built(su.TinyPanoptic(NUM_CLASSES, **kwargs))


def _images(rng, batch, height, width):
  return su.scenes(rng, batch, height, width, rectangles=5, min_size=3)


@pytest.fixture(scope="module")
def panoptic_module():
  return em.build_export_module(em.ServingParams(task="panoptic"),
                                _tiny_panoptic(), dict(PP_ARGS))


def test_panoptic_serving_default_equals_model_plus_post_processing(
    panoptic_module):
  rng = np.random.default_rng(0)
  images = _images(rng, 2, 23, 37)
  out = panoptic_module.inference_from_image_tensors(tf.constant(images))
  model = panoptic_module.model
  raw = model(images, training=False)
  reference = post_processing.PanopticDeepLabPostProcessor(**PP_ARGS)(raw)
  for key in ("panoptic_pred", "semantic_pred", "instance_pred",
              "instance_centers"):
    np.testing.assert_array_equal(out[key].numpy(), reference[key].numpy(),
                                  err_msg=key)
  np.testing.assert_allclose(out["instance_scores"].numpy(),
                             reference["instance_scores"].numpy(), atol=1e-6)
  np.testing.assert_allclose(out["semantic_probs"].numpy(),
                             su.softmax(raw["semantic_logits"]), atol=1e-6)
  # Graph-mode kernel fusions may round differently from eager ops.
  np.testing.assert_allclose(out["center_heatmap"].numpy(),
                             raw["center_heatmap"].numpy(), atol=1e-5)
  np.testing.assert_allclose(out["offset_map"].numpy(),
                             raw["offset_map"].numpy(), atol=1e-5)
  np.testing.assert_array_equal(out["image_size"].numpy(), [[23, 37]] * 2)
  assert out["panoptic_pred"].dtype == tf.int32
  # The scene must have instances and stuff for the comparison to matter.
  panoptic = out["panoptic_pred"].numpy()
  assert np.any(np.isin(panoptic // 256, THINGS) & (panoptic % 256 > 0))
  assert np.any(np.isin(panoptic // 256, (0, 1)))


def test_encoded_images_of_different_sizes_run_one_by_one(panoptic_module):
  rng = np.random.default_rng(1)
  shapes = [(19, 30), (26, 21), (19, 30)]
  images = [_images(rng, 1, h, w)[0] for h, w in shapes]
  encoded = tf.constant([tf.io.encode_png(i).numpy() for i in images])
  out = panoptic_module.inference_from_image_bytes(encoded)
  np.testing.assert_array_equal(out["image_size"].numpy(), shapes)
  assert out["panoptic_pred"].shape == (3, 26, 30)
  for i, image in enumerate(images):
    alone = panoptic_module.inference_from_image_tensors(
        tf.constant(image[None]))
    h, w = image.shape[:2]
    for key in ("panoptic_pred", "semantic_pred", "semantic_probs",
                "offset_map", "instance_scores"):
      got = out[key].numpy()[i]
      want = alone[key].numpy()[0]
      if key == "instance_scores":
        np.testing.assert_array_equal(got, want)
        continue
      np.testing.assert_array_equal(got[:h, :w], want, err_msg=key)
      pad = em.INT_PAD_VALUE if got.dtype.kind == "i" else em.FLOAT_PAD_VALUE
      assert np.all(got[h:] == pad) and np.all(got[:, w:] == pad), key


def test_encoded_images_of_one_size_run_as_a_batch(panoptic_module):
  rng = np.random.default_rng(2)
  images = _images(rng, 2, 17, 24)
  encoded = tf.constant([tf.io.encode_png(i).numpy() for i in images])
  out = panoptic_module.inference_from_image_bytes(encoded)
  batched = panoptic_module.inference_from_image_tensors(tf.constant(images))
  for key in ("panoptic_pred", "semantic_probs", "image_size"):
    np.testing.assert_array_equal(out[key].numpy(), batched[key].numpy())
  example = tf.train.Example(features=tf.train.Features(feature={
      "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(
          value=[encoded[0].numpy()]))}))
  from_example = panoptic_module.inference_from_tf_example(
      tf.constant([example.SerializeToString()]))
  np.testing.assert_array_equal(from_example["panoptic_pred"].numpy()[0],
                                batched["panoptic_pred"].numpy()[0])


def test_multi_scale_flip_averages_independent_passes():
  model = _tiny_panoptic()
  module = em.build_export_module(
      em.ServingParams(task="panoptic", scales=(0.5, 1.0), flip=True), model,
      dict(PP_ARGS))
  rng = np.random.default_rng(3)
  images = _images(rng, 1, 20, 28)
  out = module.serve(tf.constant(images))
  # Reference: each pass by hand with numpy-side flips and tf resizes.
  probs, heat, offs = [], [], []
  for scale in (0.5, 1.0):
    size = (int(round(20 * scale)), int(round(28 * scale)))
    scaled = tf.cast(tf.round(tf.image.resize(images, size)), tf.uint8)
    for flip in (False, True):
      x = scaled.numpy()[:, :, ::-1] if flip else scaled.numpy()
      raw = {k: v.numpy() for k, v in model(x, training=False).items()}
      if flip:
        raw = {k: v[:, :, ::-1] for k, v in raw.items()}
        raw["offset_map"] = raw["offset_map"] * np.array([1.0, -1.0])
      back = {k: tf.image.resize(v, (20, 28)).numpy() for k, v in raw.items()}
      ratio = np.array([20 / size[0], 28 / size[1]])
      probs.append(su.softmax(back["semantic_logits"]))
      heat.append(back["center_heatmap"])
      offs.append(back["offset_map"] * ratio)
  np.testing.assert_allclose(out["semantic_probs"].numpy(), np.mean(probs, 0),
                             atol=1e-5)
  np.testing.assert_allclose(out["center_heatmap"].numpy(), np.mean(heat, 0),
                             atol=1e-5)
  np.testing.assert_allclose(out["offset_map"].numpy(), np.mean(offs, 0),
                             atol=1e-4)


def test_low_resolution_panoptic_outputs_come_back_to_input_size():
  model = _tiny_panoptic(output_stride=2)
  module = em.build_export_module(em.ServingParams(task="panoptic"), model,
                                  dict(PP_ARGS))
  images = _images(np.random.default_rng(9), 2, 21, 30)
  out = module.inference_from_image_tensors(tf.constant(images))
  raw = {k: v.numpy() for k, v in model(images, training=False).items()}
  assert raw["semantic_logits"].shape[1:3] == (11, 15)
  # Reference: bilinear resize; offsets are in pixels of the 11 x 15 grid.
  back = {k: tf.image.resize(v, (21, 30)).numpy() for k, v in raw.items()}
  back["offset_map"] *= np.array([21 / 11, 30 / 15])
  np.testing.assert_allclose(out["semantic_probs"].numpy(),
                             su.softmax(back["semantic_logits"]), atol=1e-5)
  np.testing.assert_allclose(out["center_heatmap"].numpy(),
                             back["center_heatmap"], atol=1e-5)
  np.testing.assert_allclose(out["offset_map"].numpy(), back["offset_map"],
                             atol=1e-4)
  reference = post_processing.PanopticDeepLabPostProcessor(**PP_ARGS)(
      {k: tf.constant(v) for k, v in back.items()})
  np.testing.assert_array_equal(out["panoptic_pred"].numpy(),
                                reference["panoptic_pred"].numpy())
  assert len(np.unique(out["panoptic_pred"].numpy())) > 3


def test_semantic_module_resizes_to_the_input_and_argmaxes():
  model = _built(_TinySemantic)
  module = em.build_export_module(em.ServingParams(task="semantic"), model)
  rng = np.random.default_rng(4)
  images = _images(rng, 2, 15, 22)
  out = module.inference_from_image_tensors(tf.constant(images))
  logits = tf.image.resize(model(images)["semantic_logits"],
                           (15, 22)).numpy()
  np.testing.assert_array_equal(out["semantic_pred"].numpy(),
                                logits.argmax(-1))
  np.testing.assert_allclose(out["semantic_probs"].numpy().sum(-1), 1.0,
                             atol=1e-6)
  assert module.serving_config()["num_classes"] == NUM_CLASSES


def test_classification_module_resizes_to_input_size():
  model = _built(_TinyClassifier)
  module = em.build_export_module(
      em.ServingParams(task="classification", input_size=(12, 12)), model)
  rng = np.random.default_rng(5)
  images = _images(rng, 3, 30, 17)
  out = module.inference_from_image_tensors(tf.constant(images))
  resized = tf.image.resize(tf.cast(images, tf.float32), (12, 12))
  logits = model(resized)["logits"].numpy()
  np.testing.assert_allclose(out["logits"].numpy(), logits, atol=1e-6)
  np.testing.assert_array_equal(out["classes"].numpy(), logits.argmax(-1))
  np.testing.assert_allclose(out["probabilities"].numpy().sum(-1), 1.0,
                             atol=1e-6)


def test_saved_classifier_takes_any_size(tmp_path):
  model = _built(_TinyClassifier)
  module = em.build_export_module(
      em.ServingParams(task="classification", input_size=(12, 12)), model)
  export_dir = em.export_saved_model(module, str(tmp_path / "c"),
                                     function_keys=["image_tensor"])
  serve = tf.saved_model.load(export_dir).signatures["serving_default"]
  rng = np.random.default_rng(10)
  for shape in ((1, 7, 40), (2, 31, 9)):
    images = _images(rng, *shape)
    out = serve(images=tf.constant(images))
    resized = tf.image.resize(tf.cast(images, tf.float32), (12, 12))
    logits = model(resized)["logits"].numpy()
    np.testing.assert_allclose(out["logits"].numpy(), logits, atol=1e-5)
    np.testing.assert_allclose(out["probabilities"].numpy(),
                               su.softmax(logits), atol=1e-6)
    np.testing.assert_array_equal(out["classes"].numpy(), logits.argmax(-1))
    np.testing.assert_array_equal(out["image_size"].numpy(),
                                  [shape[1:]] * shape[0])


def test_bfloat16_model_serves_float32_outputs():
  with em.compute_dtype_scope("bfloat16"):
    model = _tiny_panoptic()
  assert tf_keras.mixed_precision.global_policy().name == "float32"
  with pytest.raises(ValueError, match="bfloat16"):
    em.build_export_module(em.ServingParams(task="panoptic"), model,
                           dict(PP_ARGS))
  module = em.build_export_module(
      em.ServingParams(task="panoptic", dtype="bfloat16"), model,
      dict(PP_ARGS))
  out = module.serve(tf.constant(_images(np.random.default_rng(6), 1, 16,
                                         16)))
  assert out["semantic_probs"].dtype == tf.float32
  assert out["panoptic_pred"].shape == (1, 16, 16)


def test_bad_images_give_clear_errors(panoptic_module):
  with pytest.raises(TypeError, match="uint8"):
    em.check_images(tf.zeros([1, 4, 4, 3], tf.float32))
  with pytest.raises(ValueError, match="rank 3"):
    em.check_images(tf.zeros([4, 4, 3], tf.uint8))
  with pytest.raises(ValueError, match="3 .RGB. channels"):
    em.check_images(tf.zeros([1, 4, 4, 4], tf.uint8))
  # Unknown rank (as in the saved signature): checked when the graph runs.
  fn = tf.function(panoptic_module.inference_from_image_tensors,
                   input_signature=[tf.TensorSpec(None, tf.uint8)])
  for shape in ([4, 4, 3], [1, 4, 4, 4], [1, 0, 4, 3]):
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"images must be uint8 \[batch >= 1"):
      fn(tf.zeros(shape, tf.uint8))


def test_params_and_arguments_are_checked():
  with pytest.raises(ValueError, match="task"):
    em.ServingParams(task="detection")
  with pytest.raises(ValueError, match="scales"):
    em.ServingParams(task="panoptic", scales=(1.0, -0.5))
  with pytest.raises(ValueError, match="input_size"):
    em.ServingParams(task="panoptic", input_size=(8, 8))
  with pytest.raises(ValueError, match="classification"):
    em.ServingParams(task="classification", flip=True)
  with pytest.raises(ValueError, match="post_processor"):
    em.build_export_module(em.ServingParams(task="panoptic"),
                           _tiny_panoptic())
  with pytest.raises(ValueError, match="predicts 4 classes"):
    em.build_export_module(em.ServingParams(task="panoptic"),
                           _tiny_panoptic(),
                           dict(PP_ARGS, num_classes=5))
  assert em.parse_overrides(["a=0.125", "b=None", "c=(3, 4)", "d=tiny"]) == {
      "a": 0.125, "b": None, "c": (3, 4), "d": "tiny"}
  for bad in (["a"], ["a=1", "a=2"], ["1x=2"]):
    with pytest.raises(ValueError, match="Override"):
      em.parse_overrides(bad)


def test_post_processor_facts_from_metadata():
  meta = metadata_lib.cityscapes()
  pp = em.panoptic_post_processor(19, meta, nms_kernel=13,
                                  stuff_area_limit=None)
  assert pp.thing_class_ids == tuple(range(11, 19))
  assert (pp.label_divisor, pp.ignore_label, pp.nms_kernel) == (1000, 255, 13)
  assert pp.stuff_area_limit == 4096  # None keeps the default.
  with pytest.raises(ValueError, match="label_divisor=256 disagrees"):
    em.panoptic_post_processor(19, meta, label_divisor=256)
  with pytest.raises(ValueError, match="thing_class_ids are required"):
    em.panoptic_post_processor(19)


def test_export_writes_description_and_refuses_to_overwrite(tmp_path):
  module = em.build_export_module(
      em.ServingParams(task="semantic", scales=(1.0,)), _built(_TinySemantic))
  export_dir = str(tmp_path / "export")
  meta = metadata_lib.from_categories(
      [{"id": 10 + i, "name": f"c{i}"} for i in range(NUM_CLASSES)],
      name="tiny", label_divisor=0, task="semantic")
  em.export_saved_model(module, export_dir, function_keys=["image_tensor"],
                        dataset_metadata=meta)
  config = em.read_serving_config(export_dir)
  assert config["task"] == "semantic"
  assert config["num_classes"] == NUM_CLASSES
  assert config["dataset"]["original_category_ids"] == [10, 11, 12, 13]
  assert list(config["signatures"]) == ["serving_default"]
  assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp")]
  # Saving reuses the signatures' trace of the model; it does not trace the
  # model again.
  assert module._functions["serve"].experimental_get_tracing_count() == 1
  with pytest.raises(ValueError, match="not empty"):
    em.export_saved_model(module, export_dir, function_keys=["image_tensor"])
  loaded = tf.saved_model.load(export_dir)
  out = loaded.signatures["serving_default"](
      images=tf.zeros([1, 9, 11, 3], tf.uint8))
  assert out["semantic_pred"].shape == (1, 9, 11)
  with pytest.raises(ValueError, match="20 classes"):
    em.export_saved_model(module, str(tmp_path / "other"),
                          dataset_metadata=metadata_lib.from_categories(
                              [{"id": i, "name": str(i)} for i in range(20)],
                              name="big", label_divisor=0, task="semantic"))


def test_checkpoint_folder_resolves_to_its_latest_checkpoint(tmp_path):
  model = _built(_TinySemantic)
  manager = tf.train.CheckpointManager(tf.train.Checkpoint(model=model),
                                       str(tmp_path / "run"), max_to_keep=3)
  manager.save()
  model.conv.kernel.assign(model.conv.kernel * 2.0)
  latest = manager.save()
  assert em.resolve_checkpoint(str(tmp_path / "run")) == latest
  fresh = _built(_TinySemantic)  # Seeded: the first checkpoint's weights.
  assert em.restore_checkpoint(fresh, str(tmp_path / "run")) == latest
  np.testing.assert_array_equal(fresh.conv.kernel.numpy(),
                                model.conv.kernel.numpy())
  (tmp_path / "empty").mkdir()
  with pytest.raises(FileNotFoundError, match="without checkpoints"):
    em.resolve_checkpoint(str(tmp_path / "empty"))
  with pytest.raises(FileNotFoundError, match="no checkpoint"):
    em.resolve_checkpoint(str(tmp_path / "run" / "ckpt-9"))
  other = tf.train.Checkpoint(model=_tiny_panoptic()).write(
      str(tmp_path / "other" / "ckpt"))
  with pytest.raises(AssertionError):
    em.restore_checkpoint(fresh, other)


def test_saved_encoded_image_signatures(tmp_path, panoptic_module):
  export_dir = em.export_saved_model(panoptic_module, str(tmp_path / "p"))
  loaded = tf.saved_model.load(export_dir)
  assert sorted(loaded.signatures) == ["serve_image_bytes",
                                       "serve_tf_example", "serving_default"]
  rng = np.random.default_rng(8)
  images = [_images(rng, 1, 19, 30)[0], _images(rng, 1, 26, 21)[0]]
  encoded = [tf.io.encode_png(i).numpy() for i in images]
  out = loaded.signatures["serve_image_bytes"](
      encoded_images=tf.constant(encoded))
  examples = [tf.train.Example(features=tf.train.Features(feature={
      "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(
          value=[e]))})).SerializeToString() for e in encoded]
  from_examples = loaded.signatures["serve_tf_example"](
      serialized_examples=tf.constant(examples))
  np.testing.assert_array_equal(out["image_size"].numpy(), [[19, 30],
                                                            [26, 21]])
  for i, image in enumerate(images):
    h, w = image.shape[:2]
    alone = panoptic_module.inference_from_image_tensors(
        tf.constant(image[None]))["panoptic_pred"].numpy()[0]
    for result in (out, from_examples):
      got = result["panoptic_pred"].numpy()[i]
      assert got.shape == (26, 30)
      np.testing.assert_array_equal(got[:h, :w], alone)
      assert np.all(got[h:] == -1) and np.all(got[:, w:] == -1)
  with pytest.raises(tf.errors.InvalidArgumentError):
    loaded.signatures["serve_image_bytes"](
        encoded_images=tf.constant([b"not an image"]))


def test_export_loaded_model_checks_its_arguments(tmp_path):
  # An experiment's LoadedModel brings its post-processor.
  loaded = em.LoadedModel(
      model=_tiny_panoptic(), task="panoptic", dtype="float32",
      post_processor=post_processing.PanopticDeepLabPostProcessor(**PP_ARGS),
      dataset_metadata=None, input_size=None, description={})
  with pytest.raises(ValueError, match="experiment defines the post-proc"):
    em.export_loaded_model(loaded, str(tmp_path / "export"),
                           post_processor_args={"nms_kernel": 3})
  semantic = em.LoadedModel(
      model=_built(_TinySemantic), task="semantic", dtype="float32",
      post_processor=None, dataset_metadata=None, input_size=None,
      description={})
  with pytest.raises(ValueError, match="for panoptic models, not semantic"):
    em.export_loaded_model(semantic, str(tmp_path / "export"),
                           post_processor_args={"nms_kernel": 3})
  with pytest.raises(ValueError, match="exactly one"):
    em.load_model(model_name="axial_deeplab_s", gin_files=["x.gin"])
  with pytest.raises(ValueError, match="exactly one"):
    em.load_model()
  assert not os.path.exists(tmp_path / "export")
