"""XLA-compiled train and eval steps against the uncompiled ones.

One subprocess per device layout runs several checks (devices must be set
before TensorFlow starts): the compiled steps start from the same weights
and read the same deterministic batches as the uncompiled ones, so the
losses must agree to float32 rounding (1e-4 relative; bfloat16: 2e-2) and
the evaluation metrics must be identical. The full 4-model x 2-dtype x
2-layout matrix with 20 steps is `python -m axial_deeplab_tf.tasks.xla_parity`
(results in BENCHMARKS.md); CI runs a representative subset.
"""

import os

import pytest

from axial_deeplab_tf.tasks import experiment
from axial_deeplab_tf.tasks import segmentation
from axial_deeplab_tf.tasks import xla_parity

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def _check(result, tolerance):
  assert len(result.losses_xla) == result.steps
  assert all(l == l for l in result.losses_graph), result.losses_graph
  assert result.max_loss_rel_diff <= tolerance, (
      result.model, result.dtype, result.losses_graph, result.losses_xla)
  assert result.eval_graph == result.eval_xla, (result.eval_graph,
                                                result.eval_xla)


# CI subset, small: the classifier (axial attention in every block) trains
# 2 steps compiled and uncompiled (no evaluation), and a reduced
# Axial-DeepLab trains 2 uncompiled steps and is evaluated with the compiled
# and the uncompiled eval step on the quickstart-shaped validation images
# (PQ and mIoU). One subprocess for the one-device checks. The acceptance
# matrix (four models, 20 steps, both dtypes and layouts) is the module's
# CLI, results in BENCHMARKS.md.
# Its two tests share one worker (pytest-xdist --dist=loadgroup), which
# runs the subprocess once.
@pytest.fixture(scope="module")
def one_device_results():
  return xla_parity.run_in_subprocess([
      dict(model="axial_resnet_50s", dtype="float32", steps=2,
           evaluate=False),
      dict(model="axial_deeplab_s", dtype="float32", steps=2,
           train_xla=False),
  ], replicas=1)


@pytest.mark.slow
@pytest.mark.xdist_group("xla_one_device")
def test_one_device_compiled_steps_match_uncompiled(one_device_results):
  r = one_device_results[0]
  assert r.compile_mode == "jit_compile"
  _check(r, 1e-4)
  # The weights after the steps agree too.
  assert r.max_weight_rel_diff <= 1e-4


@pytest.mark.slow
@pytest.mark.xdist_group("xla_one_device")
def test_compiled_eval_step_gives_the_same_pq_and_miou(one_device_results):
  r = one_device_results[1]
  assert r.losses_xla == [] and len(r.losses_graph) == 2
  for key in ("panoptic_quality", "mean_iou"):
    assert key in r.eval_graph, r.eval_graph
  assert r.eval_graph == r.eval_xla, (r.eval_graph, r.eval_xla)


# bfloat16 on the same classifier (64x64: at 32x32 its last stage is 1x1
# and batch norm over a batch of two turns bfloat16 rounding into sign
# flips, see CASES). One step here; 20 steps: BENCHMARKS.md.
@pytest.mark.slow
def test_one_device_compiled_bfloat16_steps_match_uncompiled():
  (r,) = xla_parity.run_in_subprocess([
      dict(model="axial_resnet_50s", dtype="bfloat16", steps=1,
           evaluate=False),
  ], replicas=1)
  _check(r, 2e-2)


@pytest.mark.slow
def test_two_replica_sync_bn_compiled_steps_match_uncompiled():
  results = xla_parity.run_in_subprocess([
      dict(model="axial_resnet_50s", dtype="float32", steps=2,
           evaluate=False),
  ], replicas=2)
  (r,) = results
  assert (r.replicas, r.compile_mode) == (2, "autoclustering")
  _check(r, 1e-4)


def test_jit_compile_default_and_checks():
  assert segmentation.resolve_jit_compile(None, "tpu") is True
  assert segmentation.resolve_jit_compile(None, "mirrored") is False
  assert segmentation.resolve_jit_compile(True, "one_device") is True
  with pytest.raises(TypeError, match="jit_compile"):
    segmentation.resolve_jit_compile("yes", "tpu")
  with pytest.raises(ValueError, match="trainer.jit_compile"):
    experiment.parse_experiment(
        [os.path.join(ROOT, "gin", "quickstart", "axial_deeplab.gin")],
        ["trainer.jit_compile = 1"])
  config = experiment.parse_experiment(
      [os.path.join(ROOT, "gin", "quickstart", "axial_deeplab.gin")],
      ["trainer.jit_compile = True"])
  assert config.trainer.jit_compile is True


TPU_FILES = {
    "coco/axial_deeplab_s_tpu.gin": "coco/axial_deeplab_s.gin",
    "coco/axial_deeplab_m_tpu.gin": "coco/axial_deeplab_m.gin",
    "coco/axial_deeplab_l_tpu.gin": "coco/axial_deeplab_l.gin",
    "coco/axial_deeplab_xl_tpu.gin": "coco/axial_deeplab_xl.gin",
    "coco/panoptic_deeplab_r50_tpu.gin": "coco/panoptic_deeplab_r50.gin",
    "cityscapes/axial_deeplab_l_tpu.gin": "cityscapes/axial_deeplab_l.gin",
    "cityscapes/axial_deeplab_xl_tpu.gin": "cityscapes/axial_deeplab_xl.gin",
}


