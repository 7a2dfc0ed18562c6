"""Tests the graph-walking M-Adds counter against hand-computed counts."""

import pytest
import tensorflow as tf
import tf_keras

from axial_deeplab_tf.utils import madds


class _TinyAttention(tf_keras.layers.Layer):
  """Einsum logits, batched matmul aggregation, ellipsis einsum projection."""

  def build(self, input_shape):
    self.kernel = self.add_weight(name="kernel", shape=[input_shape[-1], 6])

  def call(self, x, training=None):
    s = tf.shape(x)  # Dynamic on purpose: tracing must still give sizes.
    x = tf.reshape(x, [s[0], s[1] * s[2], x.shape[-1]])
    logits = tf.einsum("bqc,bkc->bqk", x, x)
    out = tf.matmul(tf.nn.softmax(logits), x)  # BatchMatMulV2/V3.
    return tf.einsum("...c,cd->...d", out, self.kernel)


def _tiny_model():
  inputs = tf_keras.Input([None, None, 3])
  x = tf_keras.layers.Conv2D(4, 3, strides=2, padding="same")(inputs)
  x = tf_keras.layers.DepthwiseConv2D(3, depth_multiplier=2)(x)
  x = tf_keras.layers.Conv2D(4, 1, groups=2, use_bias=False)(x)
  x = tf_keras.layers.BatchNormalization()(x)
  x = _TinyAttention()(x)
  x = tf_keras.layers.GlobalAveragePooling1D()(x)
  outputs = tf_keras.layers.Dense(5)(x)
  return tf_keras.Model(inputs, outputs)


def test_tiny_model_matches_hand_count():
  result = madds.count_madds(_tiny_model(), [1, 8, 8, 3])
  # 8x8x3 -> conv 3x3 s2 same -> 4x4x4: 16 pixels * 4 out * (3*3*3).
  conv = 16 * 4 * 27
  # depthwise 3x3 valid, multiplier 2: 2x2 pixels * 8 channels * 9 taps.
  depthwise = 4 * 8 * 9
  # grouped 1x1 on 8 channels, 2 groups: 4 pixels * 4 out * 4 in per group.
  grouped = 4 * 4 * 4
  # 4 positions x 4 channels: logits q*k*c, aggregation q*k*c, proj q*c*d.
  logits, aggregation, projection = 4 * 4 * 4, 4 * 4 * 4, 4 * 4 * 6
  dense = 6 * 5
  assert result.by_op_type == {
      "Conv2D": conv + grouped,
      "DepthwiseConv2dNative": depthwise,
      "Einsum": logits + projection,
      next(k for k in result.by_op_type if k.startswith("BatchMatMul")):
          aggregation,
      "MatMul": dense,
  }
  assert result.total == (conv + depthwise + grouped + logits + aggregation +
                          projection + dense)
  assert result.op_counts["Einsum"] == 2


def test_batch_and_size_scale_the_count():
  model = _tiny_model()
  one = madds.count_madds(model, [1, 8, 8, 3]).total
  assert madds.count_madds(model, [3, 8, 8, 3]).total == 3 * one
  # Doubling the side: convs x4, attention logits/aggregation x16.
  big = madds.count_madds(model, [1, 16, 16, 3]).by_op_type
  assert big["DepthwiseConv2dNative"] == 6 * 6 * 8 * 9


def test_count_params():
  model = _tiny_model()
  expected = ((3 * 3 * 3 * 4 + 4) + (3 * 3 * 4 * 2 + 8) + (4 * 4) +
              2 * 4 + 4 * 6 + (6 * 5 + 5))
  assert madds.count_params(model) == expected


@pytest.mark.parametrize("equation, shapes, expected", [
    ("ij,jk->ik", [[2, 3], [3, 5]], 30),
    ("bhqd,bhkd->bhqk", [[2, 4, 7, 8], [2, 4, 9, 8]], 2 * 4 * 7 * 9 * 8),
    ("...qd,kd->...qk", [[2, 3, 4, 5], [6, 5]], 2 * 3 * 4 * 5 * 6),
    ("b...d,...d->b...", [[2, 3, 4, 5], [4, 5]], 2 * 3 * 4 * 5),
    ("ij->i", [[4, 5]], 0),
    ("ij,jk,kl->il", [[2, 3], [3, 4], [4, 5]], 2 * (2 * 3 * 4 * 5)),
])
def test_einsum_madds(equation, shapes, expected):
  assert madds.einsum_madds(equation, shapes) == expected


def test_errors():
  model = _tiny_model()
  with pytest.raises(ValueError, match="input_shape"):
    madds.count_madds(model, [1, 0, 8, 3])
  with pytest.raises(ValueError, match="input_shape"):
    madds.count_madds(model, [1, None, 8, 3])

  class Loop(tf_keras.layers.Layer):

    def call(self, x, training=None):
      return tf.while_loop(lambda i, y: i < 3,
                           lambda i, y: (i + 1, tf.matmul(y, y)), [0, x])[1]

  with pytest.raises(ValueError, match="while loop"):
    madds.count_madds(Loop(), [4, 4])


def test_conditional_counts_largest_branch():

  class Cond(tf_keras.layers.Layer):

    def call(self, x, training=None):
      return tf.cond(tf.reduce_sum(x) > 0, lambda: tf.matmul(x, x),
                     lambda: tf.matmul(tf.matmul(x, x), x))

  assert madds.count_madds(Cond(), [3, 3]).total == 2 * 27


def test_transposed_convolution():
  model = tf_keras.Sequential(
      [tf_keras.layers.Conv2DTranspose(4, 3, strides=2, input_shape=(5, 5, 2))])
  # Each of the 5*5*2 input values scatters into 3*3 taps of 4 channels.
  assert madds.count_madds(model, [1, 5, 5, 2]).by_op_type == {
      "Conv2DBackpropInput": 5 * 5 * 2 * 3 * 3 * 4}
