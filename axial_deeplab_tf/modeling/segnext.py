"""SegNeXt semantic segmentation: MSCAN encoder + LightHamHead decoder.

Guo et al., "SegNeXt: Rethinking Convolutional Attention Design for Semantic
Segmentation", NeurIPS 2022. Zoo names: segnext_t, segnext_s, segnext_b,
segnext_l (trainable parameters at 150 classes: 4,263,414 / 13,932,886 /
27,636,310 / 48,926,550).
"""

from typing import Any, Dict, Optional, Sequence

import tensorflow as tf
import tf_keras

from axial_deeplab_tf.layers import common
from axial_deeplab_tf.modeling import model_inputs
from axial_deeplab_tf.modeling import registry
from axial_deeplab_tf.modeling.backbones import mscan
from axial_deeplab_tf.modeling.heads.light_ham_head import LightHamHead
# The input checks and normalisations live in `model_inputs` (ISANet uses
# them too); their names stay importable from here.
from axial_deeplab_tf.modeling.model_inputs import check_input_normalization
from axial_deeplab_tf.modeling.model_inputs import check_input_size  # pylint: disable=unused-import
from axial_deeplab_tf.modeling.model_inputs import normalize_input


@tf_keras.utils.register_keras_serializable(package="AxialDeepLab")
class SegNeXt(tf_keras.Model):
  """SegNeXt: MSCAN stages 2-4 -> LightHamHead -> bilinear upsampling.

  Call returns {"semantic_logits": [batch, height, width, num_classes]}
  (float32) at the input resolution; the head predicts at stride 8 and is
  upsampled bilinearly with half-pixel centres. Any input size works.
  """

  def __init__(self,
               num_classes: int,
               embed_dims: Sequence[int] = (64, 128, 320, 512),
               depths: Sequence[int] = (3, 3, 12, 3),
               mlp_ratios: Sequence[float] = (8, 8, 4, 4),
               drop_path_rate: float = 0.1,
               dropout_rate: float = 0.0,
               head_channels: int = 512,
               ham_channels: Optional[int] = None,
               md_r: int = 64,
               md_s: int = 1,
               train_steps: int = 6,
               eval_steps: int = 7,
               inv_t: float = 1.0,
               one_step_gradient: bool = True,
               nmf_seed: Optional[int] = None,
               head_dropout_rate: float = 0.1,
               norm_groups: int = 32,
               use_sync_bn: bool = False,
               norm_momentum: float = 0.9,
               norm_epsilon: float = 1e-5,
               input_normalization: Optional[str] = None,
               **kwargs):
    """Initializes the model.

    Args:
      num_classes: number of semantic classes.
      embed_dims: MSCAN stage channels.
      depths: MSCAN blocks per stage.
      mlp_ratios: MSCAN MLP ratios per stage.
      drop_path_rate: MSCAN stochastic depth of the last block.
      dropout_rate: dropout inside the MSCAN MLPs.
      head_channels: channels of the head's align conv.
      ham_channels: channels of the squeeze conv and Hamburger; None =
        head_channels.
      md_r: NMF rank R.
      md_s: NMF channel groups S.
      train_steps: NMF iterations in training.
      eval_steps: NMF iterations at inference.
      inv_t: NMF softmax inverse temperature.
      one_step_gradient: NMF one-step gradient (see `NMF2D`).
      nmf_seed: None for fresh random NMF bases per call; an int for fixed,
        reproducible bases.
      head_dropout_rate: spatial dropout before the classifier.
      norm_groups: GroupNorm groups in the head.
      use_sync_bn: synchronise the encoder's BN across replicas.
      norm_momentum: encoder BN momentum (Keras convention).
      norm_epsilon: encoder BN and head GN epsilon.
      input_normalization: None (inputs are used as given) or
        "imagenet_rgb": RGB images in [0, 255] are normalised with the
        ImageNet mean and std inside the model, as the official SegNeXt
        code does before its encoder (what imported weights expect).
      **kwargs: keyword arguments of `tf_keras.Model`.
    """
    super().__init__(**kwargs)
    self._config_dict = {
        "num_classes": num_classes,
        "embed_dims": list(embed_dims),
        "depths": list(depths),
        "mlp_ratios": list(mlp_ratios),
        "drop_path_rate": drop_path_rate,
        "dropout_rate": dropout_rate,
        "head_channels": head_channels,
        "ham_channels": ham_channels,
        "md_r": md_r,
        "md_s": md_s,
        "train_steps": train_steps,
        "eval_steps": eval_steps,
        "inv_t": inv_t,
        "one_step_gradient": one_step_gradient,
        "nmf_seed": nmf_seed,
        "head_dropout_rate": head_dropout_rate,
        "norm_groups": norm_groups,
        "use_sync_bn": use_sync_bn,
        "norm_momentum": norm_momentum,
        "norm_epsilon": norm_epsilon,
        "input_normalization": check_input_normalization(
            input_normalization),
    }
    self.backbone = mscan.MSCAN(
        embed_dims=embed_dims, depths=depths, mlp_ratios=mlp_ratios,
        drop_path_rate=drop_path_rate, dropout_rate=dropout_rate,
        use_sync_bn=use_sync_bn, norm_momentum=norm_momentum,
        norm_epsilon=norm_epsilon, name="mscan")
    self.decode_head = LightHamHead(
        num_classes=num_classes, channels=head_channels,
        ham_channels=ham_channels or head_channels, rank=md_r,
        num_channel_groups=md_s, train_steps=train_steps,
        eval_steps=eval_steps, inv_t=inv_t,
        one_step_gradient=one_step_gradient, seed=nmf_seed,
        dropout_rate=head_dropout_rate, norm_groups=norm_groups,
        norm_epsilon=norm_epsilon, name="light_ham_head")
    # Stage 1 (stride 4) is not used by the head.
    self._head_levels = ("3", "4", "5")

  def call(self, inputs, training=None) -> Dict[str, tf.Tensor]:
    """Predicts semantic logits.

    Args:
      inputs: [batch, height, width, 3] images (RGB in [0, 255] with an
        `input_normalization`, else already normalised).
      training: bool; BN statistics, dropouts and the NMF step count.

    Returns:
      {"semantic_logits": float32 [batch, height, width, num_classes]}.
    """
    features = self.backbone(
        normalize_input(inputs, self._config_dict["input_normalization"]),
        training=training)
    logits = self.decode_head([features[k] for k in self._head_levels],
                              training=training)
    logits = common.resize_bilinear(tf.cast(logits, tf.float32),
                                       tf.shape(inputs)[1:3])
    return {"semantic_logits": logits}

  def get_config(self) -> Dict[str, Any]:
    return dict(self._config_dict)

  @classmethod
  def from_config(cls, config, custom_objects=None):
    return cls(**config)


