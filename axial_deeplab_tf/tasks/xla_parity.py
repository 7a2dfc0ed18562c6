"""XLA parity: compiled against uncompiled train and eval steps of a task.

`compare` builds one experiment (gin files + bindings), then trains the same
initial weights on the same deterministic batches twice, once with the
per-replica steps compiled by XLA and once as plain graphs, and evaluates
the final weights both ways. It reports the per-step losses, their largest
relative difference, the largest relative difference of the final weights
(and EMA averages), the evaluation metrics of both, and step, trace and
compile times of the same run. `run_checks` does several such comparisons
in one process; `python -m axial_deeplab_tf.tasks.xla_parity` runs a matrix
of cases (a fresh process per strategy) and can write BENCHMARKS.md.

The two-replica case (the CPU stand-in for a TPU job: MirroredStrategy over
two logical CPU devices, sync batch norm) cannot run a replica function
compiled with jit_compile on CPU: MirroredStrategy sums across replicas by
merge_call unless every device is a GPU, and XLA on CPU does not compile
cross-device collectives. There the "compiled" run uses XLA auto-clustering
(`tf.config.optimizer.set_jit("autoclustering")`, with
TF_XLA_FLAGS=--tf_xla_cpu_global_jit set before TensorFlow starts): every
op of the replica step but the collectives is compiled, and the collectives
sum between the compiled clusters. The one-device case uses jit_compile
(must-compile: any op XLA cannot compile is an error).
"""

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Sequence

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))
_GIN = os.path.join(REPO, "gin")

# Reduced models of the four families (widths cut so a CPU compiles and runs
# 20 steps in seconds); `extra` bindings complete each experiment.
CASES = {
    "axial_deeplab_s": dict(
        gin="quickstart/axial_deeplab.gin", kind="panoptic",
        overrides={"width_multiplier": 0.125, "semantic_channels": 16,
                   "instance_channels": 16, "context_channels": 16,
                   "stem_channels": (8, 8, 16), "depth": 26}),
    "panoptic_deeplab_r50": dict(
        gin="coco/panoptic_deeplab_r50.gin", kind="panoptic",
        overrides={"semantic_channels": 16, "instance_channels": 16,
                   "aspp_channels": 16},
        # Model Garden's bottleneck blocks start with the residual branch's
        # last batch-norm scale at one. From that random start, in training
        # mode at batch 2, the ResNet-50 is chaotic: a 1e-6 relative change
        # of the input moves its outputs by 1e-3 and its gradients by a
        # median 9% (`gradient_sensitivity`), so any two roundings of the
        # same step (graph against XLA, or the graph against itself on a
        # perturbed input) part within a few updates. The parity run starts
        # from the same weights with those scales at zero, the start
        # deeplab2's residual blocks and Axial-ResNet's use (and what the
        # recipes' ImageNet initialisation is close to: a well-conditioned
        # network), where the same perturbation moves the gradients by 4e-5
        # on the run's first batch.
        initial_state="zero_residual_gamma",
        # Batch 4, not 2: the ASPP image-pool branch's batch norm sees one
        # value per image and channel, and over two values it outputs their
        # sign (+-1), passing back rounding noise; 20 float32 steps from
        # the start above: 1.5e-4 at batch 2, 1.6e-5 at batch 4 (plain
        # start at batch 4: 8.9e-2, still chaotic). Batch 8 moves the miss
        # rather than removing it: float32 3.9e-5 (one device) and 7.1e-5
        # (two replicas, 1.02e-4 at batch 4), but bfloat16 on one device
        # 3.3e-2 (1.35e-2 at batch 4).
        batch=4),
    "segnext_t": dict(
        gin="quickstart/segnext.gin", kind="panoptic",
        # Random regularisers off and the NMF bases seeded: their draws come
        # from TensorFlow's stateful generator, whose XLA lowering yields
        # other numbers than its CPU kernels (with the head's spatial
        # dropout on, the first forward pass already differs by 0.38).
        overrides={"drop_path_rate": 0.0, "head_dropout_rate": 0.0,
                   "nmf_seed": 0}),
    "axial_resnet_50s": dict(
        gin="imagenet/axial_resnet_50s.gin", kind="classification",
        # Not 32x32: there the last stage is 1x1, and batch norm over the
        # two values of a channel in a batch of two outputs their sign
        # (+-1, whatever their gap), so bfloat16 rounding of that gap flips
        # outputs (one bfloat16 forward pass, compiled against uncompiled:
        # 0.14 of the largest output at 32x32, 0.03 at 64x64).
        overrides={"width_multiplier": 0.125, "depth": 26,
                   "input_size": (64, 64)}),
}

# Batch and crop of a case unless it sets its own.
DEFAULT_BATCH = 2
DEFAULT_CROP = 64


def case_shape(model: str, batch: Optional[int] = None,
               crop: Optional[int] = None):
  """(global batch, square crop) of a parity run of `model`: the arguments
  where given, else the case's own, else DEFAULT_BATCH / DEFAULT_CROP."""
  case = CASES[model]
  return (batch or case.get("batch", DEFAULT_BATCH),
          crop or case.get("crop", DEFAULT_CROP))


