"""Registers every zoo model (importing this module fills the registry)."""

import importlib

from axial_deeplab_tf.modeling.backbones import axial_resnet
from axial_deeplab_tf.modeling.registry import register_model

_WIDTHS = {"s": 0.5, "m": 0.75, "l": 1.0, "xl": 2.0}

for _size, _mult in _WIDTHS.items():
  register_model(
      f"axial_resnet_50{_size}", axial_resnet.build_axial_resnet_classifier,
      task="classification",
      description=(f"Conv-stem Axial-ResNet-50-{_size.upper()}, global spans "
                   "(ImageNet)."),
      depth=50, width_multiplier=_mult, stem="conv", span=None,
      num_classes=1000, input_size=(224, 224),
      name=f"axial_resnet_50{_size}")
  if _size != "xl":
    register_model(
        f"full_axial_resnet_50{_size}",
        axial_resnet.build_axial_resnet_classifier, task="classification",
        description=(f"Stand-alone Axial-ResNet-50-{_size.upper()}: axial "
                     "stem, span 15 in all blocks."),
        depth=50, width_multiplier=_mult, stem="axial", span=15,
        stem_span=15, num_classes=1000, input_size=(224, 224),
        name=f"full_axial_resnet_50{_size}")

register_model(
    "axial_resnet_26s", axial_resnet.build_axial_resnet_classifier,
    task="classification",
    description="Conv-stem Axial-ResNet-26-S, global spans (ImageNet).",
    depth=26, width_multiplier=0.5, stem="conv", span=None, num_classes=1000,
    input_size=(224, 224), name="axial_resnet_26s")

for _name, _ps in (("sasa_resnet_50", False), ("ps_sasa_resnet_50", True)):
  register_model(
      _name, axial_resnet.build_axial_resnet_classifier,
      task="classification",
      description=("Conv-stem ResNet-50 with 7x7 local self-attention "
                   + ("(position-sensitive) " if _ps else "") +
                   "in place of 3x3 convs (SASA baseline)."),
      depth=50, width_multiplier=1.0, stem="conv", span=None,
      attention_type="local", kernel_size=7, block_filters=(32, 64, 128, 256),
      expansion=8, use_key_positional=_ps, use_value_positional=_ps,
      num_classes=1000, input_size=(224, 224), name=_name)

register_model(
    "resnet_50", axial_resnet.build_resnet50_classifier,
    task="classification",
    description="Convolutional ResNet-50 baseline (tf_keras.applications).",
    num_classes=1000, input_size=(224, 224))

# Model families written in their own modules register themselves on import.
for _module in ("axial_deeplab", "segnext", "isanet", "conv_baselines",
                "deeplab2_panoptic"):
  try:
    importlib.import_module(f"axial_deeplab_tf.modeling.{_module}")
  except ModuleNotFoundError as e:  # Only a missing module itself is skipped.
    if e.name != f"axial_deeplab_tf.modeling.{_module}":
      raise
