r"""Imports state dicts of the PyTorch Axial-DeepLab reference (ImageNet).

The reference's conv-stem Axial-ResNets (axial26s, axial50s/m/l, e.g. the
published `axial26s.pth`) become the zoo's axial_resnet_26s / 50s / 50m /
50l with batch-norm epsilon 1e-5 and the reference's ImageNet input
normalisation:

  python tools/import_torch_axial_checkpoint.py --model=axial_resnet_26s \
      --checkpoint=axial26s.pth --output_dir=/tmp/axial26s

writes `ckpt` (tf.train.Checkpoint(model=...)) and `model.gin`
(`model.name` / `model.overrides`) into the new folder.

Layout differences handled here:
  * q/k/v: the reference's 1x1 projection interleaves per head
    [q (d/2), k (d/2), v (d)]; ours concatenates all heads' q, then k, then v.
  * Relative tables: one [2d, 2L-1] tensor per layer whose columns are
    indexed by (query - key) + L - 1 for the q and v parts (so the q and v
    tables run backwards against ours, indexed by key - query) and by
    (key - query) + L - 1 for the k part.
  * Output batch norm: its channel 2c + t holds term t (0 content, 1
    positional) of value channel c; ours is [term, channel].
  * Similarity batch norm: channel t * heads + h is term t of head h, as ours.
  * Every batch norm has epsilon 1e-5 (the model is built with it).
Global spans are sized by --input_size, which must be the size the
reference's `kernel_size` was set for (224 for the published weights).
"""

import argparse
import os
import sys
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from axial_deeplab_tf.importers import common

# zoo name -> (reference block layout, width multiplier s).
ARCHITECTURES = {
    "axial_resnet_26s": ((1, 2, 4, 1), 0.5),
    "axial_resnet_50s": ((3, 4, 6, 3), 0.5),
    "axial_resnet_50m": ((3, 4, 6, 3), 0.75),
    "axial_resnet_50l": ((3, 4, 6, 3), 1.0),
}
NORM_EPSILON = 1e-5
# torchvision's ImageNet statistics in [0, 255] units (the reference's
# transforms.Normalize after ToTensor).
INPUT_MEAN = (123.675, 116.28, 103.53)
INPUT_STD = (58.395, 57.12, 57.375)


def model_overrides(input_size: Tuple[int, int]) -> Dict[str, object]:
  """Zoo builder overrides under which the model computes as the reference."""
  return {"input_size": tuple(int(s) for s in input_size),
          "norm_epsilon": NORM_EPSILON, "input_mean": INPUT_MEAN,
          "input_std": INPUT_STD}


def build_model(model_name: str, input_size: Tuple[int, int] = (224, 224),
                num_classes: int = 1000):
  """The zoo model an import of `model_name` fills."""
  from axial_deeplab_tf import models  # pylint: disable=g-import-not-at-top
  _check_model(model_name)
  return models.build(model_name, num_classes=num_classes,
                      **model_overrides(input_size))


def _check_model(model_name):
  if model_name not in ARCHITECTURES:
    raise common.ImportFailure(
        f"--model {model_name!r} has no PyTorch reference layout; expected "
        f"one of {sorted(ARCHITECTURES)}.")


def qkv_source_order(num_heads: int, key_head: int,
                     value_head: int) -> np.ndarray:
  """Reference channel of each of our [q | k | v] projection channels."""
  group = 2 * key_head + value_head
  q = [h * group + c for h in range(num_heads) for c in range(key_head)]
  k = [h * group + key_head + c for h in range(num_heads)
       for c in range(key_head)]
  v = [h * group + 2 * key_head + c for h in range(num_heads)
       for c in range(value_head)]
  return np.array(q + k + v)