@pytest.mark.parametrize("tpu_file", sorted(TPU_FILES))
def test_tpu_recipe_differs_only_in_strategy_and_compile(tpu_file):
  def parse(name, extra=()):
    return experiment.parse_experiment(
        [os.path.join(ROOT, "gin", name)], list(extra)).as_dict()
  tpu = parse(tpu_file)
  # The experiment file run on GPUs: the mirrored strategy, no XLA.
  gpu = parse(TPU_FILES[tpu_file],
              ["runtime.distribution_strategy = 'mirrored'"])
  assert tpu["runtime"]["distribution_strategy"] == "tpu"
  assert tpu["trainer"]["jit_compile"] is True
  assert gpu["runtime"]["distribution_strategy"] == "mirrored"
  assert gpu["trainer"]["jit_compile"] is None
  assert segmentation.resolve_jit_compile(
      gpu["trainer"]["jit_compile"], "mirrored") is False
  for config in (tpu, gpu):
    del config["runtime"]["distribution_strategy"]
    del config["trainer"]["jit_compile"]
  assert tpu == gpu
  # The paper's TPU settings: bfloat16, sync batch norm, fixed crops.
  assert tpu["runtime"]["mixed_precision_dtype"] == "bfloat16"
  assert tpu["task"]["model"]["overrides"]["use_sync_bn"] is True
  assert tpu["task"]["train_data"]["drop_remainder"] is True


def test_fused_kernel_is_skipped_inside_the_compiled_step():
  import types  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from axial_deeplab_tf.ops import fused_attention  # pylint: disable=g-import-not-at-top
  seen = []

  def replica_step(x):
    in_xla = fused_attention._in_xla_context()
    # usable() outside XLA would build the kernel: ask it inside only.
    seen.append((in_xla, fused_attention.usable(tf.float32) if in_xla
                 else None))
    return x + 1.0

  # The task's wrapping, inside the trainer's tf.function loop.
  task = types.SimpleNamespace(_jit_compile=True, _compiled={})
  compiled = segmentation._BaseTask._maybe_compiled(task, replica_step)

  @tf.function
  def loop(x):
    return tf.distribute.get_strategy().run(compiled, args=(x,))

  assert float(loop(tf.zeros([]))) == 1.0
  assert seen == [(True, False)]
  seen.clear()
  task._jit_compile = False
  plain = segmentation._BaseTask._maybe_compiled(task, replica_step)
  assert plain is replica_step
  tf.function(plain)(tf.zeros([]))
  assert seen == [(False, None)]


@pytest.mark.slow
def test_r50_parity_start_is_well_conditioned(tmp_path):
  # On the parity run's first batch (4 images): from Model Garden's plain
  # random start the ResNet-50 is chaotic in training mode (a 1e-6 relative
  # input change moves its gradients by ~5%; ~9% at batch 2), so no two
  # roundings of a step can agree over 20 updates; the parity case starts with the residual branches'
  # last batch-norm scales at zero, where the same change moves them by
  # ~3e-5 (as it does the Axial-ResNet and SegNeXt starts).
  data = xla_parity.write_data(str(tmp_path))
  plain = xla_parity.gradient_sensitivity("panoptic_deeplab_r50", data,
                                          initial_state=False, batch=4)
  start = xla_parity.gradient_sensitivity("panoptic_deeplab_r50", data,
                                          batch=4)
  assert plain["changed"] == 0 and start["changed"] == 16
  assert plain["gradients_median"] > 1e-2, plain
  assert start["gradients_median"] < 1e-3, start
  assert start["outputs"] < 1e-3 < plain["outputs"], (start, plain)


def test_initial_state_of_a_case_without_residual_blocks_fails(monkeypatch):
  import tf_keras  # pylint: disable=g-import-not-at-top
  monkeypatch.setitem(xla_parity.CASES, "dense", dict(
      initial_state="zero_residual_gamma"))
  net = tf_keras.Sequential([tf_keras.layers.Dense(2, input_shape=(3,))])
  with pytest.raises(ValueError, match="no residual block"):
    xla_parity.apply_initial_state(net, "dense")
  monkeypatch.setitem(xla_parity.CASES, "dense", dict(initial_state="odd"))
  with pytest.raises(ValueError, match="unknown initial_state 'odd'"):
    xla_parity.apply_initial_state(net, "dense")
  assert xla_parity.apply_initial_state(net, "axial_deeplab_s") == 0


def test_eval_parity_of_a_trained_model_names_what_is_missing(tmp_path,
                                                              capsys):
  assert xla_parity.main(["--eval_checkpoint", str(tmp_path)]) == 2
  assert "--gin_file" in capsys.readouterr().err
  with pytest.raises(FileNotFoundError, match="no checkpoint"):
    xla_parity.compare_evaluation(["quickstart/axial_deeplab"], [],
                                  str(tmp_path))
  with pytest.raises(FileNotFoundError, match="no checkpoint"):
    xla_parity.compare_evaluation(["quickstart/axial_deeplab"], [],
                                  str(tmp_path / "ckpt-7"))
