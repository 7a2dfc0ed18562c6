"""Runs Lookahead(RectifiedAdam) under a 2-replica MirroredStrategy on CPU.

Executed in a subprocess by test_optimizers_distributed.py, because the two
logical CPU devices must be configured before TensorFlow initialises its
devices. Takes the problem as a JSON argument:
  {"initial": [[...]], "learning_rate": float, "sync_period": int,
   "slow_step_size": float, "offsets": [c_1, ..., c_T]}
and prints one JSON object: for the plain optimizer and for the same
optimizer inside a LossScaleOptimizer, each replica's copy of the variable
after every step, the final `iterations` and the replicas' devices.

Replica r (0 or 1) computes the loss (r + 1) * sum(sin(w) + c_t * w), so the
summed gradient Keras applies is 3 * (cos(w) + c_t).
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))

import numpy as np  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top

tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0],
    [tf.config.LogicalDeviceConfiguration()] * 2)

import tf_keras  # pylint: disable=g-import-not-at-top,g-bad-import-order

# pylint: disable=g-import-not-at-top
from axial_deeplab_tf.optimizers import Lookahead
from axial_deeplab_tf.optimizers import RectifiedAdam


def run(problem, loss_scale: bool):
  strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
  with strategy.scope():
    var = tf.Variable(np.array(problem["initial"]), dtype=tf.float64)
    opt = Lookahead(RectifiedAdam(problem["learning_rate"], epsilon=1e-8),
                    sync_period=problem["sync_period"],
                    slow_step_size=problem["slow_step_size"])
    if loss_scale:
      opt = tf_keras.mixed_precision.LossScaleOptimizer(
          opt, dynamic=True, initial_scale=64.0)

  def replica_step(c):
    replica = tf.distribute.get_replica_context().replica_id_in_sync_group
    weight = tf.cast(replica, tf.float64) + 1.0
    with tf.GradientTape() as tape:
      loss = weight * tf.reduce_sum(tf.sin(var) + c * var)
      if loss_scale:
        loss = opt.get_scaled_loss(loss)
    grads = tape.gradient(loss, [var])
    if loss_scale:
      grads = opt.get_unscaled_gradients(grads)
    opt.apply_gradients(zip(grads, [var]))

  @tf.function
  def train_step(c):
    strategy.run(replica_step, args=(c,))

  trajectory = []
  for c in problem["offsets"]:
    train_step(tf.constant(c, tf.float64))
    trajectory.append([v.numpy().tolist()
                       for v in strategy.experimental_local_results(var)])
  return {"trajectory": trajectory,
          "iterations": int(opt.iterations.numpy()),
          "devices": [v.device for v in
                      strategy.experimental_local_results(var)]}


if __name__ == "__main__":
  problem_ = json.loads(sys.argv[1])
  print(json.dumps({"plain": run(problem_, False),
                    "loss_scale": run(problem_, True)}))
