"""Imports the official SegNeXt checkpoints (mmsegmentation state dicts).

The SegNeXt authors publish MSCAN-T/S/B/L + LightHamHead models trained on
ADE20K (150 classes, 512x512) and Cityscapes (19 classes, 1024x1024) as
`torch.save({"state_dict": {"backbone.…", "decode_head.…"}, "meta": …})`.
This module maps every tensor of such a file onto our `segnext_*` zoo model
and writes a TF checkpoint plus a gin file that rebuilds the model:

  python tools/import_segnext_checkpoint.py --model=segnext_t \\
      --dataset=ade20k --checkpoint=segnext_tiny_512x512_ade_160k.pth \\
      --output_dir=imported/segnext_t_ade20k

Head and NMF settings follow the official configs (local_configs/segnext):
head/Hamburger channels 256, 256, 512, 1024 and NMF rank (MD_R) 16, 16, 64,
64 for T/S/B/L; NMF with S = 1, 6 training / 7 inference steps, inv_t = 1,
bases drawn afresh on every call (`nmf_seed` None; set it for
reproducible outputs). The model normalises RGB [0, 255] inputs with the
ImageNet mean and std as the official pipeline does. The BN counters
`num_batches_tracked` are the only tensors not imported.
"""

from typing import Any, Dict, List, Optional

import numpy as np

from axial_deeplab_tf.importers import _torch_state as ts

# Variant -> (head channels = ham channels, NMF rank MD_R) of the official
# configs; the encoder comes from `mscan.MSCAN_SPECS`.
HEAD_SETTINGS = {"t": (256, 16), "s": (256, 16), "b": (512, 64),
                 "l": (1024, 64)}
DATASETS = {"ade20k": 150, "cityscapes": 19}
# Order of the MSCA strip branches (official conv0_*, conv1_*, conv2_*).
_STRIP_KERNELS = (7, 11, 21)


def import_settings(variant: str, dataset: str) -> Dict[str, Any]:
  """Zoo overrides that make `segnext_<variant>` the official model.

  Args:
    variant: "t", "s", "b" or "l".
    dataset: "ade20k" or "cityscapes".

  Returns:
    {num_classes, head_channels, ham_channels, md_r, md_s, train_steps,
    eval_steps, inv_t, input_normalization}.
  """
  if variant not in HEAD_SETTINGS:
    raise ts.CheckpointImportError(
        f"model must be one of {['segnext_' + v for v in HEAD_SETTINGS]}, "
        f"got 'segnext_{variant}'.")
  if dataset not in DATASETS:
    raise ts.CheckpointImportError(
        f"dataset must be one of {sorted(DATASETS)}, got {dataset!r}.")
  channels, rank = HEAD_SETTINGS[variant]
  return {"num_classes": DATASETS[dataset], "head_channels": channels,
          "ham_channels": channels, "md_r": rank, "md_s": 1,
          "train_steps": 6, "eval_steps": 7, "inv_t": 1.0,
          "input_normalization": "imagenet_rgb"}


def _conv(t: ts.StateDictTransfer, target: str, source: str,
          bias: bool = True) -> None:
  ts.copy_conv(t, target, source, bias)


def _depthwise(t: ts.StateDictTransfer, target: str, source: str) -> None:
  ts.copy_conv(t, target, source, True, ts.torch_depthwise_to_tf,
               "depthwise_kernel")


