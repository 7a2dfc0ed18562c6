"""Keras 3 Axial-ResNet backbones and classifiers.

The tf_keras `modeling.backbones.axial_resnet` networks rebuilt as
`keras.Model`s with the same layer names, so `copy_weights` moves an
imported tf_keras checkpoint into them (and back). Stems "conv",
"inception" and "axial"; spans, strides and widths as the tf_keras builder;
the stems pad symmetrically (`base.SymmetricPad` + 'valid'), as the
tf_keras stems' PaddedConv2D / PaddedMaxPool2D.
"""


import keras

from axial_deeplab_tf import layer_specs
from axial_deeplab_tf.keras_layers import base
from axial_deeplab_tf.keras_layers.axial import AxialBlock

BASE_WIDTHS = layer_specs.AXIAL_RESNET_BASE_WIDTHS
LAYOUTS = layer_specs.AXIAL_RESNET_LAYOUTS
# Zoo sizes: (depth, width multiplier).
SIZES = {"26s": (26, 0.5), "50s": (50, 0.5), "50m": (50, 0.75),
         "50l": (50, 1.0)}


@layer_specs.builder(layer_specs.axial_resnet_backbone,
                     without=("use_sync_bn", "recompute_grad"))
def build_axial_resnet_backbone(arguments) -> keras.Model:
  """Builds a Keras 3 Axial-ResNet backbone (arguments as the tf_keras one,
  `layer_specs.axial_resnet_backbone`, without use_sync_bn and
  recompute_grad).

  Returns:
    A keras.Model mapping [batch, h, w, 3] normalised images to a dict of
    endpoints "stem", "res2".."res5".
  """
  a = arguments
  plan = layer_specs.axial_resnet_plan(
      **{k: v for k, v in a.items() if k != "name"})
  bn = dict(momentum=a["norm_momentum"], epsilon=a["norm_epsilon"])
  conv = dict(use_bias=False, kernel_initializer="he_normal",
              kernel_regularizer=a["kernel_regularizer"])

  inputs = keras.Input(shape=(plan["height"], plan["width"], 3),
                       name="images")
  x = inputs
  if a["stem"] == "conv":
    x = base.SymmetricPad(7, name="stem_pad")(x)
    x = keras.layers.Conv2D(plan["stem_width"], 7, strides=2,
                            name="stem_conv", **conv)(x)
    x = base.batch_norm(name="stem_bn", **bn)(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
  elif a["stem"] == "inception":
    for i, (filters, strides) in enumerate(zip(a["stem_channels"], (2, 1, 1))):
      x = base.SymmetricPad(3, name=f"stem_pad{i + 1}")(x)
      x = keras.layers.Conv2D(filters, 3, strides=strides,
                              name=f"stem_conv{i + 1}", **conv)(x)
      x = base.batch_norm(name=f"stem_bn{i + 1}", **bn)(x)
      x = keras.layers.ReLU(name=f"stem_relu{i + 1}")(x)
  for block in plan["stem_blocks"]:
    x = AxialBlock(**block)(x)
  x = base.SymmetricPad(3, fill="min", name="stem_pool_pad")(x)
  x = keras.layers.MaxPooling2D(3, strides=2, name="stem_pool")(x)
  endpoints = {"stem": x}
  for endpoint, blocks in plan["stages"]:
    for block in blocks:
      x = AxialBlock(**block)(x)
    endpoints[endpoint] = x
  return keras.Model(inputs, endpoints, name=a["name"])


def build_axial_resnet_classifier(num_classes: int = 1000,
                                  input_size=(224, 224),
                                  dropout_rate: float = 0.0,
                                  endpoint: str = "res5",
                                  normalize_input: bool = True,
                                  **backbone_kwargs) -> keras.Model:
  """A Keras 3 Axial-ResNet classifier: backbone, global pool, dense "fc".

  Input [batch, h, w, 3] images in [0, 255] (normalised inside as
  x / 127.5 - 1 unless normalize_input=False); output {"logits": [batch,
  num_classes]} as the tf_keras ImageClassifier.
  """
  if isinstance(num_classes, bool) or not isinstance(num_classes, int) or (
      num_classes <= 0):
    raise ValueError(f"num_classes must be a positive int, got "
                     f"{num_classes!r}.")
  name = backbone_kwargs.pop("name", "axial_resnet")
  backbone = build_axial_resnet_backbone(input_size=input_size, name=name,
                                         **backbone_kwargs)
  h, w = input_size if input_size is not None else (None, None)
  images = keras.Input((h, w, 3), name="images")
  x = images
  if normalize_input:
    x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="normalize")(x)
  features = backbone(x)[endpoint]
  x = keras.layers.GlobalAveragePooling2D(name="pool")(features)
  x = keras.layers.Dropout(dropout_rate, name="dropout")(x)
  logits = keras.layers.Dense(num_classes, name="fc", dtype="float32")(x)
  return keras.Model(images, {"logits": logits}, name=f"{name}_classifier")


def build_zoo_classifier(size: str, num_classes: int = 1000,
                         input_size=(224, 224), **kwargs) -> keras.Model:
  """The conv-stem Axial-ResNet-`size` classifier ("26s", "50s", "50m",
  "50l"), global spans sized for `input_size`."""
  if size not in SIZES:
    raise ValueError(f"size must be one of {sorted(SIZES)}, got {size!r}.")
  depth, mult = SIZES[size]
  return build_axial_resnet_classifier(
      num_classes=num_classes, input_size=input_size, depth=depth,
      width_multiplier=mult, stem="conv", span=None,
      name=f"axial_resnet_{size}", **kwargs)
