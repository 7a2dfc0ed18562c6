"""Imports deeplab2's published checkpoints into the zoo's deeplab2 models.

deeplab2's trainer saves `tf.train.Checkpoint(global_step, optimizer,
**model.checkpoint_items)`: the encoder under `encoder/`, the decoders
under `semantic_decoder/`, `instance_decoder/`, and each head split in
its body (`*_without_last_layer/`) and its last 1x1 convolution
(`*_last_layer/`). Its ImageNet checkpoints hold `encoder/` alone. The
zoo's deeplab2 models (`modeling/deeplab2_panoptic.py`) keep deeplab2's
sub-layer names, so the import mirrors those items onto our layers and
checks, before anything is loaded, that the two sets of object-graph keys
and their shapes are equal:

- consumed: every model variable of the checkpoint (deeplab2 keeps no
  moving average of the weights for these models, so the raw weights are
  what its evaluation uses);
- ignored, by rule and counted: optimizer slots (`.OPTIMIZER_SLOT`), the
  optimizer's own variables (`optimizer/`, `backbone_optimizer/`),
  `global_step`, `save_counter` and the object graph;
- anything else, a missing variable or a shape difference is an error
  naming the checkpoint key and the model variable.

The output folder gets `ckpt-1` (`tf.train.Checkpoint(model=...)`, what
`tools/export_saved_model.py --checkpoint_path`, `tools/train.py
--mode=eval` and `experiment.init_checkpoint` read), its `checkpoint`
state file, and `experiment.gin` rebuilding the model with deeplab2's
evaluation settings. Everything is written to a temporary folder beside
it and renamed at the end, so an error leaves no output.
"""

import json
import os
import shutil
import sys
import tarfile
import tempfile
from typing import Dict, List, Optional, Sequence, TextIO, Tuple

from absl import flags
import tensorflow as tf

from axial_deeplab_tf.importers import common

_IGNORED_ROOTS = ("optimizer", "backbone_optimizer", "global_step",
                  "save_counter", "_CHECKPOINTABLE_OBJECT_GRAPH")
_SLOT = ".OPTIMIZER_SLOT"
_VALUE = "/.ATTRIBUTES/VARIABLE_VALUE"

# deeplab2's evaluation settings of each dataset (its configs and
# evaluator.proto defaults): eval crop (images padded to it), ASPP pooling
# window = training crop / output stride, post-processing.
_CITYSCAPES = dict(dataset="cityscapes", crop=(1025, 2049), nms_kernel=13,
                   stuff_area_limit=2048, keep_k_centers=400)
# COCO: label divisor 256 caps the center slots at 255 here (deeplab2's
# default 400 could overflow its own panoptic ids).
_COCO = dict(dataset="coco", crop=(641, 641), nms_kernel=41,
             stuff_area_limit=4096, keep_k_centers=255)


class ImportError_(common.ImportFailure):  # pylint: disable=invalid-name
  """A checkpoint that cannot be imported (message is one line)."""


class Wording(common.Wording):
  """The messages of the deeplab2 import tool."""
  error = ImportError_
  output_exists = ("--output_dir {abspath!r} exists and is not an empty "
                   "folder.")
  no_output = "--output_dir is required"


def published_models() -> Dict[str, Dict[str, object]]:
  """Zoo name -> {task, dataset settings} of every importable model."""
  from axial_deeplab_tf.modeling import deeplab2_panoptic  # pylint: disable=g-import-not-at-top
  models = {}
  for name, args in deeplab2_panoptic.PUBLISHED.items():
    settings = dict(_COCO if "coco" in name else _CITYSCAPES)
    settings["output_stride"] = args.get("output_stride", 32)
    models[name] = dict(task="panoptic", **settings)
  for name, args in deeplab2_panoptic.PUBLISHED_ENCODERS.items():
    # The Panoptic-DeepLab experiment that fine-tunes this encoder.
    target = {"resnet50": "resnet50_os32", "resnet50_beta":
              "resnet50_beta_os32", "wide_resnet41": "wide_resnet41_os16"}.get(
                  args["encoder"])
    if target is not None:
      target = f"deeplab2_panoptic_{target}"
    elif args["encoder"] == "swidernet":
      target = name.replace("_imagenet", "_os16").replace(
          "deeplab2_", "deeplab2_panoptic_")
    else:  # Axial-DeepLab encoders.
      target = name.replace("_imagenet", "_os16")
    models[name] = dict(task="classification", finetune=target)
  return models
  return models


# deeplab2's checkpoint items -> attribute paths in our models.
ITEM_PATHS = {
    "encoder": "backbone",
    "semantic_decoder": "semantic_decoder",
    "semantic_head_without_last_layer": "semantic_head/conv_block",
    "semantic_last_layer": "semantic_head/final_conv",
    "instance_decoder": "instance_decoder",
    "instance_center_head_without_last_layer": "center_head/conv_block",
    "instance_center_head_last_layer": "center_head/final_conv",
    "instance_regression_head_without_last_layer": "offset_head/conv_block",
    "instance_regression_head_last_layer": "offset_head/final_conv",
}


