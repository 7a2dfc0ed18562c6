"""deeplab2's Panoptic-DeepLab (decoders and heads) on deeplab2's encoders.

This is the architecture of the Panoptic-DeepLab checkpoints deeplab2
publishes, to load them (`tools/import_deeplab2_checkpoint.py`), fine-tune
and evaluate them here. Where it differs from `axial_deeplab.py`
(Panoptic-DeepLab as the papers describe it):

- every resize (decoder upsampling, ASPP pooling branch, outputs to the
  input size) is bilinear with aligned corners; offsets are scaled by
  (output size - 1) / (feature size - 1);
- ASPP: 1x1, three 3x3 atrous convolutions and an image-pooling branch
  (average pooling over `aspp_pool_size` feature pixels, or the whole map,
  then 1x1 conv + BN + ReLU, resized back), concatenated, projected by a
  1x1 conv + BN + ReLU, dropout 0.1; or (`aspp_use_only_1x1_proj_conv`) the
  projection alone, as the Axial-DeepLab checkpoints use;
- fusion and heads: a 5x5 depthwise conv + BN + ReLU then 1x1 conv + BN +
  ReLU (deeplab2's "depthwise_separable_conv"), heads ending in a 1x1 conv
  with bias;
- the instance decoder can use other low-level features, projections and
  ASPP settings than the semantic one (deeplab2's per-branch overrides).

The sub-layers keep deeplab2's attribute names, so a checkpoint of its
trainer maps onto them one variable for one variable. Model outputs follow
the zoo's convention (`semantic_logits`, `center_heatmap`, `offset_map` at
input resolution).
"""

from typing import Dict, Optional, Sequence

import tensorflow as tf
import tf_keras

from axial_deeplab_tf.layers import common
from axial_deeplab_tf.modeling.backbones import deeplab2_resnet
from axial_deeplab_tf.modeling.decoders.deeplab2_panoptic import SingleDecoder
from axial_deeplab_tf.modeling.heads.deeplab2_panoptic import Head
from axial_deeplab_tf.modeling.registry import register_model


class DeepLab2PanopticModel(tf_keras.Model):
  """Encoder + semantic/instance decoders + semantic, center, offset heads.

  Input: [batch, h, w, 3] images in [0, 255] (scaled to x / 127.5 - 1
  inside). Outputs at input resolution: `semantic_logits`,
  `center_heatmap` (raw), `offset_map` (dy, dx). With
  `drop_first_logit` (deeplab2's COCO models predict 134 classes, class 0
  being its void label), the first semantic channel is dropped so that
  class ids match this project's 133 contiguous COCO classes.
  """

  def __init__(self, backbone: tf_keras.Model, semantic_decoder, semantic_head,
               instance_decoder, center_head, offset_head,
               drop_first_logit: bool = False, **kwargs):
    super().__init__(**kwargs)
    self.backbone = backbone
    self.semantic_decoder = semantic_decoder
    self.semantic_head = semantic_head
    self.instance_decoder = instance_decoder
    self.center_head = center_head
    self.offset_head = offset_head
    self._drop_first_logit = drop_first_logit

  @property
  def num_classes(self) -> int:
    """Semantic classes of the outputs (without a dropped void logit)."""
    return self.semantic_head.final_conv.filters - int(self._drop_first_logit)

  @property
  def checkpoint_items(self) -> Dict[str, tf.Module]:
    return {"backbone": self.backbone}

  def set_pool_size(self, pool_size) -> None:
    """Sets the ASPP image-pooling window of both decoders (None: global)."""
    self.semantic_decoder.set_pool_size(pool_size)
    self.instance_decoder.set_pool_size(pool_size)

  def raw_outputs(self, images, training=None) -> Dict[str, tf.Tensor]:
    """Head outputs at the decoder resolution (stride 4), deeplab2's keys."""
    x = tf.cast(images, self.compute_dtype) / 127.5 - 1.0
    endpoints = self.backbone(x, training=training)
    semantic = self.semantic_head(
        self.semantic_decoder(endpoints, training=training),
        training=training)
    instance = self.instance_decoder(endpoints, training=training)
    return {"semantic_logits": semantic,
            "center_heatmap": self.center_head(instance, training=training),
            "offset_map": self.offset_head(instance, training=training)}

  def call(self, images, training=None):
    if images.shape.rank != 4:
      raise ValueError(f"images must be [batch, height, width, 3], got shape "
                       f"{images.shape}.")
    size = tf.shape(images)[1:3]
    raw = self.raw_outputs(images, training=training)
    semantic = tf.cast(raw["semantic_logits"], tf.float32)
    if self._drop_first_logit:
      semantic = semantic[..., 1:]
    offset = tf.cast(raw["offset_map"], tf.float32)
    scale = (tf.cast(size - 1, tf.float32) /
             tf.cast(tf.shape(offset)[1:3] - 1, tf.float32))
    return {
        "semantic_logits": common.resize_bilinear(semantic, size,
                                                  align_corners=True),
        "center_heatmap": common.resize_bilinear(
            tf.cast(raw["center_heatmap"], tf.float32), size,
            align_corners=True),
        "offset_map": common.resize_bilinear(
            offset * tf.reshape(scale, [1, 1, 1, 2]), size,
            align_corners=True),
    }


