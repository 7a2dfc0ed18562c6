"""MSCAN: the multi-scale convolutional attention encoder of SegNeXt."""

from typing import Any, Dict, Optional, Sequence

import tensorflow as tf
import tf_keras

from axial_deeplab_tf.layers import common
from axial_deeplab_tf.layers import msca

layers = tf_keras.layers

# Variant -> encoder architecture (SegNeXt paper and official configs).
MSCAN_SPECS = {
    "t": dict(embed_dims=(32, 64, 160, 256), depths=(3, 3, 5, 2),
              mlp_ratios=(8, 8, 4, 4), drop_path_rate=0.1),
    "s": dict(embed_dims=(64, 128, 320, 512), depths=(2, 2, 4, 2),
              mlp_ratios=(8, 8, 4, 4), drop_path_rate=0.1),
    "b": dict(embed_dims=(64, 128, 320, 512), depths=(3, 3, 12, 3),
              mlp_ratios=(8, 8, 4, 4), drop_path_rate=0.1),
    "l": dict(embed_dims=(64, 128, 320, 512), depths=(3, 5, 27, 3),
              mlp_ratios=(8, 8, 4, 4), drop_path_rate=0.3),
}


def _check_int_tuple(name: str, value: Any, length: int):
  if isinstance(value, (str, bytes)) or not isinstance(
      value, Sequence) or len(value) != length or any(
          isinstance(v, bool) or not isinstance(v, int) or v < 1
          for v in value):
    raise ValueError(f"{name} must be {length} positive ints, got {value!r}.")
  return tuple(value)