def mirror_items(model) -> Dict[str, tf.Module]:
  """Our sub-layers under the names of deeplab2's checkpoint items."""
  items = {}
  for item, path in ITEM_PATHS.items():
    target = model
    for attribute in path.split("/"):
      target = getattr(target, attribute, None)
    if target is not None:
      items[item] = target
  return items


def _model_keys(items: Dict[str, tf.Module]) -> Dict[str, List[int]]:
  """Object-graph keys and shapes of `items` saved as a checkpoint."""
  with tempfile.TemporaryDirectory() as tmp:
    path = tf.train.Checkpoint(**items).write(os.path.join(tmp, "mirror"))
    return {k: s for k, s in tf.train.list_variables(path)
            if k.split("/")[0] not in _IGNORED_ROOTS}


def _model_variable_name(items: Dict[str, tf.Module], key: str) -> str:
  """Our variable name for a checkpoint key (for error messages)."""
  del items
  root = key.split("/")[0]
  return "model/" + ITEM_PATHS.get(root, root) + key[len(root):].replace(
      _VALUE, "")


def resolve_checkpoint(path: str, scratch: str) -> str:
  """A checkpoint prefix from a prefix, a folder or a published .tar.gz."""
  if path.endswith((".tar.gz", ".tgz", ".tar")):
    if not os.path.isfile(path):
      raise ImportError_(f"--checkpoint {path!r}: no such file.")
    try:
      with tarfile.open(path) as archive:
        for member in archive.getmembers():
          target = os.path.realpath(os.path.join(scratch, member.name))
          if not target.startswith(os.path.realpath(scratch) + os.sep):
            raise ImportError_(f"--checkpoint {path!r}: archive member "
                               f"{member.name!r} leaves the archive folder.")
        archive.extractall(scratch)
    except (tarfile.TarError, EOFError, OSError) as e:
      raise ImportError_(f"--checkpoint {path!r} is not a readable tar "
                         f"archive (truncated?): {e}") from e
    return resolve_checkpoint(scratch, scratch)
  if os.path.isdir(path):
    latest = tf.train.latest_checkpoint(path)
    if latest:
      return latest
    indexes = sorted(tf.io.gfile.glob(os.path.join(path, "*.index")) +
                     tf.io.gfile.glob(os.path.join(path, "*", "*.index")))
    if not indexes:
      raise ImportError_(f"--checkpoint {path!r} holds no checkpoint "
                         f"(*.index file).")
    prefixes = [p[:-len(".index")] for p in indexes]

    def step(prefix):
      tail = prefix.rsplit("-", 1)[-1]
      return int(tail) if tail.isdigit() else -1
    best = max(prefixes, key=step)
    if sum(step(p) == step(best) for p in prefixes) > 1:
      raise ImportError_(f"--checkpoint {path!r} holds several checkpoints "
                         f"({prefixes}); pass one prefix.")
    return best
  if not tf.io.gfile.exists(path + ".index"):
    raise ImportError_(f"--checkpoint {path!r} is neither a .tar.gz, a "
                       f"folder nor a checkpoint prefix (no {path}.index).")
  return path


def _classify(keys: Sequence[str]) -> Tuple[List[str], List[str], List[str]]:
  """(model variables, optimizer slots, bookkeeping) of checkpoint keys."""
  model, slots, other = [], [], []
  for key in keys:
    if _SLOT in key:
      slots.append(key)
    elif key.split("/")[0] in _IGNORED_ROOTS:
      other.append(key)
    else:
      model.append(key)
  return model, slots, other


def _check_keys(items, expected: Dict[str, List[int]],
                found: Dict[str, List[int]], model_name: str) -> None:
  if not any(k.startswith("encoder/") for k in found):
    raise ImportError_(
        f"the checkpoint has no deeplab2 encoder variables (encoder/...): "
        f"not a deeplab2 Panoptic-DeepLab or ImageNet encoder checkpoint "
        f"(first keys: {sorted(found)[:3]}).")
  missing = sorted(set(expected) - set(found))
  unused = sorted(set(found) - set(expected))
  if missing or unused:
    parts = []
    if missing:
      parts.append(
          f"{len(missing)} model variable(s) of {model_name!r} not in the "
          f"checkpoint, first {_model_variable_name(items, missing[0])!r} "
          f"(checkpoint key {missing[0]!r})")
    if unused:
      parts.append(f"{len(unused)} checkpoint variable(s) the model does not "
                   f"have, first {unused[0]!r}")
    raise ImportError_("the checkpoint does not match model " +
                       f"{model_name!r} (wrong family or configuration?): " +
                       "; ".join(parts) + ".")
  for key, shape in sorted(expected.items()):
    if list(found[key]) != list(shape):
      raise ImportError_(
          f"checkpoint variable {key!r} has shape {list(found[key])} but "
          f"model variable {_model_variable_name(items, key)!r} of "
          f"{model_name!r} has shape {list(shape)}.")