def build_deeplab2_panoptic(
    num_classes: int = 19,
    input_size=None,
    encoder: str = "resnet50",
    output_stride: int = 32,
    stem_width_multiplier: float = 1.0,
    width_multiplier: float = 1.0,
    layer_multiplier: float = 1.0,
    use_sac_beyond_stride: int = -1,
    drop_path_keep_prob: float = 1.0,
    drop_path_schedule: str = "constant",
    atrous_rates: Sequence[int] = (3, 6, 9),
    aspp_use_only_1x1_proj_conv: bool = False,
    aspp_channels: int = 256,
    semantic_decoder_channels: int = 256,
    instance_decoder_channels: int = 128,
    semantic_low_channels: Sequence[int] = (64, 32),
    instance_low_channels: Sequence[int] = (32, 16),
    semantic_head_channels: int = 256,
    instance_head_channels: int = 32,
    aspp_pool_size: Optional[Sequence[int]] = None,
    void_first_class: bool = False,
    norm_momentum: float = deeplab2_resnet.NORM_MOMENTUM,
    norm_epsilon: float = deeplab2_resnet.NORM_EPSILON,
    kernel_regularizer=None,
    name: str = "deeplab2_panoptic") -> DeepLab2PanopticModel:
  """Builds deeplab2's Panoptic-DeepLab.

  Args:
    num_classes: semantic classes of this project's dataset (with
      `void_first_class`, the head predicts num_classes + 1 channels, the
      first being deeplab2's COCO void class, dropped from the outputs).
    input_size: unused (any input size works); every zoo builder takes it.
    encoder: a key of `deeplab2_resnet.ENCODERS`.
    output_stride: encoder output stride (8, 16, 32).
    stem_width_multiplier, width_multiplier, layer_multiplier: SWideRNet
      scaling (w1, w2, l).
    use_sac_beyond_stride: switchable atrous convolution in the stages
      whose stride reaches this (-1: none).
    drop_path_keep_prob, drop_path_schedule: drop path of the encoder.
    atrous_rates: ASPP rates of both decoders.
    aspp_use_only_1x1_proj_conv: ASPP reduced to its 1x1 projection.
    aspp_channels: ASPP output channels of both decoders.
    semantic_decoder_channels, instance_decoder_channels: fusion channels.
    semantic_low_channels, instance_low_channels: projections of res3, res2.
    semantic_head_channels, instance_head_channels: head channels.
    aspp_pool_size: ASPP image-pooling window in feature pixels (deeplab2
      sets it to the training crop / output stride); None: global pooling.
    void_first_class: see num_classes.
    norm_momentum, norm_epsilon: batch norm.
    kernel_regularizer: for the encoder convolutions (deeplab2 decays the
      encoder kernels only).
    name: model name.

  Returns:
    The model, built for [batch, None, None, 3] inputs.
  """
  del input_size
  if not isinstance(num_classes, int) or num_classes <= 0:
    raise ValueError(f"num_classes must be a positive int, got "
                     f"{num_classes!r}.")
  norm = dict(norm_momentum=norm_momentum, norm_epsilon=norm_epsilon)
  backbone = deeplab2_resnet.build_deeplab2_encoder(
      encoder, output_stride=output_stride,
      stem_width_multiplier=stem_width_multiplier,
      width_multiplier=width_multiplier,
      backbone_layer_multiplier=layer_multiplier,
      use_sac_beyond_stride=use_sac_beyond_stride,
      drop_path_keep_prob=drop_path_keep_prob,
      drop_path_schedule=drop_path_schedule,
      kernel_regularizer=kernel_regularizer, name="backbone", **norm)
  decoder = dict(high_key="res5", low_keys=("res3", "res2"),
                 aspp_channels=aspp_channels, atrous_rates=atrous_rates,
                 aspp_use_only_1x1_proj_conv=aspp_use_only_1x1_proj_conv,
                 **norm)
  semantic_decoder = SingleDecoder(
      low_channels=semantic_low_channels,
      decoder_channels=semantic_decoder_channels, name="semantic_decoder",
      **decoder)
  instance_decoder = SingleDecoder(
      low_channels=instance_low_channels,
      decoder_channels=instance_decoder_channels, name="instance_decoder",
      **decoder)
  model = DeepLab2PanopticModel(
      backbone, semantic_decoder,
      Head(semantic_head_channels, num_classes + int(void_first_class),
           name="semantic_head", **norm),
      instance_decoder,
      Head(instance_head_channels, 1, name="center_head", **norm),
      Head(instance_head_channels, 2, name="offset_head", **norm),
      drop_first_logit=void_first_class, name=name)
  model.set_pool_size(aspp_pool_size)
  model(tf_keras.Input((None, None, 3)))
  return model