class _Mapper:
  """Plans every assignment of one reference state dict onto a model."""

  def __init__(self, mapping: common.TensorMapping, fc_prefix: str):
    self.m = mapping
    self.fc_prefix = fc_prefix

  def conv(self, src: str, dst: str) -> None:
    w = self.m.take(src + ".weight")  # [out, in, kh, kw] or [out, in, 1].
    if w.ndim == 3:
      w = w[..., None]
    self.m.set(dst + "/kernel", np.transpose(w, (2, 3, 1, 0)),
               src + ".weight")

  def batch_norm(self, src: str, dst: str,
                 order: Optional[np.ndarray] = None,
                 reshape: Optional[Sequence[int]] = None) -> None:
    pairs = (("weight", "gamma"), ("bias", "beta"),
             ("running_mean", "moving_mean"),
             ("running_var", "moving_variance"))
    for ours, value in self._norm_values(src, pairs, order):
      self.m.set(f"{dst}/{ours}", self._shape(value, dst, ours, reshape),
                 src)
    if self.m.has(src + ".num_batches_tracked"):
      self.m.take(src + ".num_batches_tracked")  # No counterpart.

  def _norm_values(self, src, pairs, order):
    for theirs, ours in pairs:
      value = self.m.take(f"{src}.{theirs}")
      yield ours, value if order is None else value[order]

  def _shape(self, value, dst, ours, reshape):
    if reshape is None:
      return value
    target = self.m._variables.get(f"{dst}/{ours}:0")  # pylint: disable=protected-access
    value = np.reshape(value, reshape)
    if target is not None and value.size == np.prod(target.shape):
      value = np.reshape(value, target.shape)
    return value

  def similarity_norm(self, src: str, dst: str, heads: int) -> None:
    pairs = (("weight", "similarity_gamma"), ("bias", "similarity_beta"),
             ("running_mean", "similarity_moving_mean"),
             ("running_var", "similarity_moving_variance"))
    for ours, value in self._norm_values(src, pairs, None):
      if value.size % heads:
        raise common.ImportFailure(
            f"shape mismatch: source {src!r} has {value.size} channels, not "
            f"a multiple of the {heads} heads of {dst!r}.")
      self.m.set(f"{dst}/{ours}", value.reshape(-1, heads), src)
    if self.m.has(src + ".num_batches_tracked"):
      self.m.take(src + ".num_batches_tracked")

  def attention(self, src: str, dst: str, heads: int) -> None:
    """One reference AxialAttention onto one of our AxialAttention."""
    w = self.m.take(src + ".qkv_transform.weight")  # [2 * out, in, 1]
    relative = self.m.take(src + ".relative")  # [2 * group, 2L - 1]
    index = self.m.take(src + ".flatten_index")  # Buffer, rebuilt by us.
    channels = w.shape[0]
    if channels % (2 * heads):
      raise common.ImportFailure(
          f"shape mismatch: source {src}.qkv_transform.weight has {channels} "
          f"output channels, not a multiple of 2 x {heads} heads ({dst!r}).")
    value_head = channels // (2 * heads)
    key_head = value_head // 2
    order = qkv_source_order(heads, key_head, value_head)
    self.m.set(dst + "/qkv/kernel", np.transpose(w[order, :, 0]),
               src + ".qkv_transform.weight")
    self.batch_norm(src + ".bn_qkv", dst + "/qkv_bn", order=order)
    self.similarity_norm(src + ".bn_similarity", dst, heads)
    # Reference output channel 2c + t is term t of value channel c.
    self.batch_norm(src + ".bn_output", dst + "/output_bn",
                    reshape=(-1, 2))
    self._transpose_output_norm(dst + "/output_bn")
    length = (relative.shape[1] + 1) // 2
    if index.size != length * length:
      raise common.ImportFailure(
          f"source {src}.flatten_index has {index.size} entries, expected "
          f"{length}^2 for tables of {relative.shape[1]} columns.")
    r = src + ".relative"
    self.m.set(dst + "/query_positional",
               relative[:key_head, ::-1].T, r)
    self.m.set(dst + "/key_positional",
               relative[key_head:2 * key_head, :].T, r)
    self.m.set(dst + "/value_positional",
               relative[2 * key_head:, ::-1].T, r)

  def _transpose_output_norm(self, dst):
    # [channel, term] planned above -> ours [term, channel] (any rank).
    values = self.m._values  # pylint: disable=protected-access
    for ours in ("gamma", "beta", "moving_mean", "moving_variance"):
      name = f"{dst}/{ours}:0"
      variable = self.m._variables[name]  # pylint: disable=protected-access
      flat = values[name].reshape(-1, 2)
      values[name] = np.ascontiguousarray(flat.T).reshape(variable.shape)


def plan(mapping: common.TensorMapping, layout: Sequence[int],
         heads: int, fc_prefix: str) -> None:
  """Plans the whole reference network onto our classifier's variables."""
  mapper = _Mapper(mapping, fc_prefix)
  mapper.conv("conv1", "stem_conv")
  mapper.batch_norm("bn1", "stem_bn")
  for stage, blocks in enumerate(layout):
    for i in range(blocks):
      src = f"layer{stage + 1}.{i}"
      dst = f"res{stage + 2}_block{i + 1}"
      mapper.conv(src + ".conv_down", dst + "/conv_down")
      mapper.batch_norm(src + ".bn1", dst + "/bn_down")
      mapper.attention(src + ".hight_block",
                       dst + "/attention/height_attention", heads)
      mapper.attention(src + ".width_block",
                       dst + "/attention/width_attention", heads)
      mapper.conv(src + ".conv_up", dst + "/conv_up")
      mapper.batch_norm(src + ".bn2", dst + "/bn_up")
      if mapping.has(src + ".downsample.0.weight"):
        mapper.conv(src + ".downsample.0", dst + "/shortcut_conv")
        mapper.batch_norm(src + ".downsample.1", dst + "/shortcut_bn")
  fc = mapping.take("fc.weight")
  mapping.set(fc_prefix + "fc/kernel", fc.T, "fc.weight")
  mapping.set(fc_prefix + "fc/bias", mapping.take("fc.bias"), "fc.bias")