@dataclasses.dataclass
class ParityResult:
  """What `compare` measured (times in seconds, this machine)."""
  model: str
  dtype: str
  replicas: int
  compile_mode: str
  steps: int
  losses_graph: List[float]
  losses_xla: List[float]
  max_loss_rel_diff: float
  max_weight_rel_diff: float
  eval_graph: Dict[str, float]
  eval_xla: Dict[str, float]
  first_step_graph: float
  first_step_xla: float
  step_time_graph: float
  step_time_xla: float

  def eval_equal(self) -> bool:
    return metrics_equal(self.eval_graph, self.eval_xla)


def metrics_equal(a: Dict[str, float], b: Dict[str, float]) -> bool:
  """Two evaluations' metrics agree (PQ, mIoU, AP; accuracy). The
  classifier's mean evaluation loss is left out: a loss, not a metric, and
  in bfloat16 it moves with the rounding (accuracy unchanged)."""
  def metrics(logs):
    return {k: v for k, v in logs.items() if k != "loss"}
  return metrics(a) == metrics(b)


def write_data(root: str, image_size=(64, 64), num_train: int = 8,
               num_val: int = 4) -> Dict[str, str]:
  """Writes the quickstart shapes data and a tiny classification set.

  Both go through the project's converters (real on-disk formats).

  Returns:
    {"panoptic_train", "panoptic_val", "classification_train",
     "classification_val"}: file patterns.
  """
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from axial_deeplab_tf.data import synthetic  # pylint: disable=g-import-not-at-top
  from axial_deeplab_tf.data.converters import coco_panoptic, imagenet  # pylint: disable=g-import-not-at-top,g-multiple-import
  raw = os.path.join(root, "raw")
  out = os.path.join(root, "panoptic")
  paths = synthetic.generate_synthetic_panoptic(
      raw, num_train=num_train, num_val=num_val, image_size=image_size,
      seed=0)
  with open(os.devnull, "w") as quiet:
    for split in ("train", "val"):
      coco_panoptic.convert_own_panoptic(
          image_dir=paths[split]["image_dir"],
          panoptic_json=paths[split]["panoptic_json"],
          panoptic_dir=paths[split]["panoptic_dir"], output_dir=out,
          split=split, categories_json=paths["categories_json"],
          dataset_name="synthetic_shapes", num_shards=1, strict=True,
          progress_stream=quiet)
    rng = np.random.default_rng(0)
    cls_out = os.path.join(root, "classification")
    for split, count in (("train", num_train), ("val", num_val)):
      folder = os.path.join(root, "classes", split)
      for label, synset in enumerate(("n00000001", "n00000002")):
        os.makedirs(os.path.join(folder, synset), exist_ok=True)
        for k in range(count // 2):
          image = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
          image[..., label] = 255 - image[..., label] // 4
          Image.fromarray(image).save(
              os.path.join(folder, synset, f"{k}.png"), format="PNG")
      imagenet.convert_imagenet(image_dir=folder, split=split,
                                output_dir=cls_out, num_shards=1,
                                strict=True, progress_stream=quiet)
  return {"panoptic_train": os.path.join(out, "train-*"),
          "panoptic_val": os.path.join(out, "val-*"),
          "classification_train": os.path.join(cls_out, "train-*"),
          "classification_val": os.path.join(cls_out, "val-*")}


def bindings(model: str, data: Dict[str, str], dtype: str = "float32",
             replicas: int = 1, batch: Optional[int] = None,
             crop: Optional[int] = None, steps: int = 20) -> List[str]:
  """gin bindings of a reduced, deterministic parity run of `model`
  (batch and crop: `case_shape`)."""
  case = CASES[model]
  kind = case["kind"]
  batch, crop = case_shape(model, batch, crop)
  overrides = dict(case["overrides"])
  if replicas > 1:
    overrides["use_sync_bn"] = True
  params = {
      "model.overrides": repr(overrides),
      "train/data.input_path": repr(data[f"{kind}_train"]),
      "eval/data.input_path": repr(data[f"{kind}_val"]),
      "train/data.global_batch_size": str(batch),
      "eval/data.global_batch_size": str(batch),
      "train/data.crop_size": f"({crop}, {crop})",
      "eval/data.crop_size": f"({crop}, {crop})",
      "train/data.shuffle_buffer_size": "4",
      "train/data.deterministic": "True",
      "train/data.seed": "1",
      # A rate at which 20 steps of batch 2 stay out of the chaotic regime:
      # at the recipes' rates (e.g. SGD 0.01-0.4 here) the loss jumps
      # between steps and amplifies the 1e-5 rounding differences of a
      # single step (different fusion and summation order) beyond any
      # tolerance within 10 steps, in either direction.
      "optimization.learning_rate": "0.0001",
      # The first update at rate 0 (steps 1 and 2 see the same weights).
      "optimization.warmup_steps": str(min(2, steps - 1)),
      "trainer.train_steps": str(steps),
      "runtime.mixed_precision_dtype": repr(dtype),
      "runtime.distribution_strategy": repr(
          "mirrored" if replicas > 1 else "one_device"),
      "runtime.num_cpu_devices": str(replicas),
      "runtime.seed": "0",
  }
  params.update(case.get("extra", {}))
  if kind == "panoptic":
    params["losses.small_instance_area"] = "64"
    params["post_processing.stuff_area_limit"] = "16"
    params["post_processing.nms_kernel"] = "7"
    params["evaluation.num_image_panels"] = "0"
  return [f"{k} = {v}" for k, v in params.items()]


def _build_case(model: str, data: Dict[str, str], dtype: str,
                batch: Optional[int] = None, crop: Optional[int] = None,
                initial_state: bool = True):
  """(params, task, net, variables set by the initial state) of a case on
  one device, its dtype's policy set, seeded as the parity runs are."""
  import tf_keras  # pylint: disable=g-import-not-at-top
  from official.modeling import performance  # pylint: disable=g-import-not-at-top
  from axial_deeplab_tf.tasks import experiment as experiment_lib  # pylint: disable=g-import-not-at-top
  from axial_deeplab_tf.tasks import segmentation  # pylint: disable=g-import-not-at-top
  params = experiment_lib.parse_experiment(
      [os.path.join(_GIN, CASES[model]["gin"])],
      bindings(model, data, dtype, 1, batch, crop))
  performance.set_mixed_precision_policy(params.runtime.mixed_precision_dtype)
  tf_keras.utils.set_random_seed(params.runtime.seed)
  task = segmentation.build_task(params)
  net = task.build_model()
  changed = apply_initial_state(net, model) if initial_state else 0
  return params, task, net, changed


def apply_initial_state(net, model: str) -> int:
  """Sets `CASES[model]`'s initial state on the built `net`.

  "zero_residual_gamma": the last batch-norm scale of every Model Garden
  bottleneck/residual block (the one before the residual add) to zero.

  Returns:
    The number of variables changed (0 for a case without a state).
  """
  from official.vision.modeling.layers import nn_blocks  # pylint: disable=g-import-not-at-top
  state = CASES[model].get("initial_state")
  if state is None:
    return 0
  if state != "zero_residual_gamma":
    raise ValueError(f"unknown initial_state {state!r} of case {model!r}.")
  last_norm = {nn_blocks.BottleneckBlock: "_norm3",
               nn_blocks.ResidualBlock: "_norm2"}
  changed = 0
  for layer in net.submodules:
    attr = last_norm.get(type(layer))
    if attr is not None:
      gamma = getattr(layer, attr).gamma
      gamma.assign(np.zeros(gamma.shape, gamma.dtype.as_numpy_dtype))
      changed += 1
  if not changed:
    raise ValueError(f"case {model!r}: no residual block found in the "
                     "model for initial_state 'zero_residual_gamma'.")
  return changed


def gradient_sensitivity(model: str, data: Dict[str, str],
                         initial_state: bool = True,
                         batch: Optional[int] = None,
                         crop: Optional[int] = None,
                         relative_noise: float = 1e-6,
                         seed: int = 0) -> Dict[str, float]:
  """How far one training-mode gradient moves under a tiny input change.

  Builds the parity case's model (float32, uncompiled), takes its first
  training batch, and computes the gradients of the total loss for the batch
  and for the batch with each pixel scaled by 1 + relative_noise * N(0, 1).
  A well-conditioned start moves them by about the noise times the depth; a
  chaotic one by far more, and then no two roundings of the same training
  step (graph against XLA included) can agree over several updates.

  Returns:
    {"outputs": max |change| / max |output| over the outputs,
     "gradients_median", "gradients_max": ||change|| / ||gradient|| per
     variable, "changed": variables set by the initial state}.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  params, task, net, changed = _build_case(model, data, "float32", batch,
                                           crop, initial_state)
  features, labels = next(iter(task.build_inputs(params.task.train_data)))
  image = features["image"] if isinstance(features, dict) else features
  rng = np.random.default_rng(seed)
  noisy = image * (1.0 + relative_noise * rng.standard_normal(
      image.shape).astype(np.float32))

  @tf.function
  def outputs_and_gradients(x):
    with tf.GradientTape() as tape:
      outputs = net(x, training=True)
      loss = task._total_loss(task.build_losses(  # pylint: disable=protected-access
          labels, outputs, task._regularization(net)))  # pylint: disable=protected-access
    return outputs, tape.gradient(loss, net.trainable_variables)

  out_a, grads_a = outputs_and_gradients(image)
  out_b, grads_b = outputs_and_gradients(noisy)
  flat_a = tf.nest.flatten(out_a)
  flat_b = tf.nest.flatten(out_b)
  out_gap = max(float(np.max(np.abs(a.numpy() - b.numpy())) /
                      max(float(np.max(np.abs(a.numpy()))), 1e-30))
                for a, b in zip(flat_a, flat_b))
  gaps = [_weights_rel_diff([a], [b]) for a, b in zip(grads_a, grads_b)
          if a is not None and np.any(a.numpy())]
  return {"outputs": out_gap, "gradients_median": float(np.median(gaps)),
          "gradients_max": float(np.max(gaps)), "changed": float(changed)}


def _log(message: str) -> None:
  print(message, file=sys.stderr, flush=True)


def _rel_diff(a, b) -> float:
  a = np.asarray(a, np.float64)
  b = np.asarray(b, np.float64)
  scale = np.maximum(np.abs(a), np.abs(b))
  diff = np.abs(a - b)
  return float(np.max(np.where(scale > 0, diff / np.maximum(scale, 1e-12),
                               0.0))) if a.size else 0.0


def _weights_rel_diff(a: Sequence[np.ndarray], b: Sequence[np.ndarray]
                      ) -> float:
  """||a - b|| / ||a|| over all arrays taken as one vector."""
  x = np.concatenate([np.ravel(np.asarray(v, np.float64)) for v in a])
  y = np.concatenate([np.ravel(np.asarray(v, np.float64)) for v in b])
  return float(np.linalg.norm(x - y) / max(np.linalg.norm(x), 1e-30))


def compare(model: str, data: Dict[str, str], dtype: str = "float32",
            steps: int = 20, batch: Optional[int] = None,
            crop: Optional[int] = None, ema: bool = False,
            train_xla: bool = True, evaluate: bool = True) -> ParityResult:
  """Trains and evaluates `model` with and without XLA from the same start.

  Must run in a process whose devices match the runtime (two logical CPU
  devices for the two-replica case: `_configure_process`).

  Args:
    model: a key of CASES.
    data: `write_data` patterns.
    dtype: "float32" or "bfloat16" (the mixed_bfloat16 policy).
    steps: training steps of each run.
    batch: global batch size (None: the case's, `case_shape`).
    crop: training and evaluation crop, square (None: the case's).
    ema: wrap the optimizer in Model Garden's EMA (average decay 0.9).
    train_xla: False: train uncompiled only (losses_xla empty, the
      differences and XLA step times NaN) and compare the evaluations of
      the trained weights (the compiled eval step alone).
    evaluate: False: skip both evaluations (eval_graph = eval_xla = {}).

  Returns:
    A ParityResult.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tf_keras  # pylint: disable=g-import-not-at-top
  from official.modeling import performance  # pylint: disable=g-import-not-at-top
  from official.modeling.optimization.configs import optimizer_config  # pylint: disable=g-import-not-at-top
  from axial_deeplab_tf.tasks import experiment as experiment_lib  # pylint: disable=g-import-not-at-top
  from axial_deeplab_tf.tasks import segmentation  # pylint: disable=g-import-not-at-top
  from axial_deeplab_tf.tasks import train_lib  # pylint: disable=g-import-not-at-top

  replicas = len(tf.config.list_logical_devices("CPU"))
  params = experiment_lib.parse_experiment(
      [os.path.join(_GIN, CASES[model]["gin"])],
      bindings(model, data, dtype, replicas, batch, crop, steps))
  if ema:
    params.trainer.optimizer_config.ema = optimizer_config.EMAConfig(
        average_decay=0.9)
  performance.set_mixed_precision_policy(params.runtime.mixed_precision_dtype)
  tf_seed = params.runtime.seed
  strategy = train_lib.build_strategy(params.runtime)
  autocluster = replicas > 1
  with strategy.scope():
    tf_keras.utils.set_random_seed(tf_seed)
    task = segmentation.build_task(params)
    net = task.build_model()
    apply_initial_state(net, model)
  initial = net.get_weights()

  def train(compiled: bool):
    net.set_weights(initial)
    with strategy.scope():
      _set_compiled(task, compiled, autocluster)
      optimizer = task.create_optimizer(params.trainer.optimizer_config,
                                        params.runtime)
      if hasattr(optimizer, "shadow_copy"):
        optimizer.shadow_copy(net)
      metrics = task.build_metrics(training=True)
    iterator = iter(_distributed(strategy, task, params.task.train_data))

    @tf.function
    def step(iterator):
      out = strategy.run(
          lambda x: task.train_step(x, net, optimizer, metrics)[task.loss],
          args=(next(iterator),))
      return strategy.reduce(tf.distribute.ReduceOp.MEAN, out, axis=None)

    losses, times = [], []
    for _ in range(steps):
      start = time.perf_counter()
      losses.append(float(step(iterator)))
      times.append(time.perf_counter() - start)
      _log(f"{model} {dtype} compiled={compiled} step {len(losses)}: "
           f"loss {losses[-1]:.6g} ({times[-1]:.1f} s)")
    weights = [v.numpy() for v in net.weights]
    if hasattr(optimizer, "shadow_copy"):
      weights += [v.numpy() for v in optimizer._average_weights]  # pylint: disable=protected-access
    return losses, weights, times

  def evaluate_weights(compiled: bool, weights):
    net.set_weights(weights)
    with strategy.scope():
      _set_compiled(task, compiled, autocluster)
    return evaluate_model(task, net, strategy, params)

  losses_graph, weights_graph, times_graph = train(False)
  nan = float("nan")
  if train_xla:
    losses_xla, weights_xla, times_xla = train(True)
    loss_diff = _rel_diff(losses_graph, losses_xla)
    weight_diff = _weights_rel_diff(weights_graph, weights_xla)
  else:
    losses_xla, times_xla = [], [nan, nan]
    loss_diff = weight_diff = nan
  trained = weights_graph[:len(net.weights)]
  eval_graph = eval_xla = {}
  if evaluate:
    eval_graph = evaluate_weights(False, trained)
    _log(f"{model} {dtype} eval uncompiled: {eval_graph}")
    eval_xla = evaluate_weights(True, trained)
    _log(f"{model} {dtype} eval compiled: {eval_xla}")
  if autocluster:
    tf.config.optimizer.set_jit(False)
  return ParityResult(
      model=model, dtype=dtype, replicas=replicas,
      compile_mode="autoclustering" if autocluster else "jit_compile",
      steps=steps, losses_graph=losses_graph, losses_xla=losses_xla,
      max_loss_rel_diff=loss_diff, max_weight_rel_diff=weight_diff,
      eval_graph=eval_graph, eval_xla=eval_xla,
      first_step_graph=times_graph[0], first_step_xla=times_xla[0],
      step_time_graph=float(np.median(times_graph[1:])),
      step_time_xla=float(np.median(times_xla[1:])) if train_xla else nan)


def _set_compiled(task, compiled: bool, autocluster: bool) -> None:
  """XLA on or off: by auto-clustering (several replicas on CPU: their
  cross-replica sums cannot run inside a jit_compile function), or the
  task's jit_compile."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if autocluster:
    tf.config.optimizer.set_jit("autoclustering" if compiled else False)
  else:
    task.set_jit_compile(compiled)


def _distributed(strategy, task, data_config):
  """The task's dataset of `data_config`, one input pipeline per worker."""
  return strategy.distribute_datasets_from_function(
      lambda ctx: task.build_inputs(data_config, ctx))


def evaluate_model(task, net, strategy, params) -> Dict[str, float]:
  """Evaluates `net` on params.task.validation_data with the task's eval
  step (compiled or not as the task / the jit setting currently says).

  Returns:
    The task's reduced metrics (panoptic: PQ, AP, mIoU; others: loss and
    the metrics' results), rounded to 12 digits.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  with strategy.scope():
    metrics = task.build_metrics(training=False)
  dataset = _distributed(strategy, task, params.task.validation_data)

  @tf.function
  def step(inputs):
    out = strategy.run(
        lambda x: task.validation_step(x, net, metrics), args=(inputs,))
    return tf.nest.map_structure(strategy.experimental_local_results, out)

  state = None
  for inputs in dataset:
    outputs = step(inputs)
    outputs = tf.nest.map_structure(lambda t: t.numpy(), outputs)
    loss = outputs.pop(task.loss)
    state = task.aggregate_logs(state, outputs) if outputs else (
        (state or []) + [float(np.mean(loss))])
  if isinstance(state, list):
    logs = {"loss": round(float(np.mean(state)), 6)}
    logs.update({m.name: round(float(m.result()), 12) for m in metrics})
    return logs
  return {k: round(float(v), 12)
          for k, v in task.reduce_aggregated_logs(state).items()}


def compare_evaluation(gin_files: Sequence[str], gin_params: Sequence[str],
                       checkpoint: str, dtype: str = "float32"
                       ) -> Dict[str, object]:
  """The compiled against the uncompiled eval step on a trained model.

  Builds the experiment (gin files + bindings, e.g. the quickstart's with
  its validation files) under `dtype`'s policy, on one device or, when
  the process has several logical CPU devices (`_configure_process`), on
  a MirroredStrategy over them; restores `model=` of `checkpoint` (a
  prefix, or a folder: its latest checkpoint) and evaluates it twice on
  the experiment's validation data: with the task's eval step as a graph
  and compiled by XLA (jit_compile on one device, auto-clustering on
  several). The bindings decide evaluation.precision (a bfloat16 job
  evaluated in bfloat16, or by its float32 twin).

  Returns:
    {"checkpoint", "dtype", "replicas", "evaluation_precision",
     "eval_graph", "eval_xla", "same", "seconds_graph", "seconds_xla"}
    (seconds: whole evaluation, the compiled one including its compile).

  Raises:
    FileNotFoundError: no checkpoint at `checkpoint`.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from official.modeling import performance  # pylint: disable=g-import-not-at-top
  from axial_deeplab_tf.tasks import checkpoint_utils  # pylint: disable=g-import-not-at-top
  from axial_deeplab_tf.tasks import experiment as experiment_lib  # pylint: disable=g-import-not-at-top
  from axial_deeplab_tf.tasks import segmentation  # pylint: disable=g-import-not-at-top
  from axial_deeplab_tf.tasks import train_lib  # pylint: disable=g-import-not-at-top
  path = checkpoint
  if tf.io.gfile.isdir(path):
    path = tf.train.latest_checkpoint(path)
  if not path or not tf.io.gfile.exists(path + ".index"):
    raise FileNotFoundError(f"checkpoint {checkpoint!r}: no checkpoint "
                            "there.")
  replicas = len(tf.config.list_logical_devices("CPU"))
  params = experiment_lib.parse_experiment(
      list(gin_files), list(gin_params) + [
          f"runtime.mixed_precision_dtype = {dtype!r}",
          "runtime.distribution_strategy = " +
          repr("mirrored" if replicas > 1 else "one_device"),
          f"runtime.num_cpu_devices = {replicas}"])
  performance.set_mixed_precision_policy(params.runtime.mixed_precision_dtype)
  strategy = train_lib.build_strategy(params.runtime)
  with strategy.scope():
    task = segmentation.build_task(params)
    net = task.build_model()
  checkpoint_utils.restore_whole_model(net, path)
  results = {"checkpoint": path, "dtype": dtype, "replicas": replicas,
             "evaluation_precision": params.task.evaluation.precision}
  for name, compiled in (("graph", False), ("xla", True)):
    with strategy.scope():
      _set_compiled(task, compiled, replicas > 1)
    start = time.perf_counter()
    results[f"eval_{name}"] = evaluate_model(task, net, strategy, params)
    results[f"seconds_{name}"] = time.perf_counter() - start
    _log(f"{path} {dtype} x{replicas} eval compiled={compiled}: "
         f"{results[f'eval_{name}']}")
  if replicas > 1:
    tf.config.optimizer.set_jit(False)
  results["same"] = metrics_equal(results["eval_graph"], results["eval_xla"])
  return results


def forward_gap(model: str, data: Dict[str, str], training: bool,
                batch: Optional[int] = None, crop: Optional[int] = None
                ) -> Dict[str, float]:
  """Where a bfloat16 forward pass goes, compiled and uncompiled.

  One float32 model and one mixed_bfloat16 model with the same weights run
  the same random batch: float32 (reference), bfloat16 as a graph and
  bfloat16 under jit_compile. The gaps are max |a - b| / max |float32|
  over all outputs. If the compiled-uncompiled gap is of the size of each
  one's gap to float32, the two differ by bfloat16 rounding (where the
  roundings fall), not by one of them computing in another precision.

  Returns:
    {"graph_vs_xla", "graph_vs_float32", "xla_vs_float32"}.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from official.modeling import performance  # pylint: disable=g-import-not-at-top
  batch, crop = case_shape(model, batch, crop)
  reference = _build_case(model, data, "float32", batch, crop)[2]
  net = _build_case(model, data, "bfloat16", batch, crop)[2]
  performance.set_mixed_precision_policy("float32")
  net.set_weights(reference.get_weights())
  images = tf.random.stateless_uniform([batch, crop, crop, 3], seed=[1, 2],
                                       maxval=255.0)

  def flat(outputs):
    return np.concatenate([np.ravel(tf.cast(t, tf.float32).numpy())
                           for t in tf.nest.flatten(outputs)])

  f32 = flat(reference(images, training=training))
  graph = flat(tf.function(lambda x: net(x, training=training))(images))
  xla = flat(tf.function(lambda x: net(x, training=training),
                         jit_compile=True)(images))
  scale = float(np.max(np.abs(f32)))
  return {"graph_vs_xla": float(np.max(np.abs(graph - xla))) / scale,
          "graph_vs_float32": float(np.max(np.abs(graph - f32))) / scale,
          "xla_vs_float32": float(np.max(np.abs(xla - f32))) / scale}


def _configure_process(replicas: int) -> None:
  """Logical CPU devices (before TensorFlow initialises) for `replicas`."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if replicas > 1:
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * replicas)


def run_checks(checks: Sequence[Dict], replicas: int, data_root: str
               ) -> List[ParityResult]:
  """Runs `compare` for each check dict (model, dtype, steps, ...) here."""
  _configure_process(replicas)
  data = write_data(data_root)
  results = []
  for check in checks:
    results.append(compare(data=data, **check))
    _log("RESULT " + json.dumps(dataclasses.asdict(results[-1])))
  return results


def run_in_subprocess(checks: Sequence[Dict], replicas: int,
                      timeout: Optional[float] = None,
                      fast_compile: bool = True) -> List[ParityResult]:
  """`run_checks` in a fresh Python process (devices are set at start;
  see `_run_spec_in_subprocess`)."""
  if replicas > 1 and len(checks) > 1:
    # One process per check: a second MirroredStrategy in a process reuses
    # the first one's collective instance keys, and the collective executor
    # still holds the first model's tensor shapes under them (sync batch
    # norm then fails with "Shape mismatch in the collective instance").
    return [r for check in checks
            for r in run_in_subprocess([check], replicas, timeout,
                                       fast_compile)]
  return [ParityResult(**r) for r in _run_spec_in_subprocess(
      {"checks": list(checks)}, replicas, timeout, fast_compile, REPO)]


def evaluation_in_subprocess(gin_files: Sequence[str],
                             gin_params: Sequence[str], checkpoint: str,
                             dtype: str, replicas: int,
                             timeout: Optional[float] = None
                             ) -> Dict[str, object]:
  """`compare_evaluation` in a fresh process with `replicas` logical CPU
  devices, run from the current folder (relative paths keep their
  meaning)."""
  return _run_spec_in_subprocess(
      {"evaluation": dict(gin_files=list(gin_files),
                          gin_params=list(gin_params),
                          checkpoint=checkpoint, dtype=dtype)},
      replicas, timeout, fast_compile=False, cwd=os.getcwd())[0]


def _run_spec_in_subprocess(spec: Dict, replicas: int,
                            timeout: Optional[float], fast_compile: bool,
                            cwd: str) -> List[Dict]:
  """Runs `spec` (`main`'s --run_spec) in a fresh Python process.

  The two-replica process gets TF_XLA_FLAGS=--tf_xla_cpu_global_jit (XLA
  auto-clustering on CPU must be allowed before TensorFlow starts).
  fast_compile sets XLA_FLAGS=--xla_backend_optimization_level=0: LLVM
  optimisation dominates XLA's CPU compile time (minutes for a training
  step on this machine) and does not change what is computed.
  """
  env = dict(os.environ)
  env["TF_USE_LEGACY_KERAS"] = "1"
  env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  env["PYTHONPATH"] = os.pathsep.join(
      [REPO] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
  if fast_compile:
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                        " --xla_backend_optimization_level=0").strip()
  if replicas > 1:
    env["TF_XLA_FLAGS"] = (env.get("TF_XLA_FLAGS", "") +
                           " --tf_xla_cpu_global_jit").strip()
  with tempfile.TemporaryDirectory() as root:
    spec_path = os.path.join(root, "spec.json")
    out = os.path.join(root, "results.json")
    with open(spec_path, "w") as f:
      json.dump(dict(spec, replicas=replicas,
                     data_root=os.path.join(root, "data")), f)
    proc = subprocess.run(
        [sys.executable, "-m", "axial_deeplab_tf.tasks.xla_parity",
         "--run_spec", spec_path, "--results", out], env=env, cwd=cwd,
        capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
      raise RuntimeError(f"parity process failed ({proc.returncode}):\n"
                         f"{proc.stderr[-6000:]}")
    with open(out) as f:
      return json.load(f)


def _fmt_eval(metrics: Dict[str, float]) -> str:
  keys = [k for k in ("panoptic_quality", "mean_iou", "accuracy")
          if k in metrics]
  return ", ".join(f"{k.replace('panoptic_quality', 'PQ')}={metrics[k]:.4f}"
                   for k in keys)


def markdown(results: Sequence[ParityResult], command: str,
             notes: str = "") -> str:
  """The BENCHMARKS.md section of a matrix run."""
  import platform  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  lines = [
      "## XLA parity and step time (compiled vs uncompiled train step)",
      "",
      "<!-- generated by axial_deeplab_tf/tasks/xla_parity.py -->",
      f"`{command}` on {platform.processor() or platform.machine()} "
      f"({os.cpu_count()} cores, shared), TensorFlow {tf.__version__}, "
      f"{time.strftime('%Y-%m-%d')}. Reduced models (see `CASES`), batch 2 "
      "(Panoptic-DeepLab-R50: 4), crop 64x64, 20 steps from the same initial "
      "weights on the same deterministic batches; one replica: "
      "`jit_compile=True` around the per-replica step; two replicas "
      "(MirroredStrategy over two logical CPU devices, sync batch norm): "
      "XLA auto-clustering (the collectives cannot be compiled on CPU, see "
      "the module docstring). Loss diff: largest relative difference of "
      "the 20 losses; weights: ||difference|| / ||weights|| of all final "
      "weights (and EMA averages) as one vector. "
      "First step: trace (+ compile) + run; step: median of steps 2-20, "
      "same run. XLA_FLAGS=--xla_backend_optimization_level=0 (LLVM "
      "optimisation off: compiles take minutes otherwise on this machine), "
      "so the compiled step times are pessimistic (unoptimised code).",
      "",
      "| model | dtype | replicas | loss diff | weights diff | eval "
      "uncompiled | eval compiled | same | first step graph / XLA (s) | "
      "step graph / XLA (s) |",
      "|---|---|---|---|---|---|---|---|---|---|",
  ]
  for r in results:
    lines.append(
        f"| {r.model} | {r.dtype} | {r.replicas} | "
        f"{r.max_loss_rel_diff:.2e} | {r.max_weight_rel_diff:.2e} | "
        f"{_fmt_eval(r.eval_graph)} | {_fmt_eval(r.eval_xla)} | "
        f"{'yes' if r.eval_equal() else 'no'} | {r.first_step_graph:.1f} / "
        f"{r.first_step_xla:.1f} | {r.step_time_graph:.3f} / "
        f"{r.step_time_xla:.3f} |")
  if notes:
    lines += ["", notes.strip()]
  return "\n".join(lines) + "\n"


def _replace_section(path: str, section: str) -> None:
  title = section.splitlines()[0]
  text = open(path).read() if os.path.exists(path) else ""
  if title in text:
    start = text.index(title)
    end = text.find("\n## ", start + len(title))
    text = text[:start] + section + (text[end + 1:] if end >= 0 else "")
  else:
    text = text.rstrip("\n") + "\n\n" + section
  with open(path, "w") as f:
    f.write(text)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--run_spec", help=argparse.SUPPRESS)
  parser.add_argument("--results", help=argparse.SUPPRESS)
  parser.add_argument("--models", default=",".join(CASES))
  parser.add_argument("--dtypes", default="float32,bfloat16")
  parser.add_argument("--replicas", default="1,2")
  parser.add_argument("--steps", type=int, default=20)
  parser.add_argument("--optimized_compile", action="store_true",
                      help="keep XLA's LLVM optimisation (slow compiles)")
  parser.add_argument("--forward_gap", action="store_true",
                      help="only measure the bfloat16 forward gaps of "
                      "--models (training and inference mode; see "
                      "forward_gap); XLA_FLAGS are taken as set")
  parser.add_argument("--sensitivity", action="store_true",
                      help="only measure how far one float32 gradient of "
                      "--models moves under a 1e-6 relative input change, "
                      "from the parity start and from the plain random "
                      "start (see gradient_sensitivity)")
  parser.add_argument("--eval_checkpoint",
                      help="only compare the compiled with the uncompiled "
                      "eval step on this trained model (checkpoint prefix "
                      "or model_dir) of the --gin_file experiment, in "
                      "each of --dtypes and --replicas (see "
                      "compare_evaluation)")
  parser.add_argument("--gin_file", action="append", default=[],
                      help="with --eval_checkpoint: the experiment")
  parser.add_argument("--gin_param", action="append", default=[],
                      help="with --eval_checkpoint: extra bindings")
  parser.add_argument("--json", help="write all results here")
  parser.add_argument("--markdown", help="rewrite this file's section")
  args = parser.parse_args(argv)
  if args.run_spec:
    with open(args.run_spec) as f:
      spec = json.load(f)
    if "evaluation" in spec:
      _configure_process(spec["replicas"])
      results = [compare_evaluation(**spec["evaluation"])]
    else:
      results = [dataclasses.asdict(r) for r in run_checks(
          spec["checks"], spec["replicas"], spec["data_root"])]
    with open(args.results, "w") as f:
      json.dump(results, f)
    return 0
  if args.eval_checkpoint:
    if not args.gin_file:
      print("error: --eval_checkpoint needs --gin_file (the experiment the "
            "model was trained with)", file=sys.stderr)
      return 2
    results = []
    for replicas in (int(r) for r in args.replicas.split(",")):
      for dtype in args.dtypes.split(","):
        if replicas > 1:
          results.append(evaluation_in_subprocess(
              args.gin_file, args.gin_param, args.eval_checkpoint, dtype,
              replicas))
        else:
          results.append(compare_evaluation(args.gin_file, args.gin_param,
                                            args.eval_checkpoint, dtype))
        print(json.dumps(results[-1]), flush=True)
    if args.json:
      with open(args.json, "w") as f:
        json.dump(results, f, indent=1)
    return 0 if all(r["same"] for r in results) else 1
  models = [m for m in args.models.split(",") if m]
  for m in models:
    if m not in CASES:
      print(f"error: --models: unknown model {m!r}; expected some of "
            f"{sorted(CASES)}", file=sys.stderr)
      return 2
  probes = [(forward_gap, "training")] if args.forward_gap else []
  if args.sensitivity:
    probes.append((gradient_sensitivity, "initial_state"))
  if probes:
    # One JSON line per model, probe and value of its flag.
    with tempfile.TemporaryDirectory() as root:
      data = write_data(root)
      for probe, flag in probes:
        for m in models:
          for value in (True, False):
            print(json.dumps({"model": m, flag: value,
                              **probe(m, data, value)}), flush=True)
    return 0
  results = []
  for replicas in (int(r) for r in args.replicas.split(",")):
    checks = [dict(model=m, dtype=d, steps=args.steps,
                   ema=m == "axial_deeplab_s")
              for m in models for d in args.dtypes.split(",")]
    for r in run_in_subprocess(checks, replicas,
                               fast_compile=not args.optimized_compile):
      print(json.dumps(dataclasses.asdict(r)), flush=True)
      results.append(r)
  if args.json:
    with open(args.json, "w") as f:
      json.dump([dataclasses.asdict(r) for r in results], f, indent=1)
  if args.markdown:
    command = "python -m axial_deeplab_tf.tasks.xla_parity " + " ".join(
        a for a in (argv if argv is not None else sys.argv[1:])
        if not a.startswith("--json"))
    _replace_section(args.markdown, markdown(results, command))
  return 0


if __name__ == "__main__":
  sys.exit(main())