def _gin_text(model_name: str, settings: Dict[str, object],
              overrides: Dict[str, object], output_dir: str,
              source: str) -> str:
  if settings["task"] == "classification":
    # An ImageNet encoder: the gin trains the Panoptic-DeepLab experiment
    # of this encoder from it (the backbone is restored by name).
    return "\n".join([
        f"# {settings['finetune']} initialised from the deeplab2 ImageNet",
        f"# encoder {model_name} ({source}).",
        f"include 'deeplab2/{settings['finetune']}.gin'",
        f"experiment.init_checkpoint = {output_dir!r}",
        "experiment.init_checkpoint_modules = 'backbone'"]) + "\n"
  lines = [f"# {model_name}: imported from the deeplab2 checkpoint",
           f"# {source}",
           "# Evaluate / export / predict with this file and",
           "# --checkpoint_path set to this folder; train.py fine-tunes from",
           "# the imported weights (experiment.init_checkpoint below).",
           f"include 'deeplab2/{model_name}.gin'",
           f"experiment.init_checkpoint = {output_dir!r}",
           "experiment.init_checkpoint_modules = 'all'"]
  if overrides:
    lines.append(f"model.overrides = {dict(sorted(overrides.items()))!r}")
  return "\n".join(lines) + "\n"


def _export(model_name: str, settings: Dict[str, object],
            overrides: Dict[str, object], checkpoint_dir: str,
            export_dir: str) -> None:
  """Writes a SavedModel of a panoptic import (deeplab2's evaluation)."""
  from axial_deeplab_tf.data import metadata  # pylint: disable=g-import-not-at-top
  from axial_deeplab_tf.serving import export_module  # pylint: disable=g-import-not-at-top
  from axial_deeplab_tf.serving import model_loading  # pylint: disable=g-import-not-at-top
  meta = (metadata.coco_panoptic() if settings["dataset"] == "coco"
          else metadata.cityscapes())
  loaded = model_loading.load_model(
      model_name=model_name, overrides=overrides, dataset_metadata=meta,
      checkpoint_path=checkpoint_dir)
  export_module.export_loaded_model(
      loaded, export_dir, post_processor_args=dict(
          center_threshold=0.1, nms_kernel=settings["nms_kernel"],
          keep_k_centers=settings["keep_k_centers"],
          stuff_area_limit=settings["stuff_area_limit"],
          deeplab2_rules=True))