@tf_keras.utils.register_keras_serializable(package="AxialDeepLab")
class MSCAN(tf_keras.Model):
  """MSCAN encoder: four stages at strides 4, 8, 16, 32.

  Stage 1 embeds with two 3x3 stride-2 convs (C0/2 with BN and GELU, then C0
  with BN); stages 2-4 with one 3x3 stride-2 conv and BN. Each stage then
  runs `MSCANBlock`s and ends with a LayerNorm whose output is both the stage
  output and the next stage's input. Strided convs pad one pixel on each side
  (PyTorch `padding=1`), so any input size works (odd sizes round up).
  Outputs a dict {"2": stride 4, "3": stride 8, "4": stride 16, "5": stride
  32} of [batch, h_i, w_i, embed_dims[i]] maps (keys are log2 strides, as in
  Model Garden backbones).
  """

  def __init__(self,
               embed_dims: Sequence[int] = (64, 128, 320, 512),
               depths: Sequence[int] = (3, 3, 12, 3),
               mlp_ratios: Sequence[float] = (8, 8, 4, 4),
               drop_path_rate: float = 0.1,
               dropout_rate: float = 0.0,
               input_specs: tf_keras.layers.InputSpec = layers.InputSpec(
                   shape=[None, None, None, 3]),
               use_sync_bn: bool = False,
               norm_momentum: float = 0.9,
               norm_epsilon: float = 1e-5,
               layer_norm_epsilon: float = 1e-5,
               kernel_initializer: Any = None,
               kernel_regularizer: Optional[
                   tf_keras.regularizers.Regularizer] = None,
               bias_regularizer: Optional[
                   tf_keras.regularizers.Regularizer] = None,
               **kwargs):
    """Builds the encoder.

    Args:
      embed_dims: channels of the four stages.
      depths: number of blocks in each stage.
      mlp_ratios: MLP expansion of each stage's blocks.
      drop_path_rate: stochastic-depth rate of the last block; rates rise
        linearly from 0 over all blocks.
      dropout_rate: dropout inside the MLPs.
      input_specs: input spec, [batch, height, width, 3] (None = any).
      use_sync_bn: synchronise BN statistics across replicas.
      norm_momentum: BN momentum (Keras convention; PyTorch 0.1 == 0.9).
      norm_epsilon: BN epsilon.
      layer_norm_epsilon: epsilon of the stage-end LayerNorms.
      kernel_initializer: conv initializer; default N(0, sqrt(2 / fan_out)).
      kernel_regularizer: optional regularizer of the conv kernels.
      bias_regularizer: optional regularizer of the conv biases.
      **kwargs: keyword arguments of `tf_keras.Model`.
    """
    embed_dims = _check_int_tuple("embed_dims", embed_dims, 4)
    depths = _check_int_tuple("depths", depths, 4)
    if isinstance(mlp_ratios, (str, bytes)) or not isinstance(
        mlp_ratios, Sequence) or len(mlp_ratios) != 4:
      raise ValueError(f"mlp_ratios must be 4 positive numbers, got "
                       f"{mlp_ratios!r}.")
    if embed_dims[0] % 2:
      raise ValueError(f"embed_dims[0] must be even (the stem's first conv "
                       f"has embed_dims[0] / 2 channels), got {embed_dims}.")
    if isinstance(drop_path_rate, bool) or not isinstance(
        drop_path_rate, (int, float)) or not 0.0 <= drop_path_rate < 1.0:
      raise ValueError(f"drop_path_rate must be in [0, 1), got "
                       f"{drop_path_rate!r}.")
    self._config_dict = {
        "embed_dims": list(embed_dims),
        "depths": list(depths),
        "mlp_ratios": list(mlp_ratios),
        "drop_path_rate": drop_path_rate,
        "dropout_rate": dropout_rate,
        "use_sync_bn": use_sync_bn,
        "norm_momentum": norm_momentum,
        "norm_epsilon": norm_epsilon,
        "layer_norm_epsilon": layer_norm_epsilon,
        "kernel_initializer": kernel_initializer,
        "kernel_regularizer": kernel_regularizer,
        "bias_regularizer": bias_regularizer,
    }
    self._input_specs = input_specs
    initializer = tf_keras.initializers.get(
        kernel_initializer or msca.he_fan_out_initializer())
    kernel_regularizer = tf_keras.regularizers.get(kernel_regularizer)
    bias_regularizer = tf_keras.regularizers.get(bias_regularizer)

    def strided_conv(x, filters, name):
      # PyTorch padding=1: pad one pixel on every side, then a valid conv.
      x = layers.ZeroPadding2D(1, name=f"{name}_pad")(x)
      return common.conv2d(filters, 3, name, initializer, kernel_regularizer,
                           bias_regularizer, strides=2, padding="valid")(x)

    def batch_norm(x, name):
      return common.batch_norm(norm_momentum, norm_epsilon, use_sync_bn,
                               name)(x)

    inputs = tf_keras.Input(shape=input_specs.shape[1:])
    total_blocks = sum(depths)
    block_index = 0
    endpoints = {}
    x = inputs
    for stage in range(4):
      prefix = f"stage{stage + 1}"
      if stage == 0:
        x = strided_conv(x, embed_dims[0] // 2, f"{prefix}_stem_conv1")
        x = batch_norm(x, f"{prefix}_stem_bn1")
        x = layers.Activation(tf_keras.activations.gelu,
                              name=f"{prefix}_stem_gelu")(x)
        x = strided_conv(x, embed_dims[0], f"{prefix}_stem_conv2")
        x = batch_norm(x, f"{prefix}_stem_bn2")
      else:
        x = strided_conv(x, embed_dims[stage], f"{prefix}_embed_conv")
        x = batch_norm(x, f"{prefix}_embed_bn")
      for block in range(depths[stage]):
        rate = (drop_path_rate * block_index / (total_blocks - 1)
                if total_blocks > 1 else 0.0)
        x = msca.MSCANBlock(
            mlp_ratio=mlp_ratios[stage], drop_path_rate=rate,
            dropout_rate=dropout_rate, use_sync_bn=use_sync_bn,
            norm_momentum=norm_momentum, norm_epsilon=norm_epsilon,
            kernel_initializer=initializer,
            kernel_regularizer=kernel_regularizer,
            bias_regularizer=bias_regularizer,
            name=f"{prefix}_block{block + 1}")(x)
        block_index += 1
      # Statistics over channels in float32 (Keras LayerNorm upcasts fp16).
      x = layers.LayerNormalization(epsilon=layer_norm_epsilon,
                                    name=f"{prefix}_norm")(x)
      endpoints[str(stage + 2)] = x

    self._output_specs = {k: v.get_shape() for k, v in endpoints.items()}
    super().__init__(inputs=inputs, outputs=endpoints, **kwargs)

  def get_config(self) -> Dict[str, Any]:
    config = dict(self._config_dict)
    config.update(common.weight_config(config["kernel_initializer"],
                                       config["kernel_regularizer"],
                                       config["bias_regularizer"]))
    return config

  @classmethod
  def from_config(cls, config, custom_objects=None):
    return cls(**config)

  @property
  def output_specs(self) -> Dict[str, tf.TensorShape]:
    """A dict of {level: TensorShape} of the outputs."""
    return self._output_specs


def build_mscan(variant: str = "b", **overrides) -> MSCAN:
  """Builds an MSCAN encoder of a named variant.

  Args:
    variant: one of "t", "s", "b", "l".
    **overrides: `MSCAN` arguments replacing the variant's (e.g.
      drop_path_rate, input_specs).

  Returns:
    An `MSCAN` model.
  """
  if variant not in MSCAN_SPECS:
    raise ValueError(f"variant must be one of {sorted(MSCAN_SPECS)}, got "
                     f"{variant!r}.")
  kwargs = dict(MSCAN_SPECS[variant])
  kwargs.update(overrides)
  return MSCAN(**kwargs)