class DeepLab2Classifier(tf_keras.Model):
  """deeplab2 encoder + global average pooling + linear classifier.

  deeplab2 publishes the ImageNet encoders without their classifier; the
  checkpoint import sets the encoder and leaves the classifier at its
  initialisation (an ImageNet head is trained here if wanted).
  """

  def __init__(self, backbone: tf_keras.Model, num_classes: int, **kwargs):
    super().__init__(**kwargs)
    self.backbone = backbone
    self.classifier = tf_keras.layers.Dense(num_classes, name="classifier")

  @property
  def checkpoint_items(self) -> Dict[str, tf.Module]:
    return {"backbone": self.backbone}

  def call(self, images, training=None):
    x = tf.cast(images, self.compute_dtype) / 127.5 - 1.0
    features = self.backbone(x, training=training)["backbone_output"]
    return self.classifier(tf.reduce_mean(features, axis=[1, 2]))


def build_deeplab2_classifier(num_classes: int = 1000, input_size=None,
                              encoder: str = "resnet50",
                              output_stride: int = 32, **encoder_kwargs
                             ) -> DeepLab2Classifier:
  """An ImageNet classifier around a deeplab2 encoder."""
  del input_size
  backbone = deeplab2_resnet.build_deeplab2_encoder(
      encoder, output_stride=output_stride, name="backbone",
      **encoder_kwargs)
  model = DeepLab2Classifier(backbone, num_classes,
                             name=f"deeplab2_{encoder}_classifier")
  model(tf_keras.Input((None, None, 3)))
  return model


# deeplab2's published Panoptic-DeepLab configurations
# (configs/{cityscapes,coco}/panoptic_deeplab/*.textproto).
_OS16_RATES = dict(output_stride=16, atrous_rates=(6, 12, 18))
_SWIDERNET = dict(encoder="swidernet", drop_path_keep_prob=0.8,
                  drop_path_schedule="linear", **_OS16_RATES)