def build_segnext(num_classes: int,
                  input_size: Optional[Sequence[Optional[int]]] = None,
                  **kwargs) -> SegNeXt:
  """Builds a SegNeXt model with its variables created.

  Args:
    num_classes: number of semantic classes.
    input_size: (height, width) the model will mostly see, or None; only
      used to build the variables (the model accepts any size).
    **kwargs: `SegNeXt` architecture arguments (embed_dims, depths,
      mlp_ratios, drop_path_rate, dropout_rate, head_channels, ham_channels,
      md_r, md_s, train_steps, eval_steps, inv_t, one_step_gradient,
      nmf_seed, head_dropout_rate, norm_groups, use_sync_bn, norm_momentum,
      norm_epsilon, input_normalization).

  Returns:
    A built `SegNeXt`.
  """
  return model_inputs.build_with_input_size(SegNeXt, num_classes, input_size,
                                         **kwargs)


def _register():
  heads = {"t": (256, 16), "s": (256, 16), "b": (512, 64), "l": (1024, 64)}
  for variant, (head_channels, md_r) in heads.items():
    spec = mscan.MSCAN_SPECS[variant]
    registry.register_model(
        f"segnext_{variant}", build_segnext, task="semantic",
        description=(f"SegNeXt-{variant.upper()}: MSCAN-{variant.upper()} "
                     "encoder + LightHamHead (Hamburger/NMF) decoder."),
        embed_dims=spec["embed_dims"], depths=spec["depths"],
        mlp_ratios=spec["mlp_ratios"],
        drop_path_rate=spec["drop_path_rate"],
        head_channels=head_channels, md_r=md_r)


_register()