def transfer_weights(model, state: Dict[str, np.ndarray],
                     report=ts.progress) -> str:
  """Sets every variable of a built SegNeXt model from an mmseg state dict.

  Args:
    model: a built `segnext.SegNeXt` with the checkpoint's architecture.
    state: {name: array} with `backbone.` and `decode_head.` tensors.
    report: callable taking progress lines.

  Returns:
    The one-line summary of `StateDictTransfer.finish`.

  Raises:
    CheckpointImportError: a tensor missing or left over, a shape mismatch.
  """
  t = ts.bn_transfer(state, model, "SegNeXt checkpoint")
  depths = model.get_config()["depths"]
  # Stage 1 stem: conv, BN, GELU, conv, BN (Sequential indices 0, 1, 3, 4).
  _conv(t, "stage1_stem_conv1", "backbone.patch_embed1.proj.0")
  ts.copy_norm(t, "stage1_stem_bn1", "backbone.patch_embed1.proj.1")
  _conv(t, "stage1_stem_conv2", "backbone.patch_embed1.proj.3")
  ts.copy_norm(t, "stage1_stem_bn2", "backbone.patch_embed1.proj.4")
  for stage in range(1, 5):
    if stage > 1:
      _conv(t, f"stage{stage}_embed_conv",
            f"backbone.patch_embed{stage}.proj")
      ts.copy_norm(t, f"stage{stage}_embed_bn",
                   f"backbone.patch_embed{stage}.norm")
    for block in range(depths[stage - 1]):
      src = f"backbone.block{stage}.{block}"
      dst = f"stage{stage}_block{block + 1}"
      ts.copy_norm(t, f"{dst}/attn_norm", f"{src}.norm1")
      _conv(t, f"{dst}/attn_proj_in", f"{src}.attn.proj_1")
      gate = f"{src}.attn.spatial_gating_unit"
      _depthwise(t, f"{dst}/msca/base_conv", f"{gate}.conv0")
      for branch, k in enumerate(_STRIP_KERNELS):
        _depthwise(t, f"{dst}/msca/strip{k}_1x{k}", f"{gate}.conv{branch}_1")
        _depthwise(t, f"{dst}/msca/strip{k}_{k}x1", f"{gate}.conv{branch}_2")
      _conv(t, f"{dst}/msca/mix_conv", f"{gate}.conv3")
      _conv(t, f"{dst}/attn_proj_out", f"{src}.attn.proj_2")
      ts.copy_norm(t, f"{dst}/mlp_norm", f"{src}.norm2")
      _conv(t, f"{dst}/mlp_fc1", f"{src}.mlp.fc1")
      _depthwise(t, f"{dst}/mlp_dwconv", f"{src}.mlp.dwconv.dwconv")
      _conv(t, f"{dst}/mlp_fc2", f"{src}.mlp.fc2")
      t.copy(f"{dst}/attn_layer_scale", f"{src}.layer_scale_1")
      t.copy(f"{dst}/mlp_layer_scale", f"{src}.layer_scale_2")
    ts.copy_norm(t, f"stage{stage}_norm", f"backbone.norm{stage}", False)
    report(f"  stage {stage}: {depths[stage - 1]} blocks")
  head = "light_ham_head"
  _conv(t, f"{head}/squeeze_conv", "decode_head.squeeze.conv", bias=False)
  ts.copy_norm(t, f"{head}/squeeze_norm", "decode_head.squeeze.gn", False)
  _conv(t, f"{head}/hamburger/lower_bread",
        "decode_head.hamburger.ham_in.conv")
  _conv(t, f"{head}/hamburger/upper_bread",
        "decode_head.hamburger.ham_out.conv", bias=False)
  ts.copy_norm(t, f"{head}/hamburger/upper_norm",
               "decode_head.hamburger.ham_out.gn", False)
  _conv(t, f"{head}/align_conv", "decode_head.align.conv", bias=False)
  ts.copy_norm(t, f"{head}/align_norm", "decode_head.align.gn", False)
  _conv(t, f"{head}/classifier", "decode_head.conv_seg")
  report("  decode head: squeeze, Hamburger, align, classifier")
  return t.finish()


def check_variant(state: Dict[str, np.ndarray], variant: str) -> None:
  """Fails early, with a clear message, if the file is another variant."""
  from axial_deeplab_tf.modeling.backbones import mscan  # pylint: disable=g-import-not-at-top
  spec = mscan.MSCAN_SPECS[variant]
  found = []
  for stage in range(1, 5):
    prefix = f"backbone.block{stage}."
    blocks = {n[len(prefix):].split(".")[0] for n in state
              if n.startswith(prefix)}
    found.append(len(blocks))
  if tuple(found) != tuple(spec["depths"]):
    raise ts.CheckpointImportError(
        f"the checkpoint's MSCAN has {found} blocks per stage, but "
        f"segnext_{variant} has {list(spec['depths'])}; pick the matching "
        f"--model.")


def import_checkpoint(model_name: str, dataset: str, checkpoint: str,
                      output_dir: str, report=ts.progress):
  """Imports an official SegNeXt checkpoint; returns (model, summary).

  `model_name` is segnext_t, segnext_s, segnext_b or segnext_l; `dataset`
  ade20k or cityscapes; the rest as `_torch_state.import_model`.
  """
  prefix = "segnext_"
  variant = model_name[len(prefix):] if model_name.startswith(prefix) else ""
  return ts.import_model(
      model_name, dataset, checkpoint, output_dir,
      import_settings(variant, dataset),
      lambda state: check_variant(state, variant), transfer_weights, report)


def main(argv: Optional[List[str]] = None) -> int:
  """Command-line entry point (tools/import_segnext_checkpoint.py)."""
  return ts.run_main(argv, "Import an official SegNeXt checkpoint.",
                  [f"segnext_{v}" for v in HEAD_SETTINGS], sorted(DATASETS),
                  import_checkpoint)
