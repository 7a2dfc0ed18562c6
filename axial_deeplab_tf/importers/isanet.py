"""Imports the official ISANet checkpoints of openseg.pytorch.

openseg publishes ISANet with a deep-stem dilated ResNet-101 on Cityscapes
(`isanet_deepbase_resnet101_dilated8_1_latest.pth`, 79.55 mIoU on val,
single scale), saved as {"config_dict": ..., "state_dict": {"module.…"}}.
Any ResNet-50/101 ISANet state dict of that code (ADE20K or Cityscapes
classes) imports the same way:

  python tools/import_isanet_checkpoint.py --model=isanet_r101 \\
      --dataset=cityscapes --checkpoint=isanet_..._latest.pth \\
      --output_dir=imported/isanet_r101_cityscapes

The imported model is our `isanet_r50` / `isanet_r101` with options that
make it compute what openseg computes (each checked against openseg's
output on the fixtures of tests/importers):
- in-place ABN: the BN scale is |w| + eps (eps 1e-5) for every norm, set at
  import time (so the stored gamma is |w| + eps); the heads' activation is
  leaky ReLU 0.01 (`activation='leaky_relu'`), the backbone's plain ReLU;
- no bias on the ISSA value convs (`value_use_bias=False`);
- logits upsampled with align_corners=True (`align_corners=True`);
- backbone: deep stem 64-64-128 whose strided conv pads 1/1
  (`symmetric_padding=True`), max pool with padding 1 and ceil rounding
  (`ceil_mode_max_pool=True`), and the first block of each dilated stage at
  half the rate (`dilation_pattern='first_block_halved'`: stage 3 blocks at
  1, 2, 2, ..., stage 4 at 2, 4, 4);
- inputs: RGB [0, 255] images reversed to BGR and the BGR mean subtracted,
  std 1 (`input_normalization='caffe_bgr'`);
- the ISA module concatenates [input, context] where we concatenate
  [context, input]: the input channels of its 1x1 conv are swapped;
- the auxiliary (dsn) head, 3x3 conv 1024 -> 512 + ABN + dropout 0.05 +
  classifier, is imported into our auxiliary FCN head (`aux_channels=512`,
  `aux_dropout_rate=0.05`), which only runs in training; dropout 0.05 in
  the ISA head as well.
"""

from typing import Any, Dict, List, Optional

import numpy as np

from axial_deeplab_tf.importers import _torch_state as ts

DATASETS = {"ade20k": 150, "cityscapes": 19}
DEPTHS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
# In-place ABN's epsilon (added to the variance and to |w|).
ABN_EPSILON = 1e-5


def import_settings(depth: int, dataset: str) -> Dict[str, Any]:
  """Zoo overrides that make `isanet_r<depth>` compute what openseg does."""
  if dataset not in DATASETS:
    raise ts.CheckpointImportError(
        f"dataset must be one of {sorted(DATASETS)}, got {dataset!r}.")
  return {"num_classes": DATASETS[dataset], "backbone_depth": depth,
          "stem_type": "v1", "head_channels": 512, "key_channels": 256,
          "partition_factors": (8, 8), "dropout_rate": 0.05,
          "activation": "leaky_relu", "use_auxiliary_head": True,
          "aux_channels": 512, "aux_dropout_rate": 0.05,
          "norm_epsilon": ABN_EPSILON, "symmetric_padding": True,
          "ceil_mode_max_pool": True,
          "dilation_pattern": "first_block_halved", "value_use_bias": False,
          "align_corners": True, "input_normalization": "caffe_bgr"}


def _conv(t: ts.StateDictTransfer, target: str, source: str,
          bias: bool = False, convert=ts.torch_conv_to_tf) -> None:
  ts.copy_conv(t, target, source, bias, convert)


def _abn(t: ts.StateDictTransfer, target: str, source: str) -> None:
  """In-place ABN -> BatchNormalization with gamma = |w| + eps."""
  ts.copy_norm(t, target, source,
               gamma=lambda w: np.abs(w) + np.float32(ABN_EPSILON))


def _attention(t: ts.StateDictTransfer, target: str, source: str) -> None:
  for branch in ("query", "key"):
    _conv(t, f"{target}/{branch}_conv1", f"{source}.f_{branch}.0")
    _abn(t, f"{target}/{branch}_bn1", f"{source}.f_{branch}.1")
    _conv(t, f"{target}/{branch}_conv2", f"{source}.f_{branch}.2")
    _abn(t, f"{target}/{branch}_bn2", f"{source}.f_{branch}.3")
  _conv(t, f"{target}/value_conv", f"{source}.f_value")
  _conv(t, f"{target}/output_conv", f"{source}.W.0")
  _abn(t, f"{target}/output_bn", f"{source}.W.1")


