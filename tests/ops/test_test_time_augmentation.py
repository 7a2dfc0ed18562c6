"""Tests of multi_scale_flip_inference against torch/numpy resizing and
flipping, and a flip-equivariance property."""

import numpy as np
import pytest
import tensorflow as tf
import torch

from axial_deeplab_tf.ops import PanopticDeepLabPostProcessor
from axial_deeplab_tf.ops import multi_scale_flip_inference

NUM_CLASSES = 4


def make_model(stride):
  """A small fixed conv net, not mirror-symmetric, predicting at 1/stride."""
  rng = np.random.default_rng(0)
  kernel = tf.constant(rng.normal(size=(3, 3, 3, NUM_CLASSES + 3)),
                       tf.float32)

  def model_fn(images):
    features = tf.nn.conv2d(tf.cast(images, tf.float32), kernel, 1, "SAME")
    if stride > 1:
      features = tf.nn.avg_pool2d(features, stride, stride, "SAME")
    return {"semantic_logits": features[..., :NUM_CLASSES],
            "center_heatmap": tf.sigmoid(features[..., NUM_CLASSES:
                                                  NUM_CLASSES + 1]),
            "offset_map": 3.0 * features[..., NUM_CLASSES + 1:]}
  return model_fn


def torch_resize(array, size):
  """Bilinear, half-pixel centers, NHWC numpy in and out."""
  tensor = torch.tensor(np.ascontiguousarray(array.transpose(0, 3, 1, 2)))
  out = torch.nn.functional.interpolate(tensor, size=size, mode="bilinear",
                                        align_corners=False)
  return out.numpy().transpose(0, 2, 3, 1)


def reference_tta(model_fn, images, scales, flip):
  _, height, width, _ = images.shape
  probs, heat, offs = [], [], []
  for scale in scales:
    for flipped in ([False, True] if flip else [False]):
      size = (round(height * scale), round(width * scale))
      x = images if scale == 1.0 else torch_resize(images, size)
      if flipped:
        x = x[:, :, ::-1]
      out = {k: v.numpy() for k, v in model_fn(tf.constant(x.copy())).items()}
      logits, h, o = (out["semantic_logits"], out["center_heatmap"],
                      out["offset_map"])
      if flipped:
        logits, h, o = logits[:, :, ::-1], h[:, :, ::-1], o[:, :, ::-1].copy()
        o[..., 1] *= -1
      out_h, out_w = logits.shape[1:3]
      logits = torch_resize(logits, (height, width))
      h = torch_resize(h, (height, width))
      o = torch_resize(o, (height, width))
      o[..., 0] *= height / out_h
      o[..., 1] *= width / out_w
      e = np.exp(logits - logits.max(-1, keepdims=True))
      probs.append(e / e.sum(-1, keepdims=True))
      heat.append(h)
      offs.append(o)
  return np.mean(probs, 0), np.mean(heat, 0), np.mean(offs, 0)


@pytest.mark.parametrize("scales,flip,stride", [
    ((1.0,), False, 1),
    ((1.0,), True, 1),
    ((0.5, 0.75, 1.25), True, 1),
    ((0.75, 1.5), False, 2),
])
def test_matches_torch_reference(scales, flip, stride):
  images = np.random.default_rng(1).random((2, 12, 16, 3)).astype(np.float32)
  model_fn = make_model(stride)
  result = multi_scale_flip_inference(model_fn, tf.constant(images),
                                      scales=scales, flip=flip)
  probs, heat, offs = reference_tta(model_fn, images, scales, flip)
  np.testing.assert_allclose(result["semantic_probs"], probs, atol=1e-5)
  np.testing.assert_allclose(result["center_heatmap"], heat, atol=1e-5)
  np.testing.assert_allclose(result["offset_map"], offs, atol=1e-4)
  np.testing.assert_allclose(np.exp(result["semantic_logits"]), probs,
                             atol=1e-5)
  for key in result:
    assert result[key].dtype == tf.float32
    assert result[key].shape[:3] == (2, 12, 16)


def _point_model(images):
  """Equivariant model: offsets point at the brightest pixel of channel 0."""
  shape = tf.shape(images)
  width = shape[2]
  flat = tf.argmax(tf.reshape(images[..., 0], [shape[0], -1]), axis=-1,
                   output_type=tf.int32)
  py = tf.cast(flat // width, tf.float32)[:, None, None]
  px = tf.cast(flat % width, tf.float32)[:, None, None]
  ys = tf.cast(tf.range(shape[1]), tf.float32)[None, :, None]
  xs = tf.cast(tf.range(width), tf.float32)[None, None, :]
  offsets = tf.stack([py - ys + 0.0 * xs, px - xs + 0.0 * ys], axis=-1)
  logits = tf.einsum("bhwc,cn->bhwn", images,
                     tf.constant([[1.0, -1.0, 0.5], [0.2, 0.3, -2.0],
                                  [0.0, 1.0, 1.0]]))
  return {"semantic_logits": logits,
          "center_heatmap": images[..., 1:2],
          "offset_map": offsets}


def test_flip_of_equivariant_model_changes_nothing():
  images = np.random.default_rng(2).random((2, 9, 11, 3)).astype(np.float32)
  images[0, 4, 2, 0] = 5.0
  images[1, 7, 9, 0] = 5.0
  plain = multi_scale_flip_inference(_point_model, images)
  flipped = multi_scale_flip_inference(_point_model, images, flip=True)
  for key in plain:
    np.testing.assert_allclose(flipped[key], plain[key], atol=1e-5,
                               err_msg=key)
  # Offsets point at the bright pixel; un-flipping negates dx.
  np.testing.assert_allclose(flipped["offset_map"][0, 0, 0], [4.0, 2.0],
                             atol=1e-5)


def test_output_feeds_the_post_processor_under_tf_function():
  model_fn = make_model(1)
  processor = PanopticDeepLabPostProcessor([2, 3], NUM_CLASSES, nms_kernel=3,
                                           stuff_area_limit=2)

  @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3])])
  def predict(images):
    return processor(multi_scale_flip_inference(
        model_fn, images, scales=(0.75,), flip=True))

  images = np.random.default_rng(3).random((1, 12, 16, 3)).astype(np.float32)
  result = predict(images)
  eager = processor(multi_scale_flip_inference(
      model_fn, images, scales=(0.75,), flip=True))
  for key in result:
    np.testing.assert_array_equal(result[key], eager[key])
  assert result["panoptic_pred"].shape == (1, 12, 16)


def test_bad_arguments():
  model_fn = make_model(1)
  images = tf.zeros([1, 8, 8, 3])
  with pytest.raises(ValueError, match="scales"):
    multi_scale_flip_inference(model_fn, images, scales=())
  with pytest.raises(ValueError, match="scales"):
    multi_scale_flip_inference(model_fn, images, scales=(1.0, -0.5))
  with pytest.raises(ValueError, match="images"):
    multi_scale_flip_inference(model_fn, tf.zeros([8, 8, 3]))
  with pytest.raises(ValueError, match="offset_map"):
    multi_scale_flip_inference(
        lambda x: {"semantic_logits": x, "center_heatmap": x[..., :1]},
        images)
