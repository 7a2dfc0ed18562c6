"""Axial-ResNet backbones and classifiers (Axial-DeepLab paper, section 4.1).

A ResNet bottleneck network whose 3x3 convolutions are replaced by
position-sensitive axial attention (`AxialBlock`). Stage s (2..5) has block
width f = base_width[s] * width_multiplier and 4f output channels; the
first block of stages 3-5 attends at the previous stage's resolution and then
downsamples.

Stems pad their strided convolutions and the max pool symmetrically
(`layers.common.PaddedConv2D` / `PaddedMaxPool2D`, as the official codes do),
so weights trained there line up at every input size, even ones included.

Stems:
  * "conv": 7x7 stride-2 conv (64 * width_multiplier channels) + BN + ReLU +
    3x3 stride-2 max pool (the conv-stem Axial-ResNets of the paper's
    ImageNet results).
  * "inception": three 3x3 convs (64 stride 2, 64, 128) + BN + ReLU, then a
    3x3 stride-2 max pool (the Panoptic-DeepLab stem used by Axial-DeepLab).
  * "axial": three axial bottleneck blocks at the image resolution (the first
    with stride 2, output 64 * width_multiplier channels) then a 3x3 stride-2
    max pool (the stand-alone / "full" Axial-ResNet).

Spans: `span=None` gives global attention whose relative tables cover the
feature size of `input_size` at each block (56/28/14/7 at 224x224);
`span=k` gives local attention with span k everywhere (any input size).
"""

from typing import Dict, Optional, Sequence

import tensorflow as tf
import tf_keras

from axial_deeplab_tf import layer_specs
from axial_deeplab_tf.layers import common
from axial_deeplab_tf.layers.axial_attention import AxialBlock
from axial_deeplab_tf.modeling.registry import register_model

BASE_WIDTHS = layer_specs.AXIAL_RESNET_BASE_WIDTHS
LAYOUTS = layer_specs.AXIAL_RESNET_LAYOUTS


@layer_specs.builder(layer_specs.axial_resnet_backbone)
def build_axial_resnet_backbone(arguments) -> tf_keras.Model:
  """Builds an Axial-ResNet backbone.

  Arguments: see `layer_specs.axial_resnet_backbone`.

  Returns:
    A tf_keras.Model mapping [batch, h, w, 3] float images (already
    normalised) to a dict of endpoints "stem" (stride 4 before stage 2),
    "res2".."res5" ([batch, h/stride, w/stride, 4f]).
  """
  a = arguments
  plan = layer_specs.axial_resnet_plan(
      **{k: v for k, v in a.items() if k != "name"})
  bn = dict(momentum=a["norm_momentum"], epsilon=a["norm_epsilon"],
            use_sync_bn=a["use_sync_bn"])
  conv = dict(use_bias=False, kernel_initializer="he_normal",
              kernel_regularizer=a["kernel_regularizer"])

  inputs = tf_keras.Input(shape=(plan["height"], plan["width"], 3),
                          name="images")
  x = inputs
  if a["stem"] == "conv":
    x = common.PaddedConv2D(plan["stem_width"], 7, strides=2,
                            name="stem_conv", **conv)(x)
    x = common.batch_norm(name="stem_bn", **bn)(x)
    x = tf_keras.layers.ReLU(name="stem_relu")(x)
  elif a["stem"] == "inception":
    for i, (filters, strides) in enumerate(zip(a["stem_channels"], (2, 1, 1))):
      x = common.PaddedConv2D(filters, 3, strides=strides,
                              name=f"stem_conv{i + 1}", **conv)(x)
      x = common.batch_norm(name=f"stem_bn{i + 1}", **bn)(x)
      x = tf_keras.layers.ReLU(name=f"stem_relu{i + 1}")(x)
  for block in plan["stem_blocks"]:
    x = AxialBlock(**block)(x)
  x = common.PaddedMaxPool2D(3, strides=2, name="stem_pool")(x)
  endpoints = {"stem": x}
  for endpoint, blocks in plan["stages"]:
    for block in blocks:
      x = AxialBlock(**block)(x)
    endpoints[endpoint] = x
  return tf_keras.Model(inputs, endpoints, name=a["name"])


