"""Tests of the input pipeline: shapes, padding, flips, determinism, shards."""

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from axial_deeplab_tf.data import input_pipeline as ip
from axial_deeplab_tf.data import tfrecord_schema as schema

DIVISOR = 256
IGNORE = 255
THINGS = (1, 2)
MEAN = (10.0, 20.0, 30.0)


def _png(array):
  buf = io.BytesIO()
  Image.fromarray(array).save(buf, format="PNG")
  return buf.getvalue()


def make_panoptic(height, width, rng):
  """Stuff 0 and 3, things 1 and 2 as odd-width rectangles, crowd, void.

  Odd widths keep every instance's mean column an integer, so its center
  maps exactly onto the mirrored center under a flip.
  """
  label = np.zeros((height, width), np.int32)
  label[height // 2:] = 3 * DIVISOR
  instance = {1: 0, 2: 0}
  placed = 0
  while placed < 4:
    c = int(rng.choice(THINGS))
    h = int(rng.integers(2, height // 3))
    w = 2 * int(rng.integers(1, width // 6)) + 1
    # Rows 2 .. height-3 keep clear of the crowd and void corners; no
    # overlaps, so every instance stays a whole rectangle.
    y = int(rng.integers(2, height - 2 - h))
    x = int(rng.integers(0, width - w))
    if (label[y:y + h, x:x + w] % DIVISOR).any():
      continue
    instance[c] += 1
    placed += 1
    label[y:y + h, x:x + w] = c * DIVISOR + instance[c]
  label[-2:, :3] = 1 * DIVISOR  # Crowd.
  label[:2, -3:] = IGNORE * DIVISOR  # Void.
  return label


def write_panoptic_records(path, sizes, seed=0):
  rng = np.random.default_rng(seed)
  data = []
  with tf.io.TFRecordWriter(str(path)) as w:
    for i, (h, wd) in enumerate(sizes):
      image = rng.integers(0, 256, (h, wd, 3), dtype=np.uint8)
      label = make_panoptic(h, wd, rng)
      f = schema.image_features(encoded=_png(image), image_format="png",
                                height=h, width=wd, filename=f"{i}.png",
                                source_id=str(i))
      f.update(schema.panoptic_features(label, DIVISOR, IGNORE))
      w.write(schema.to_tf_example(f).SerializeToString())
      data.append((image, label))
  return data


@pytest.fixture(scope="module")
def records(tmp_path_factory):
  path = tmp_path_factory.mktemp("pipe") / "train-00000-of-00001.tfrecord"
  data = write_panoptic_records(path, [(24, 30), (20, 36), (28, 22), (24, 30),
                                       (22, 26), (30, 30)])
  return str(path), data


def config(**kwargs):
  base = dict(thing_class_ids=THINGS, crop_size=(32, 40), min_scale=1.0,
              max_scale=1.0, flip_probability=0.0, mean_pixel=MEAN,
              ignore_label=IGNORE, label_divisor=DIVISOR,
              small_instance_area=10)
  base.update(kwargs)
  return ip.PanopticParserConfig(**base)


def first_batches(ds, n):
  return [tf.nest.map_structure(lambda t: t.numpy(), b) for b in ds.take(n)]


def test_train_shapes_and_dtypes(records):
  c = config(crop_size=(17, 23), min_scale=0.5, max_scale=2.0,
             flip_probability=0.5)
  ds = ip.build_dataset(records[0], c, True, 3, seed=1, deterministic=True)
  features, labels = next(iter(ds))
  assert features["image"].shape == (3, 17, 23, 3)
  assert features["image"].dtype == tf.float32
  shapes = {"panoptic": (3, 17, 23), "semantic": (3, 17, 23),
            "center_heatmap": (3, 17, 23, 1), "offset": (3, 17, 23, 2),
            "semantic_weights": (3, 17, 23), "center_weights": (3, 17, 23),
            "offset_weights": (3, 17, 23), "image_info": (3, 4, 2)}
  for key, shape in shapes.items():
    assert labels[key].shape == shape, key
  assert labels["panoptic"].dtype == tf.int32
  image = features["image"].numpy()
  assert image.min() >= 0.0 and image.max() <= 255.0
  # Static shapes for the model (batch known because drop_remainder).
  assert ds.element_spec[0]["image"].shape.as_list() == [3, 17, 23, 3]


def test_padding_uses_mean_and_ignore_and_keeps_pixels(records):
  path, data = records
  ds = ip.build_dataset(path, config(), True, 1, seed=0, deterministic=True,
                        shuffle_buffer_size=1)
  seen = 0
  for features, labels in ds.take(len(data)):
    image = features["image"].numpy()[0]
    panoptic = labels["panoptic"].numpy()[0]
    h, w = (int(v) for v in labels["image_info"].numpy()[0, 0])
    matches = [d for d in data if d[0].shape[:2] == (h, w) and np.array_equal(
        d[1], panoptic[:h, :w])]
    assert matches, "augmented label does not match any source label"
    src_image, src_label = matches[0]
    np.testing.assert_array_equal(image[:h, :w], src_image.astype(np.float32))
    pad = np.ones(panoptic.shape, bool)
    pad[:h, :w] = False
    assert (panoptic[pad] == IGNORE * DIVISOR).all()
    np.testing.assert_array_equal(image[pad], np.broadcast_to(
        np.float32(MEAN), (pad.sum(), 3)))
    assert (labels["semantic"].numpy()[0][pad] == IGNORE).all()
    assert (labels["semantic_weights"].numpy()[0][pad] == 0).all()
    assert (labels["center_weights"].numpy()[0][pad] == 0).all()
    seen += 1
  assert seen == len(data)


def test_scale_half_is_nearest_sampling(records):
  # Half-pixel-centered nearest sampling at scale 0.5 reads source pixels
  # (2i + 1, 2j + 1): an independent numpy reference.
  path, data = records
  c = config(min_scale=0.5, max_scale=0.5, crop_size=(10, 11),
             generate_targets=False)
  decoded = ip.Decoder("panoptic").decode(
      next(iter(tf.data.TFRecordDataset(path))))
  decoded["seed"] = tf.constant([1, 2], tf.int64)
  _, labels = ip.PanopticParser(c).parse_fn(True)(decoded)
  src = data[0][1]  # 24 x 30 -> 12 x 15, cropped to 10 x 11.
  scaled = src[1::2, 1::2]
  y, x = (int(v) for v in labels["image_info"].numpy()[3])
  np.testing.assert_array_equal(labels["panoptic"].numpy(),
                                scaled[y:y + 10, x:x + 11])
  np.testing.assert_allclose(labels["image_info"].numpy()[1], [12, 15])


def test_flip_mirrors_labels_and_negates_dx(records):
  path, _ = records
  c_kwargs = dict(crop_size=(24, 30), small_instance_area=40)
  results = []
  for prob in (0.0, 1.0):
    ds = ip.build_dataset(path, config(flip_probability=prob, **c_kwargs),
                          True, 1, seed=5,
                          deterministic=True, shuffle_buffer_size=1)
    results.append(first_batches(ds, 4))
  checked = 0
  for (f0, l0), (f1, l1) in zip(*results):
    if tuple(l0["image_info"][0, 0]) != (24, 30):
      continue  # Only images that fill the crop: no padding to move.
    flip = lambda a: a[:, :, ::-1]
    np.testing.assert_array_equal(f1["image"], flip(f0["image"]))
    for key in ("panoptic", "semantic", "semantic_weights", "center_weights",
                "offset_weights", "center_heatmap"):
      np.testing.assert_array_equal(l1[key], flip(l0[key]), err_msg=key)
    np.testing.assert_array_equal(l1["offset"][..., 0],
                                  flip(l0["offset"][..., 0]))
    np.testing.assert_array_equal(l1["offset"][..., 1],
                                  -flip(l0["offset"][..., 1]))
    assert np.abs(l0["offset"][..., 1]).max() > 0
    checked += 1
  assert checked >= 2


def test_deterministic_mode_reproduces_batches(records):
  path, _ = records
  c = config(crop_size=(16, 16), min_scale=0.5, max_scale=1.5,
             flip_probability=0.5)
  runs = [first_batches(ip.build_dataset(path, c, True, 2, seed=s,
                                         deterministic=True), 4)
          for s in (3, 3, 4)]
  for (fa, la), (fb, lb) in zip(runs[0], runs[1]):
    np.testing.assert_array_equal(fa["image"], fb["image"])
    for key in la:
      np.testing.assert_array_equal(la[key], lb[key])
  assert any(not np.array_equal(a[0]["image"], c_[0]["image"])
             for a, c_ in zip(runs[0], runs[2]))


def test_eval_pads_bottom_right_and_returns_original_size(records):
  path, data = records
  c = config(eval_crop_size=(32, 40))
  ds = ip.build_dataset(path, c, False, 2, seed=0, deterministic=True)
  batches = first_batches(ds, 10)
  assert sum(b[0]["image"].shape[0] for b in batches) == len(data)
  i = 0
  for features, labels in batches:
    for b in range(features["image"].shape[0]):
      image, label = data[i]
      h, w = label.shape
      np.testing.assert_array_equal(labels["original_size"][b], [h, w])
      np.testing.assert_array_equal(labels["panoptic"][b][:h, :w], label)
      np.testing.assert_array_equal(features["image"][b][:h, :w], image)
      assert (labels["panoptic"][b][h:] == IGNORE * DIVISOR).all()
      assert (labels["panoptic"][b][:, w:] == IGNORE * DIVISOR).all()
      i += 1
  full = ip.build_dataset(path, config(eval_pad_to_crop=False), False, 1)
  _, labels = next(iter(full))
  assert labels["panoptic"].shape[1:] == data[0][1].shape


def test_bad_records_or_configs_fail_loudly(records):
  path, _ = records
  too_small = ip.build_dataset(path, config(eval_crop_size=(16, 16)), False,
                               1)
  with pytest.raises(tf.errors.InvalidArgumentError, match="eval crop size"):
    next(iter(too_small))
  wrong_divisor = ip.build_dataset(path, config(label_divisor=1000), True, 1,
                                   seed=0)
  with pytest.raises(tf.errors.InvalidArgumentError, match="label_divisor"):
    next(iter(wrong_divisor))
  with pytest.raises(ValueError, match="min_scale"):
    config(min_scale=2.0, max_scale=1.0)
  with pytest.raises(ValueError, match="needs a seed"):
    ip.build_dataset(path, config(), True, 1, deterministic=True)
  with pytest.raises(TypeError, match="parser_config"):
    ip.build_dataset(path, {"crop_size": 3}, True, 1)


def test_input_context_shards_the_records(records):
  path, data = records
  c = config(eval_crop_size=(32, 40))
  ids = []
  for pipeline in (0, 1):
    ctx = tf.distribute.InputContext(num_input_pipelines=2,
                                     input_pipeline_id=pipeline,
                                     num_replicas_in_sync=2)
    ds = ip.build_dataset(path, c, False, 2, input_context=ctx,
                          deterministic=True, seed=0)
    shard = []
    for features, labels in ds:
      assert features["image"].shape[0] == 1  # Per-replica batch.
      shard.extend(tuple(s) for s in labels["original_size"].numpy())
    ids.append(shard)
  assert len(ids[0]) == len(ids[1]) == len(data) // 2
  assert sorted(ids[0] + ids[1]) == sorted(d[1].shape for d in data)
  strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
  dist = strategy.distribute_datasets_from_function(
      lambda ctx: ip.build_dataset(path, config(), True, 2,
                                   input_context=ctx, seed=1))
  features, _ = next(iter(dist))
  assert features["image"].shape == (2, 32, 40, 3)


def test_semantic_parser_on_semantic_and_panoptic_records(tmp_path, records):
  path = tmp_path / "sem.tfrecord"
  rng = np.random.default_rng(2)
  label = rng.choice(np.array([0, 1, 2, 255], np.uint8), (14, 18))
  image = rng.integers(0, 256, (14, 18, 3), dtype=np.uint8)
  with tf.io.TFRecordWriter(str(path)) as w:
    f = schema.image_features(encoded=_png(image), image_format="png",
                              height=14, width=18, filename="s", source_id=1)
    f.update(schema.semantic_features(_png(label)))
    w.write(schema.to_tf_example(f).SerializeToString())
  c = ip.SemanticParserConfig(crop_size=(16, 20), min_scale=1.0,
                              max_scale=1.0, flip_probability=1.0,
                              num_classes=3, mean_pixel=MEAN)
  features, labels = next(iter(ip.build_dataset(str(path), c, True, 1,
                                                seed=0)))
  sem = labels["semantic"].numpy()[0]
  assert sem.shape == (16, 20)
  # Padded bottom-right to 16 x 20, then flipped: content at the right.
  np.testing.assert_array_equal(sem[:14, 2:], label[:, ::-1])
  assert (sem[14:] == 255).all() and (sem[:, :2] == 255).all()
  np.testing.assert_array_equal(labels["valid_mask"].numpy()[0], sem != 255)
  np.testing.assert_array_equal(features["image"].numpy()[0][:14, 2:],
                                image[:, ::-1].astype(np.float32))
  bad = ip.SemanticParserConfig(crop_size=(16, 20), num_classes=2)
  with pytest.raises(tf.errors.InvalidArgumentError, match="outside"):
    next(iter(ip.build_dataset(str(path), bad, False, 1)))
  # Panoptic records read as semantic: panoptic // divisor.
  pan_path, data = records
  pc = ip.SemanticParserConfig(crop_size=(32, 40), label_source="panoptic",
                               label_divisor=DIVISOR, num_classes=4)
  _, labels = next(iter(ip.build_dataset(pan_path, pc, False, 1)))
  h, w = data[0][1].shape
  np.testing.assert_array_equal(labels["semantic"].numpy()[0][:h, :w],
                                data[0][1] // DIVISOR)


def test_classification_parser(tmp_path):
  path = tmp_path / "cls.tfrecord"
  rng = np.random.default_rng(3)
  with tf.io.TFRecordWriter(str(path)) as w:
    for i, (h, wd) in enumerate([(40, 60), (50, 30)]):
      image = rng.integers(0, 256, (h, wd, 3), dtype=np.uint8)
      f = schema.image_features(encoded=_png(image), image_format="png",
                                height=h, width=wd, filename=str(i),
                                source_id=i)
      f.update(schema.classification_features(i + 3, "n0000"))
      w.write(schema.to_tf_example(f).SerializeToString())
  c = ip.ClassificationParserConfig(image_size=(24, 24), num_classes=10)
  for training in (True, False):
    ds = ip.build_dataset(str(path), c, training, 2, seed=0,
                          deterministic=True)
    features, labels = next(iter(ds))
    assert features["image"].shape == (2, 24, 24, 3)
    assert sorted(labels["label"].numpy().tolist()) == [3, 4]
  # Eval of a constant image stays that constant (resize + center crop).
  const = tmp_path / "const.tfrecord"
  with tf.io.TFRecordWriter(str(const)) as w:
    f = schema.image_features(encoded=_png(np.full((30, 50, 3), 77, np.uint8)),
                              image_format="png", height=30, width=50,
                              filename="c", source_id=0)
    f.update(schema.classification_features(0, "n0"))
    w.write(schema.to_tf_example(f).SerializeToString())
  features, _ = next(iter(ip.build_dataset(str(const), c, False, 1)))
  np.testing.assert_allclose(features["image"].numpy(), 77.0, atol=1e-3)