def import_checkpoint(model_name: str, checkpoint: str, output_dir: str,
                      overrides: Optional[Dict[str, object]] = None,
                      export: bool = False,
                      log: TextIO = sys.stdout) -> Dict[str, object]:
  """Imports `checkpoint` into zoo model `model_name`; writes output_dir.

  Args:
    model_name: a key of `published_models()`.
    checkpoint: a published .tar.gz, a folder or a checkpoint prefix.
    output_dir: a new (or empty) folder.
    overrides: builder arguments (e.g. reduced widths of a test model);
      written into the gin file.
    export: panoptic models: also write OUTPUT_DIR/saved_model (the
      SavedModel `tools/predict.py` reads) with deeplab2's evaluation
      post-processing.
    log: progress stream.

  Returns:
    A summary dict.

  Raises:
    ImportError_: on any mismatch, with a one-line message.
  """
  from axial_deeplab_tf.modeling import registry  # pylint: disable=g-import-not-at-top
  overrides = dict(overrides or {})
  models = published_models()
  if model_name not in models:
    raise ImportError_(f"--model {model_name!r} is not a deeplab2 model; "
                       f"expected one of {sorted(models)}.")
  output_dir = common.check_output_dir(output_dir, Wording)
  os.makedirs(os.path.dirname(output_dir), exist_ok=True)
  scratch = tempfile.mkdtemp(prefix=".deeplab2_import_",
                             dir=os.path.dirname(output_dir))
  try:
    prefix = resolve_checkpoint(checkpoint, os.path.join(scratch, "src"))
    print(f"reading {prefix}", file=log)
    try:
      reader = tf.train.load_checkpoint(prefix)
      shapes = reader.get_variable_to_shape_map()
    except (tf.errors.OpError, ValueError) as e:
      raise ImportError_(f"cannot read checkpoint {prefix!r} (truncated or "
                         f"not a TensorFlow checkpoint): "
                         f"{' '.join(str(e).split())[:300]}") from e
    model_keys, slots, other = _classify(list(shapes))
    print(f"checkpoint: {len(model_keys)} model variables, {len(slots)} "
          f"optimizer slots and {len(other)} bookkeeping entries (ignored)",
          file=log)
    try:
      model = registry.build(model_name, **overrides)
    except TypeError as e:
      raise ImportError_(f"overrides {overrides} do not fit {model_name!r}: "
                         f"{e}") from e
    items = mirror_items(model)
    expected = _model_keys(items)
    _check_keys(items, expected, {k: shapes[k] for k in model_keys},
                model_name)
    print(f"matched {len(expected)} variables of {model_name}", file=log)
    for key in model_keys:  # Reads all data: a truncated file fails here.
      try:
        reader.get_tensor(key)
      except (tf.errors.OpError, ValueError, IndexError, RuntimeError) as e:
        raise ImportError_(f"cannot read checkpoint variable {key!r} of "
                           f"{prefix!r} (truncated data file?): "
                           f"{' '.join(str(e).split())[:200]}") from e
    status = tf.train.Checkpoint(**items).read(prefix)
    status.expect_partial().assert_existing_objects_matched()
    summary = {"model": model_name, "checkpoint": prefix,
               "variables_set": len(expected),
               "parameters": int(model.count_params()),
               "optimizer_slots_ignored": len(slots),
               "bookkeeping_ignored": len(other),
               "output_dir": output_dir}
    if export and models[model_name]["task"] != "panoptic":
      raise ImportError_(f"--export: {model_name!r} is an ImageNet "
                         f"encoder; only panoptic models are exported.")

    def write(staging):
      tf.train.Checkpoint(model=model).write(os.path.join(staging, "ckpt-1"))
      with open(os.path.join(staging, "checkpoint"), "w") as f:
        f.write('model_checkpoint_path: "ckpt-1"\n'
                'all_model_checkpoint_paths: "ckpt-1"\n')
      with open(os.path.join(staging, "experiment.gin"), "w") as f:
        f.write(_gin_text(model_name, models[model_name], overrides,
                          output_dir, checkpoint))
      if export:
        print("exporting the SavedModel", file=log)
        _export(model_name, models[model_name], overrides, staging,
                os.path.join(staging, "saved_model"))
        summary["saved_model"] = os.path.join(output_dir, "saved_model")
      with open(os.path.join(staging, "import_summary.json"), "w") as f:
        json.dump(summary, f, indent=1, sort_keys=True)

    common.write_output_dir(output_dir, write, Wording)
  finally:
    shutil.rmtree(scratch, ignore_errors=True)
  print(f"imported {summary['variables_set']} variables "
        f"({summary['parameters']:,} parameters) into {model_name}; ignored "
        f"{len(slots)} optimizer slots, {len(other)} bookkeeping entries -> "
        f"{output_dir}", file=log)
  return summary


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  flags.DEFINE_string("model", None, "Zoo name of the deeplab2 model (see "
                      "README: Use a published model).",
                      flag_values=flag_values)
  flags.DEFINE_string("checkpoint", None, "deeplab2 checkpoint: the "
                      "published .tar.gz, a folder or a checkpoint prefix.",
                      flag_values=flag_values)
  flags.DEFINE_string("output_dir", None, "New folder for the imported "
                      "checkpoint and its gin file.", flag_values=flag_values)
  flags.DEFINE_bool("export", False, "Panoptic models: also write "
                    "OUTPUT_DIR/saved_model for tools/predict.py.",
                    flag_values=flag_values)
  flags.DEFINE_multi_string("override", [], "Builder argument NAME=JSON "
                            "(e.g. width_multiplier=0.5), repeatable.",
                            flag_values=flag_values)


def _parse_overrides(values: Sequence[str]) -> Dict[str, object]:
  overrides = {}
  for item in values:
    name, sep, value = item.partition("=")
    if not sep or not name:
      raise ImportError_(f"--override {item!r}: expected NAME=JSON.")
    try:
      overrides[name] = json.loads(value)
    except json.JSONDecodeError:
      overrides[name] = value
  return overrides


def main(argv: Sequence[str], flag_values: flags.FlagValues = flags.FLAGS
        ) -> int:
  """The tool: returns 0, or 2 after one `error: ...` line."""
  if len(argv) > 1:
    print(f"error: unexpected arguments {list(argv[1:])}", file=sys.stderr)
    return 2
  for name in ("model", "checkpoint", "output_dir"):
    if not flag_values[name].value:
      print(f"error: --{name} is required", file=sys.stderr)
      return 2
  try:
    import_checkpoint(flag_values.model, flag_values.checkpoint,
                      flag_values.output_dir,
                      _parse_overrides(flag_values.override),
                      export=flag_values.export)
  except (ImportError_, OSError, tf.errors.OpError, AssertionError,
          ValueError, TypeError) as e:
    print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
    return 2
  return 0
