"""train_lib.ProgressLogger: the first loop's trace time, rate and ETA."""

import tensorflow as tf

from axial_deeplab_tf.tasks import train_lib


class _Clock:

  def __init__(self):
    self.now = 100.0

  def __call__(self):
    return self.now


def _run(start_step, loops, total):
  """Runs the logger over (seconds, steps) loops; returns its lines."""
  step = tf.Variable(start_step, dtype=tf.int64)
  clock = _Clock()
  lines = []
  logger = train_lib.ProgressLogger(step, total, clock=clock,
                                    write=lines.append)
  clock.now += 7.0  # Between building and starting: not counted.
  logger.start()
  for seconds, steps in loops:
    clock.now += seconds
    step.assign_add(steps)
    logger({"loss": tf.constant(0.5)})
  return lines


def test_first_loop_reports_its_time_and_no_rate():
  lines = _run(0, [(95.0, 10)], total=100)
  assert lines[0].startswith("step 0/100 | tracing and compiling")
  assert lines[1] == ("step 10/100 | loss=0.5 | first 10 step(s) incl. "
                      "tracing and compiling took 95.0 s")
  assert "ETA" not in lines[0] + lines[1]


def test_rate_and_eta_come_from_the_steps_after_the_first_loop():
  # First loop: 10 steps in 95 s (trace). Then 10 steps in 5 s: 2 steps/s,
  # 80 steps left -> 40 s; then 10 more in 15 s: 20 steps in 20 s -> 1
  # step/s, 70 left -> 70 s.
  lines = _run(0, [(95.0, 10), (5.0, 10), (15.0, 10)], total=100)
  assert lines[2] == "step 20/100 | loss=0.5 | 2.00 steps/s | ETA 40s"
  assert lines[3] == "step 30/100 | loss=0.5 | 1.00 steps/s | ETA 1m10s"


def test_resumed_run_counts_from_its_start_step():
  lines = _run(500, [(30.0, 50), (100.0, 50)], total=4100)
  assert lines[0].startswith("step 500/4100 | tracing")
  assert "first 50 step(s)" in lines[1]
  # 50 steps in 100 s -> 0.5 steps/s; 3500 left -> 7000 s = 1h56m40s.
  assert lines[2] == "step 600/4100 | loss=0.5 | 0.50 steps/s | ETA 1h56m40s"
