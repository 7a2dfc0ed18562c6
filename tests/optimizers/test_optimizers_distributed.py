"""Lookahead(RectifiedAdam) under a 2-replica MirroredStrategy, with and
without a LossScaleOptimizer, against torch RAdam + numpy Lookahead.

The strategy needs two logical CPU devices, which must be configured before
TensorFlow initialises its devices, so the run happens in a subprocess
(mirrored_worker.py) and this test checks what it prints.
"""

import json
import math
import os
import subprocess
import sys

import numpy as np

from tests.optimizers import optimizer_references as refs

_WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                       "mirrored_worker.py")


def test_mirrored_strategy_and_loss_scale_match_reference():
  num_steps = 12
  problem = {
      "initial": [[0.3, -0.2], [0.5, 1.0], [-0.7, 0.1]],
      "learning_rate": 0.0625,  # Exact in float32, the hyper's dtype.
      "sync_period": 3,
      "slow_step_size": 0.5,
      "offsets": [0.1 * math.cos(0.7 * t) for t in range(1, num_steps + 1)],
  }
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TF_USE_LEGACY_KERAS="1",
             CUDA_VISIBLE_DEVICES="")
  proc = subprocess.run([sys.executable, _WORKER, json.dumps(problem)],
                        capture_output=True, text=True, timeout=300, env=env,
                        check=False)
  assert proc.returncode == 0, proc.stderr[-4000:]
  result = json.loads(proc.stdout.strip().splitlines()[-1])

  # Reference: the sum of both replicas' gradients, 3 * (cos(w) + c_t).
  reference = refs.NumpyLookahead(
      refs.TorchRAdam([np.array(problem["initial"])],
                      lr=problem["learning_rate"], eps=1e-8),
      sync_period=problem["sync_period"],
      slow_step_size=problem["slow_step_size"])
  want = []
  for c in problem["offsets"]:
    w = reference.get()[0]
    reference.step([3.0 * (np.cos(w) + c)])
    want.append(reference.get()[0])

  for mode in ("plain", "loss_scale"):
    run = result[mode]
    assert run["iterations"] == num_steps
    assert len(set(run["devices"])) == 2, run["devices"]
    for step, replicas in enumerate(run["trajectory"], start=1):
      assert len(replicas) == 2
      for replica_value in replicas:
        np.testing.assert_allclose(
            np.array(replica_value), want[step - 1], rtol=1e-6, atol=1e-12,
            err_msg=f"{mode}, step {step}")
