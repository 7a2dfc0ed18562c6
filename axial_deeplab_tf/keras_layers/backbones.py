"""Keras 3 Axial-ResNet backbones and classifiers.

The tf_keras `modeling.backbones.axial_resnet` networks rebuilt as
`keras.Model`s with the same layer names, so `copy_weights` moves an
imported tf_keras checkpoint into them (and back). Stems "conv",
"inception" and "axial"; spans, strides and widths as the tf_keras builder;
the stems pad symmetrically (`base.SymmetricPad` + 'valid'), as the
tf_keras stems' PaddedConv2D / PaddedMaxPool2D.
"""

from typing import Optional, Sequence, Tuple

import keras

from axial_deeplab_tf.keras_layers import base
from axial_deeplab_tf.keras_layers.axial import AxialBlock

BASE_WIDTHS = (64, 128, 256, 512)
LAYOUTS = {26: (1, 2, 4, 1), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
# Zoo sizes: (depth, width multiplier).
SIZES = {"26s": (26, 0.5), "50s": (50, 0.5), "50m": (50, 0.75),
         "50l": (50, 1.0)}


def _ceil_div(a, b):
  return None if a is None else -(-a // b)


def build_axial_resnet_backbone(
    input_size: Optional[Tuple[Optional[int], Optional[int]]] = (224, 224),
    depth: int = 50,
    width_multiplier: float = 1.0,
    stem: str = "conv",
    span: Optional[int] = None,
    stem_span: int = 15,
    stem_channels: Sequence[int] = (64, 64, 128),
    output_stride: int = 32,
    attention_type: str = "axial",
    kernel_size: int = 7,
    block_filters: Optional[Sequence[int]] = None,
    expansion: int = 4,
    num_heads: int = 8,
    use_query_positional: bool = True,
    use_key_positional: bool = True,
    use_value_positional: bool = True,
    drop_path_rate: float = 0.0,
    norm_momentum: float = 0.99,
    norm_epsilon: float = 1e-3,
    kernel_regularizer=None,
    name: str = "axial_resnet") -> keras.Model:
  """Builds a Keras 3 Axial-ResNet backbone (arguments as the tf_keras one).

  Returns:
    A keras.Model mapping [batch, h, w, 3] normalised images to a dict of
    endpoints "stem", "res2".."res5".
  """
  if depth not in LAYOUTS:
    raise ValueError(f"depth must be one of {sorted(LAYOUTS)}, got {depth!r}.")
  if stem not in ("conv", "inception", "axial"):
    raise ValueError(f"stem must be 'conv', 'inception' or 'axial', got "
                     f"{stem!r}.")
  if output_stride not in (16, 32):
    raise ValueError(f"output_stride must be 16 or 32, got {output_stride!r}.")
  if width_multiplier <= 0:
    raise ValueError(f"width_multiplier must be positive, got "
                     f"{width_multiplier!r}.")
  height, width = input_size if input_size is not None else (None, None)
  if span is None and attention_type == "axial" and (height is None or
                                                     width is None):
    raise ValueError("Global attention (span=None) needs a known input_size "
                     f"(height, width); got {input_size!r}. Use a local span "
                     "for inputs of any size.")
  layout = LAYOUTS[depth]
  if block_filters is None:
    block_filters = [int(round(w * width_multiplier)) for w in BASE_WIDTHS]
  total_blocks = sum(layout)
  bn = dict(momentum=norm_momentum, epsilon=norm_epsilon)
  conv = dict(use_bias=False, kernel_initializer="he_normal",
              kernel_regularizer=kernel_regularizer)
  block_common = dict(
      num_heads=num_heads, attention_type=attention_type,
      kernel_size=kernel_size, use_query_positional=use_query_positional,
      use_key_positional=use_key_positional,
      use_value_positional=use_value_positional, expansion=expansion,
      kernel_regularizer=kernel_regularizer, norm_momentum=norm_momentum,
      norm_epsilon=norm_epsilon)

  inputs = keras.Input(shape=(height, width, 3), name="images")
  x = inputs
  stem_width = int(round(64 * width_multiplier))
  if stem == "conv":
    x = base.SymmetricPad(7, name="stem_pad")(x)
    x = keras.layers.Conv2D(stem_width, 7, strides=2, name="stem_conv",
                            **conv)(x)
    x = base.batch_norm(name="stem_bn", **bn)(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
  elif stem == "inception":
    if len(stem_channels) != 3:
      raise ValueError(f"stem_channels must have 3 entries, got "
                       f"{stem_channels!r}.")
    for i, (filters, strides) in enumerate(zip(stem_channels, (2, 1, 1))):
      x = base.SymmetricPad(3, name=f"stem_pad{i + 1}")(x)
      x = keras.layers.Conv2D(filters, 3, strides=strides,
                              name=f"stem_conv{i + 1}", **conv)(x)
      x = base.batch_norm(name=f"stem_bn{i + 1}", **bn)(x)
      x = keras.layers.ReLU(name=f"stem_relu{i + 1}")(x)
  else:
    stem_filters = -(-max(stem_width // expansion, 1) // num_heads) * num_heads
    for i in range(3):
      x = AxialBlock(filters=stem_filters, strides=2 if i == 0 else 1,
                     span=stem_span, name=f"stem_block{i + 1}",
                     **dict(block_common, attention_type="axial"))(x)
  x = base.SymmetricPad(3, fill="min", name="stem_pool_pad")(x)
  x = keras.layers.MaxPooling2D(3, strides=2, name="stem_pool")(x)
  endpoints = {"stem": x}
  current_h, current_w = _ceil_div(height, 4), _ceil_div(width, 4)
  block_index = 0
  for stage, (num_blocks, filters) in enumerate(zip(layout, block_filters)):
    stage_stride = 1 if stage == 0 else 2
    if stage == 3 and output_stride == 16:
      stage_stride = 1
    for i in range(num_blocks):
      strides = stage_stride if i == 0 else 1
      rate = drop_path_rate * block_index / max(total_blocks - 1, 1)
      max_length = None
      if span is None and attention_type == "axial":
        max_length = (current_h, current_w)
      x = AxialBlock(filters=filters, strides=strides, span=span,
                     max_length=max_length, drop_path_rate=rate,
                     name=f"res{stage + 2}_block{i + 1}", **block_common)(x)
      if strides > 1:
        current_h = _ceil_div(current_h, strides)
        current_w = _ceil_div(current_w, strides)
      block_index += 1
    endpoints[f"res{stage + 2}"] = x
  return keras.Model(inputs, endpoints, name=name)


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
