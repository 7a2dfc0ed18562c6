"""ISANet: head parameter counts, outputs in training and inference, zoo."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from axial_deeplab_tf.modeling import isanet
from axial_deeplab_tf.modeling import registry


def _count(weights):
  return sum(int(np.prod(w.shape)) for w in weights)


# One worker builds the module's ISANet-R50 (pytest-xdist --dist=loadgroup).
@pytest.fixture(scope="module")
def model():
  """The zoo's ISANet-R50 at 19 classes (Cityscapes)."""
  return registry.build("isanet_r50", num_classes=19, input_size=(65, 97))


@pytest.mark.xdist_group("isanet_r50")
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


@pytest.mark.xdist_group("isanet_r50")
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


@pytest.mark.xdist_group("isanet_r50")
def test_backbone_is_dilated_output_stride_8(model):
  features = model.backbone(tf.zeros([1, 65, 97, 3]), training=False)
  assert features["c4"].shape == (1, 9, 13, 1024)
  assert features["c5"].shape == (1, 9, 13, 2048)
  # The last two stages use dilations 2 and 4 instead of strides.
  rates = {layer.output.shape[-1]: layer.get_config()["dilation_rate"]
           for layer in model.backbone.layers
           if isinstance(layer, isanet.ResNetBottleneck)}
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


def _model_garden_backbone():
  """ISANet's backbone as it was built before: Model Garden DilatedResNet."""
  from official.vision.modeling.backbones import resnet_deeplab  # pylint: disable=g-import-not-at-top
  from official.vision.modeling.layers import nn_blocks  # pylint: disable=g-import-not-at-top
  resnet = resnet_deeplab.DilatedResNet(
      model_id=50, output_stride=8, stem_type="v1", norm_momentum=0.9,
      norm_epsilon=1e-5)
  stage3 = [layer for layer in resnet.layers
            if isinstance(layer, nn_blocks.BottleneckBlock) and
            layer.output.shape[-1] == 1024]
  return tf_keras.Model(inputs=resnet.inputs,
                        outputs={"c4": stage3[-1].output,
                                 "c5": resnet.output["3"]})


def test_default_backbone_restores_and_computes_as_model_garden(tmp_path):
  # Checkpoints written with the Model Garden backbone restore into ours
  # (same object graph) and the default options compute the same thing.
  old = _model_garden_backbone()
  rng = np.random.default_rng(0)
  for v in old.variables:
    if "moving_variance" in v.name:
      v.assign(rng.uniform(0.5, 2.0, v.shape).astype(np.float32))
    else:
      v.assign(rng.normal(0, 0.05, v.shape).astype(np.float32))
  prefix = tf.train.Checkpoint(backbone=old).write(str(tmp_path / "old"))
  new = isanet.build_dilated_resnet(50)
  tf.train.Checkpoint(backbone=new).read(
      prefix).assert_existing_objects_matched()
  x = tf.constant(rng.normal(size=(1, 64, 48, 3)).astype(np.float32))
  want = old(x, training=False)
  got = new(x, training=False)
  for key in ("c4", "c5"):
    np.testing.assert_allclose(got[key].numpy(), want[key].numpy(),
                               rtol=1e-5, atol=1e-5 * float(
                                   tf.reduce_max(tf.abs(want[key]))))


def test_openseg_backbone_options():
  backbone = isanet.build_dilated_resnet(
      50, symmetric_padding=True, ceil_mode_max_pool=True,
      dilation_pattern="first_block_halved")
  rates = [(layer.name, layer.get_config()["dilation_rate"])
           for layer in backbone.layers
           if isinstance(layer, isanet.ResNetBottleneck)]
  assert [r for n, r in rates if n.startswith("stage4")] == [1, 2, 2, 2, 2, 2]
  assert [r for n, r in rates if n.startswith("stage5")] == [2, 4, 4]
  # PyTorch's ceil-mode pool: 64 -> 32 (stem) -> 17, then stride 2 -> 9.
  features = backbone(tf.zeros([1, 64, 96, 3]), training=False)
  assert features["c5"].shape == (1, 9, 13, 2048)
  pool = isanet.CeilModeMaxPool2D()
  x = np.arange(5 * 6, dtype=np.float32).reshape(1, 5, 6, 1) - 100.0
  # Windows of 3 at stride 2 over the padded axis (-inf padding): rows
  # [0,1], [1,2,3], [3,4]; columns [0,1], [1,2,3], [3,4,5], [5].
  want = np.array([[x[0, r1:r2, c1:c2, 0].max()
                    for c1, c2 in ((0, 2), (1, 4), (3, 6), (5, 6))]
                   for r1, r2 in ((0, 2), (1, 4), (3, 5))])
  np.testing.assert_array_equal(pool(x).numpy()[0, :, :, 0], want)
  with pytest.raises(ValueError, match="dilation_pattern"):
    isanet.build_dilated_resnet(50, dilation_pattern="half")
