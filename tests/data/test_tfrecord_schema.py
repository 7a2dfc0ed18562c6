"""Round trips of the record schema: converter-side encoding, TF decoding."""

import io
import zlib

import hypothesis
from hypothesis import strategies as st
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from axial_deeplab_tf.data import tfrecord_schema as schema


@hypothesis.settings(max_examples=25, deadline=None)
@hypothesis.given(
    height=st.integers(1, 9), width=st.integers(1, 9),
    seed=st.integers(0, 2**31 - 1),
    high=st.sampled_from([1, 256, 65536, 2**31 - 1]))
def test_panoptic_label_round_trip(height, width, seed, high):
  values = np.random.default_rng(seed).integers(0, high, (height, width),
                                                endpoint=True)
  encoded = schema.encode_panoptic_label(values)
  # The encoding is documented as zlib(int32 little-endian): check it
  # directly, then through the TF decoder used in training.
  raw = np.frombuffer(zlib.decompress(encoded), dtype="<i4")
  np.testing.assert_array_equal(raw.reshape(height, width), values)
  decoded = schema.decode_panoptic_label(tf.constant(encoded), height, width)
  assert decoded.dtype == tf.int32
  np.testing.assert_array_equal(decoded.numpy(), values)


def test_panoptic_label_rejects_bad_input():
  with pytest.raises(ValueError, match="height, width"):
    schema.encode_panoptic_label(np.zeros((2, 2, 1), np.int32))
  with pytest.raises(ValueError, match="0..2\\*\\*31-1"):
    schema.encode_panoptic_label(np.array([[-1]]))
  with pytest.raises(TypeError, match="integer"):
    schema.encode_panoptic_label(np.zeros((2, 2), np.float32))
  with pytest.raises(tf.errors.InvalidArgumentError, match="height \\* width"):
    schema.decode_panoptic_label(
        tf.constant(schema.encode_panoptic_label(np.zeros((2, 3), np.int32))),
        3, 3)


def _png(array):
  buf = io.BytesIO()
  Image.fromarray(array).save(buf, format="PNG")
  return buf.getvalue()


def test_example_parses_with_feature_spec():
  image = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
  semantic = np.array([[0, 1, 2, 255, 3]] * 4, np.uint8)
  features = schema.image_features(encoded=_png(image), image_format="png",
                                   height=4, width=5, filename="a/b.png",
                                   source_id=17)
  features.update(schema.semantic_features(_png(semantic)))
  serialized = schema.to_tf_example(features).SerializeToString()
  parsed = tf.io.parse_single_example(serialized,
                                      schema.feature_spec("semantic"))
  assert parsed[schema.IMAGE_SOURCE_ID].numpy() == b"17"
  assert parsed[schema.IMAGE_FILENAME].numpy() == b"a/b.png"
  np.testing.assert_array_equal(
      schema.decode_image(parsed[schema.IMAGE_ENCODED], 4, 5).numpy(), image)
  np.testing.assert_array_equal(
      schema.decode_semantic_label(parsed[schema.SEMANTIC_ENCODED], 4,
                                   5).numpy(), semantic)
  with pytest.raises(tf.errors.InvalidArgumentError, match="size differs"):
    schema.decode_image(parsed[schema.IMAGE_ENCODED], 5, 4)
  with pytest.raises(ValueError, match="label_type"):
    schema.feature_spec("depth")
  with pytest.raises(ValueError, match="image_format"):
    schema.image_features(encoded=b"", image_format="gif", height=1, width=1,
                          filename="", source_id="")