@tf_keras.utils.register_keras_serializable(package="AxialDeepLab")
class ImageClassifier(tf_keras.Model):
  """A backbone, global average pooling and a dense classifier.

  Input: [batch, h, w, 3] images in [0, 255], normalised inside as
  x / 127.5 - 1, or as (x - input_mean) / input_std per channel when those
  are given (the ImageNet statistics of weights trained elsewhere).
  Output: {"logits": [batch, num_classes]}.
  """

  def __init__(self, backbone: tf_keras.Model, num_classes: int,
               endpoint: str = "res5", dropout_rate: float = 0.0,
               normalize_input: bool = True,
               input_mean: Optional[Sequence[float]] = None,
               input_std: Optional[Sequence[float]] = None, **kwargs):
    super().__init__(**kwargs)
    if not isinstance(num_classes, int) or num_classes <= 0:
      raise ValueError(f"num_classes must be a positive int, got "
                       f"{num_classes!r}.")
    if (input_mean is None) != (input_std is None):
      raise ValueError(f"input_mean and input_std go together, got "
                       f"input_mean={input_mean!r}, input_std={input_std!r}.")
    if input_mean is not None:
      for arg, value in (("input_mean", input_mean),
                         ("input_std", input_std)):
        if len(value) != 3:
          raise ValueError(f"{arg} must have 3 entries (RGB), got {value!r}.")
      if min(input_std) <= 0:
        raise ValueError(f"input_std must be positive, got {input_std!r}.")
    self._input_mean = (None if input_mean is None else
                        tuple(float(v) for v in input_mean))
    self._input_std = (None if input_std is None else
                       tuple(float(v) for v in input_std))
    self.backbone = backbone
    self._num_classes = num_classes
    self._endpoint = endpoint
    self._normalize_input = normalize_input
    self._dropout_rate = dropout_rate
    self._pool = tf_keras.layers.GlobalAveragePooling2D()
    self._dropout = tf_keras.layers.Dropout(dropout_rate)
    self._fc = tf_keras.layers.Dense(num_classes, name="fc")

  def call(self, images, training=None):
    x = tf.cast(images, self.compute_dtype)
    if self._normalize_input and self._input_mean is not None:
      x = (x - tf.constant(self._input_mean, x.dtype)) / tf.constant(
          self._input_std, x.dtype)
    elif self._normalize_input:
      x = x / 127.5 - 1.0
    features = self.backbone(x, training=training)[self._endpoint]
    x = self._dropout(self._pool(features), training=training)
    return {"logits": tf.cast(self._fc(x), tf.float32)}

  @property
  def checkpoint_items(self) -> Dict[str, tf.Module]:
    return {"backbone": self.backbone}


def build_axial_resnet_classifier(
    num_classes: int = 1000,
    input_size=(224, 224),
    dropout_rate: float = 0.0,
    input_mean: Optional[Sequence[float]] = None,
    input_std: Optional[Sequence[float]] = None,
    **backbone_kwargs) -> tf_keras.Model:
  """Builds an Axial-ResNet ImageNet-style classifier.

  Args:
    num_classes: classifier outputs.
    input_size: (height, width); sets the global spans.
    dropout_rate: dropout before the classifier.
    input_mean, input_std: per-channel input statistics in [0, 255] units
      (e.g. the ImageNet ones of the PyTorch reference); None normalises as
      x / 127.5 - 1.
    **backbone_kwargs: `build_axial_resnet_backbone` arguments.

  Returns:
    An ImageClassifier.
  """
  backbone = build_axial_resnet_backbone(input_size=input_size,
                                         **backbone_kwargs)
  model = ImageClassifier(backbone, num_classes, dropout_rate=dropout_rate,
                          input_mean=input_mean, input_std=input_std,
                          name=backbone_kwargs.get("name", "axial_resnet"))
  h, w = input_size if input_size is not None else (None, None)
  model(tf_keras.Input((h, w, 3)))
  return model


def build_resnet50_classifier(num_classes: int = 1000, input_size=(224, 224),
                              **unused) -> tf_keras.Model:
  """The convolutional ResNet-50 baseline (tf_keras.applications, no weights)."""
  del unused
  h, w = input_size if input_size is not None else (None, None)
  backbone = tf_keras.applications.ResNet50(
      include_top=False, weights=None, input_shape=(h, w, 3))
  features = tf_keras.Model(backbone.input, {"res5": backbone.output},
                            name="resnet50")
  model = ImageClassifier(features, num_classes, normalize_input=True,
                          name="resnet_50")
  model(tf_keras.Input((h, w, 3)))
  return model


# The classifiers of the zoo (ImageNet).
_WIDTHS = {"s": 0.5, "m": 0.75, "l": 1.0, "xl": 2.0}

for _size, _mult in _WIDTHS.items():
  register_model(
      f"axial_resnet_50{_size}", build_axial_resnet_classifier,
      task="classification",
      description=(f"Conv-stem Axial-ResNet-50-{_size.upper()}, global spans "
                   "(ImageNet)."),
      depth=50, width_multiplier=_mult, stem="conv", span=None,
      num_classes=1000, input_size=(224, 224),
      name=f"axial_resnet_50{_size}")
  if _size != "xl":
    register_model(
        f"full_axial_resnet_50{_size}",
        build_axial_resnet_classifier, task="classification",
        description=(f"Stand-alone Axial-ResNet-50-{_size.upper()}: axial "
                     "stem, span 15 in all blocks."),
        depth=50, width_multiplier=_mult, stem="axial", span=15,
        stem_span=15, num_classes=1000, input_size=(224, 224),
        name=f"full_axial_resnet_50{_size}")

register_model(
    "axial_resnet_26s", build_axial_resnet_classifier,
    task="classification",
    description="Conv-stem Axial-ResNet-26-S, global spans (ImageNet).",
    depth=26, width_multiplier=0.5, stem="conv", span=None, num_classes=1000,
    input_size=(224, 224), name="axial_resnet_26s")

for _name, _ps in (("sasa_resnet_50", False), ("ps_sasa_resnet_50", True)):
  register_model(
      _name, build_axial_resnet_classifier,
      task="classification",
      description=("Conv-stem ResNet-50 with 7x7 local self-attention "
                   + ("(position-sensitive) " if _ps else "") +
                   "in place of 3x3 convs (SASA baseline)."),
      depth=50, width_multiplier=1.0, stem="conv", span=None,
      attention_type="local", kernel_size=7, block_filters=(32, 64, 128, 256),
      expansion=8, use_key_positional=_ps, use_value_positional=_ps,
      num_classes=1000, input_size=(224, 224), name=_name)

register_model(
    "resnet_50", build_resnet50_classifier,
    task="classification",
    description="Convolutional ResNet-50 baseline (tf_keras.applications).",
    num_classes=1000, input_size=(224, 224))
