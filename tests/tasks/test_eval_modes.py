"""train_and_eval then eval on the tiny experiment, through tools/train.py.

Checks that the panoptic evaluation (PQ / AP / mIoU aggregated on the host)
runs once per evaluation point, writes eval_results.json, and that a later
`--mode=eval` of the same checkpoint reproduces the same numbers.
"""

import json
import os
import subprocess

import pytest

from tests.tasks.run_utils import REPO, tool_env, train_command

_KEYS = ("panoptic_quality", "panoptic_quality/sq", "panoptic_quality/rq",
         "panoptic_quality/pq_th", "panoptic_quality/pq_st", "instance_ap",
         "mean_iou", "validation_loss")


def _evaluations(log):
  """Evaluations started (Orbit prints each once, besides its log line)."""
  return sum(1 for line in log.splitlines()
             if line.startswith(" eval | step:") and
             "running complete evaluation" in line)


def _run(command):
  done = subprocess.run(command, stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT, text=True, env=tool_env(),
                        cwd=REPO, timeout=900, check=False)
  assert done.returncode == 0, done.stdout[-3000:]
  return done.stdout


@pytest.mark.slow
def test_train_and_eval_then_eval_give_the_same_metrics(tiny_experiment,
                                                        tmp_path):
  model_dir = str(tmp_path / "model")
  bindings = tiny_experiment.bindings(
      train_steps=3, checkpoint_interval=3,
      extra={"trainer.validation_interval": "3",
             "trainer.validation_steps": "-1"})
  log = _run(train_command(model_dir, bindings, mode="train_and_eval"))
  # One evaluation at step 3, not a second one for the returned logs.
  assert _evaluations(log) == 1, log[-3000:]
  with open(os.path.join(model_dir, "eval_results.json")) as f:
    first = json.load(f)
  for key in _KEYS:
    assert key in first, (key, sorted(first))
    if key != "validation_loss":
      assert 0.0 <= first[key] <= 1.0, (key, first[key])
  os.remove(os.path.join(model_dir, "eval_results.json"))
  log = _run(train_command(model_dir, bindings, mode="eval"))
  assert _evaluations(log) == 1, log[-3000:]
  with open(os.path.join(model_dir, "eval_results.json")) as f:
    second = json.load(f)
  for key in _KEYS:
    assert abs(first[key] - second[key]) <= 1e-6 * max(1.0, abs(first[key])), (
        key, first[key], second[key])