def _swap_concat_halves(kernel: np.ndarray) -> np.ndarray:
  """[out, in_x + in_ctx, 1, 1] (cat[x, ctx]) -> ours (cat[ctx, x])."""
  kernel = ts.torch_conv_to_tf(kernel)
  half = kernel.shape[2] // 2
  return np.concatenate([kernel[:, :, half:], kernel[:, :, :half]], axis=2)


def transfer_weights(model, state: Dict[str, np.ndarray],
                     report=ts.progress) -> str:
  """Sets every variable of a built ISANet from an openseg state dict."""
  t = ts.bn_transfer(state, model, "ISANet checkpoint")
  depth = model.get_config()["backbone_depth"]
  for i in range(1, 4):
    _conv(t, f"stem_conv{i}", f"backbone.resinit.conv{i}")
    _abn(t, f"stem_bn{i}", f"backbone.resinit.bn{i}")
  for layer, blocks in enumerate(DEPTHS[depth], start=1):
    for block in range(blocks):
      src = f"backbone.layer{layer}.{block}"
      dst = f"stage{layer + 1}_block{block + 1}"
      for i in range(1, 4):
        _conv(t, f"{dst}/conv{i}", f"{src}.conv{i}")
        _abn(t, f"{dst}/bn{i}", f"{src}.bn{i}")
      if block == 0:
        _conv(t, f"{dst}/shortcut_conv", f"{src}.downsample.0")
        _abn(t, f"{dst}/shortcut_bn", f"{src}.downsample.1")
    report(f"  backbone layer{layer}: {blocks} blocks")
  _conv(t, "isa_head/in_conv", "isa_head.0")
  _abn(t, "isa_head/in_bn", "isa_head.1")
  module = "isa_head.2"
  _attention(t, "isa_head/issa/long_range",
             f"{module}.stages.0.long_range_sa")
  _attention(t, "isa_head/issa/short_range",
             f"{module}.stages.0.short_range_sa")
  _conv(t, "isa_head/out_conv", f"{module}.conv_bn.0",
        convert=_swap_concat_halves)
  _abn(t, "isa_head/out_bn", f"{module}.conv_bn.1")
  _conv(t, "isa_head/classifier", "cls_head", bias=True)
  report("  ISA head: conv, ISSA (long and short range), fusion, classifier")
  _conv(t, "aux_head/conv", "dsn_head.0")
  _abn(t, "aux_head/bn", "dsn_head.1")
  _conv(t, "aux_head/classifier", "dsn_head.3", bias=True)
  report("  auxiliary (dsn) head")
  return t.finish()


def detect_depth(state: Dict[str, np.ndarray]) -> int:
  """ResNet depth from the number of blocks in layer3 (6 or 23)."""
  prefix = "backbone.layer3."
  blocks = {n[len(prefix):].split(".")[0] for n in state
            if n.startswith(prefix)}
  for depth, counts in DEPTHS.items():
    if len(blocks) == counts[2]:
      return depth
  raise ts.CheckpointImportError(
      f"not an openseg ISANet ResNet-50/101 state dict: backbone.layer3 has "
      f"{len(blocks)} blocks (expected 6 or 23)")


def import_checkpoint(model_name: str, dataset: str, checkpoint: str,
                      output_dir: str, report=ts.progress):
  """Imports an openseg ISANet checkpoint; returns (model, summary).

  `model_name` is isanet_r50 or isanet_r101 (the depth of the file);
  `dataset` ade20k or cityscapes; the rest as `_torch_state.import_model`.
  """
  depth = {"isanet_r50": 50, "isanet_r101": 101}.get(model_name)
  if depth is None:
    raise ts.CheckpointImportError(
        f"model must be isanet_r50 or isanet_r101, got {model_name!r}.")

  def check_depth(state):
    found = detect_depth(state)
    if found != depth:
      raise ts.CheckpointImportError(
          f"the checkpoint holds a ResNet-{found} ISANet; use "
          f"--model=isanet_r{found} instead of {model_name}.")

  return ts.import_model(model_name, dataset, checkpoint, output_dir,
                         import_settings(depth, dataset), check_depth,
                         transfer_weights, report)


def main(argv: Optional[List[str]] = None) -> int:
  """Command-line entry point (tools/import_isanet_checkpoint.py)."""
  return ts.run_main(argv, "Import an official (openseg) ISANet checkpoint.",
                     ["isanet_r50", "isanet_r101"], sorted(DATASETS),
                     import_checkpoint)
