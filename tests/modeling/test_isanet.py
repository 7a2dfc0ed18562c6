"""ISANet: head parameter counts, outputs in training and inference, zoo."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from axial_deeplab_tf.modeling import isanet
from axial_deeplab_tf.modeling import registry


def _count(weights):
  return sum(int(np.prod(w.shape)) for w in weights)


@pytest.fixture(scope="module")
def model():
  """The zoo's ISANet-R50 at 19 classes (Cityscapes)."""
  return registry.build("isanet_r50", num_classes=19, input_size=(65, 97))


def test_head_parameter_counts(model):
  # mmsegmentation's ISA decode head at 19 classes: 11,815,443. Worked out:
  # 3x3 conv 2048->512 + BN, two attention blocks (query and key: two 1x1
  # convs + BN each; value: 1x1 conv with bias; output: 1x1 conv + BN),
  # 1x1 conv 1024->512 + BN, classifier 512->19 with bias.
  block = 2 * (512 * 256 + 512 + 256 * 256 + 512) + (512 * 512 + 512) + (
      512 * 512 + 1024)
  head = (2048 * 9 * 512 + 1024) + 2 * block + (1024 * 512 + 1024) + (
      512 * 19 + 19)
  assert head == 11_815_443
  assert _count(model.decode_head.trainable_weights) == 11_815_443
  # The published head figure does not include the auxiliary FCN head.
  aux = (1024 * 9 * 256 + 512) + (256 * 19 + 19)
  assert _count(model.auxiliary_head.trainable_weights) == aux == 2_364_691
  total = _count(model.trainable_weights)
  assert total == _count(model.backbone.trainable_weights) + 11_815_443 + aux


def test_outputs_in_inference_and_training(model):
  fn = tf.function(lambda x: model(x, training=False),
                   input_signature=[tf.TensorSpec([None, None, None, 3])])
  out = fn(tf.random.normal([1, 65, 97, 3]))
  assert set(out) == {"semantic_logits"}
  assert out["semantic_logits"].shape == (1, 65, 97, 19)
  assert out["semantic_logits"].dtype == tf.float32
  assert fn(tf.random.normal([1, 41, 30, 3]))["semantic_logits"].shape == (
      1, 41, 30, 19)
  train = model(tf.random.normal([2, 33, 47, 3]), training=True)
  assert set(train) == {"semantic_logits", "aux_logits"}
  assert train["aux_logits"].shape == (2, 33, 47, 19)
  assert np.all(np.isfinite(train["aux_logits"].numpy()))
  with pytest.raises(TypeError, match="training"):
    model(tf.zeros([1, 17, 17, 3]), training=tf.constant(True))


def test_backbone_is_dilated_output_stride_8(model):
  features = model.backbone(tf.zeros([1, 65, 97, 3]), training=False)
  assert features["c4"].shape == (1, 9, 13, 1024)
  assert features["c5"].shape == (1, 9, 13, 2048)
  # The last two stages use dilations 2 and 4 instead of strides.
  rates = {layer.output.shape[-1]: layer.get_config()["dilation_rate"]
           for layer in model.backbone.layers
           if layer.__class__.__name__ == "BottleneckBlock"}
  assert rates[1024] == 2 and rates[2048] == 4 and rates[512] == 1


def test_zoo_entries_config_and_errors():
  assert {"isanet_r50", "isanet_r101"} <= set(
      registry.list_models("semantic"))
  assert registry.get_entry("isanet_r101").defaults["backbone_depth"] == 101
  assert isanet.AUX_LOSS_WEIGHT == 0.4
  head = isanet.ISAHead(num_classes=4, channels=16, key_channels=8,
                        partition_factors=(2, 2))
  clone = tf_keras.layers.deserialize(tf_keras.layers.serialize(head))
  assert isinstance(clone, isanet.ISAHead)
  assert clone.get_config() == head.get_config()
  assert head(tf.zeros([1, 5, 7, 32])).shape == (1, 5, 7, 4)
  with pytest.raises(ValueError, match="depth"):
    isanet.build_isanet(19, backbone_depth=34)
  with pytest.raises(ValueError, match="input_size"):
    isanet.build_isanet(19, input_size=(0, 8))
  with pytest.raises(ValueError, match="dropout_rate"):
    isanet.ISAHead(num_classes=3, dropout_rate=1.0)


def test_kernel_regularizer_reaches_every_kernel():
  weight_decay = 1e-3
  model = isanet.build_isanet(
      3, input_size=(32, 32), head_channels=16, key_channels=8,
      aux_channels=8, partition_factors=(2, 2),
      kernel_regularizer=tf_keras.regularizers.l2(weight_decay))
  kernels = [w.numpy() for w in model.trainable_weights
             if w.name.endswith("kernel:0")]
  # Backbone, both ISSA blocks, both heads' convs and classifiers.
  assert len(kernels) > 60
  expected = weight_decay * sum(float(np.sum(np.square(k))) for k in kernels)
  np.testing.assert_allclose(float(tf.add_n(model.losses)), expected,
                             rtol=1e-4)
  assert model.get_config()["kernel_regularizer"]["config"]["l2"] == (
      pytest.approx(weight_decay))
  head = isanet.FCNHead(num_classes=2, channels=4, kernel_regularizer="l2")
  clone = isanet.FCNHead.from_config(head.get_config())
  clone(tf.zeros([1, 3, 3, 5]))
  assert len(clone.losses) == 2  # The 3x3 conv and the classifier.