PUBLISHED = {
    "deeplab2_panoptic_resnet50_os32": dict(encoder="resnet50"),
    "deeplab2_panoptic_resnet50_beta_os32": dict(encoder="resnet50_beta"),
    "deeplab2_panoptic_wide_resnet41_os16": dict(
        encoder="wide_resnet41", drop_path_keep_prob=0.8,
        drop_path_schedule="linear", **_OS16_RATES),
    "deeplab2_panoptic_swidernet_sac_1_1_1_os16": dict(
        use_sac_beyond_stride=32, **_SWIDERNET),
    "deeplab2_panoptic_swidernet_sac_1_1_3_os16": dict(
        use_sac_beyond_stride=32, layer_multiplier=3.0, **_SWIDERNET),
    "deeplab2_panoptic_swidernet_sac_1_1_4.5_os16": dict(
        use_sac_beyond_stride=32, layer_multiplier=4.5, **_SWIDERNET),
    # Axial-DeepLab checkpoints (configs/cityscapes/axial_deeplab): the
    # ASPP reduced to its 1x1 projection.
    "deeplab2_axial_swidernet_1_1_1_os16": dict(
        encoder="axial_swidernet", aspp_use_only_1x1_proj_conv=True,
        drop_path_keep_prob=0.8, drop_path_schedule="linear", **_OS16_RATES),
    "deeplab2_axial_swidernet_1_1_3_os16": dict(
        encoder="axial_swidernet", aspp_use_only_1x1_proj_conv=True,
        layer_multiplier=3.0, drop_path_keep_prob=0.8,
        drop_path_schedule="linear", **_OS16_RATES),
    "deeplab2_axial_swidernet_1_1_4.5_os16": dict(
        encoder="axial_swidernet", aspp_use_only_1x1_proj_conv=True,
        layer_multiplier=4.5, drop_path_keep_prob=0.8,
        drop_path_schedule="linear", **_OS16_RATES),
    "deeplab2_max_deeplab_s_backbone_os16": dict(
        encoder="max_deeplab_s_backbone", aspp_use_only_1x1_proj_conv=True,
        drop_path_keep_prob=0.8, drop_path_schedule="linear", **_OS16_RATES),
    "deeplab2_max_deeplab_l_backbone_os16": dict(
        encoder="max_deeplab_l_backbone", aspp_use_only_1x1_proj_conv=True,
        drop_path_keep_prob=0.8, drop_path_schedule="linear", **_OS16_RATES),
    "deeplab2_panoptic_coco_resnet50_os32": dict(
        encoder="resnet50", num_classes=133, void_first_class=True),
    "deeplab2_panoptic_coco_resnet50_beta_os32": dict(
        encoder="resnet50_beta", num_classes=133, void_first_class=True),
    "deeplab2_panoptic_coco_resnet50_os16": dict(
        encoder="resnet50", num_classes=133, void_first_class=True,
        **_OS16_RATES),
    "deeplab2_panoptic_coco_resnet50_beta_os16": dict(
        encoder="resnet50_beta", num_classes=133, void_first_class=True,
        **_OS16_RATES),
}

# deeplab2's ImageNet encoders (g3doc/projects/imagenet_pretrained_checkpoints).
PUBLISHED_ENCODERS = {
    "deeplab2_resnet50_imagenet": dict(encoder="resnet50"),
    "deeplab2_resnet50_beta_imagenet": dict(encoder="resnet50_beta"),
    "deeplab2_wide_resnet41_imagenet": dict(encoder="wide_resnet41"),
    "deeplab2_swidernet_sac_1_1_1_imagenet": dict(
        encoder="swidernet", use_sac_beyond_stride=32),
    "deeplab2_swidernet_sac_1_1_3_imagenet": dict(
        encoder="swidernet", use_sac_beyond_stride=32,
        backbone_layer_multiplier=3.0),
    "deeplab2_swidernet_sac_1_1_4.5_imagenet": dict(
        encoder="swidernet", use_sac_beyond_stride=32,
        backbone_layer_multiplier=4.5),
    "deeplab2_axial_swidernet_1_1_1_imagenet": dict(encoder="axial_swidernet"),
    "deeplab2_axial_swidernet_1_1_3_imagenet": dict(
        encoder="axial_swidernet", backbone_layer_multiplier=3.0),
    "deeplab2_axial_swidernet_1_1_4.5_imagenet": dict(
        encoder="axial_swidernet", backbone_layer_multiplier=4.5),
    "deeplab2_max_deeplab_s_backbone_imagenet": dict(
        encoder="max_deeplab_s_backbone"),
    "deeplab2_max_deeplab_l_backbone_imagenet": dict(
        encoder="max_deeplab_l_backbone"),
}

for _name, _args in PUBLISHED.items():
  register_model(
      _name, build_deeplab2_panoptic, task="panoptic",
      description=(f"deeplab2 Panoptic-DeepLab / Axial-DeepLab, "
                   f"{_args['encoder']} encoder, "
                   f"OS{_args.get('output_stride', 32)} (imports deeplab2's "
                   "checkpoint)."),
      **dict(dict(num_classes=19, name=_name.replace(".", "_")), **_args))

for _name, _args in PUBLISHED_ENCODERS.items():
  register_model(
      _name, build_deeplab2_classifier, task="classification",
      description=(f"deeplab2 {_args['encoder']} ImageNet encoder "
                   "(imports deeplab2's checkpoint)."),
      num_classes=1000, input_size=(224, 224), **_args)