def _fc_prefix(model) -> str:
  for v in model.variables:
    if v.name.endswith("fc/kernel:0"):
      return v.name[:-len("fc/kernel:0")]
  raise common.ImportFailure("the model has no fc/kernel variable.")


def import_state_dict(state_dict: Dict[str, np.ndarray], model_name: str,
                      input_size: Tuple[int, int] = (224, 224),
                      source_label: str = "state dict"):
  """Builds `model_name` and fills it from a reference state dict.

  Returns:
    (model, number of values set).

  Raises:
    common.ImportFailure: a tensor the model has no place for, a variable
      no tensor fills, or a shape mismatch (the model is then discarded).
  """
  _check_model(model_name)
  layout, _ = ARCHITECTURES[model_name]
  fc = state_dict.get("fc.weight")
  num_classes = int(fc.shape[0]) if fc is not None else 1000
  model = build_model(model_name, input_size, num_classes)
  mapping = common.TensorMapping(state_dict, model.variables, source_label)
  heads = model.backbone.get_layer("res2_block1").get_config()["num_heads"]
  plan(mapping, layout, heads, _fc_prefix(model))
  return model, mapping.assign()


def gin_text(model_name: str, input_size: Tuple[int, int],
             source: str) -> str:
  """The gin bindings that rebuild the imported model."""
  return common.model_gin_text(
      model_name, model_overrides(input_size),
      f"Imported from the PyTorch Axial-DeepLab reference: {source}\n"
      "Restore with tf.train.Checkpoint(model=model) from 'ckpt' (or "
      "importers.common.load_imported(folder)).")


def run(model_name: str, checkpoint: str, output_dir: str,
        input_size: Tuple[int, int] = (224, 224)) -> str:
  """Imports `checkpoint` into `output_dir`; returns the summary line."""
  _check_model(model_name)
  common.check_output_dir(output_dir)
  common.progress(f"reading {checkpoint}")
  state_dict = common.load_torch_state_dict(checkpoint)
  common.progress(f"mapping {len(state_dict)} tensors onto {model_name} "
                  f"at {input_size[0]}x{input_size[1]}")
  model, values = import_state_dict(state_dict, model_name, input_size,
                                    os.path.basename(checkpoint))
  common.progress(f"writing {output_dir}")
  prefix = common.write_import(
      output_dir, {"model": model},
      {"model.gin": gin_text(model_name, input_size, checkpoint)})
  return (f"imported {len(state_dict)} tensors ({values:,} values) into "
          f"{len(model.variables)} variables of {model_name}: {prefix}")


def _parse_size(text: str) -> Tuple[int, int]:
  parts = text.replace("x", ",").split(",")
  try:
    size = tuple(int(p) for p in parts)
  except ValueError:
    size = ()
  if len(size) == 1:
    size = size * 2
  if len(size) != 2 or min(size) <= 0:
    raise argparse.ArgumentTypeError(
        f"--input_size must be N or H,W with positive ints, got {text!r}")
  return size


def main(argv: Optional[List[str]] = None) -> int:
  """Command line: import a reference state dict; exit status 0 or 2."""
  parser = argparse.ArgumentParser(
      prog="import_torch_axial_checkpoint",
      description="Import a PyTorch Axial-DeepLab reference state dict "
      "(axial26s/50s/50m/50l) into a zoo Axial-ResNet checkpoint.")
  parser.add_argument("--model", required=True,
                      help=f"zoo model: one of {sorted(ARCHITECTURES)}")
  parser.add_argument("--checkpoint", required=True,
                      help="the reference .pth (plain state dict, "
                      "{'state_dict': ...}, 'module.' prefixes accepted)")
  parser.add_argument("--output_dir", required=True,
                      help="new folder for ckpt and model.gin")
  parser.add_argument("--input_size", type=_parse_size, default=(224, 224),
                      help="H,W the reference's global spans were set for "
                      "(default 224)")
  parser.add_argument("--verbose", action="store_true",
                      help="tracebacks on errors")
  args = parser.parse_args(argv)
  try:
    summary = run(args.model, args.checkpoint, args.output_dir,
                  args.input_size)
  except (common.ImportFailure, OSError) as e:
    if args.verbose:
      raise
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(summary)
  return 0
