"""Helpers of the Keras 3 layer tests: a slow marker and clean subprocesses."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def pytest_configure(config):
  config.addinivalue_line(
      "markers", "slow: takes tens of seconds (still run by the CI)")


def run_clean(args, backend="tensorflow", timeout=1800, pythonpath=True):
  """Runs `python args...` with TF 2.20 defaults; returns its RESULT json.

  TF_USE_LEGACY_KERAS is removed (tf.keras is Keras 3) and KERAS_BACKEND is
  set to `backend`.
  """
  env = {k: v for k, v in os.environ.items()
         if k not in ("TF_USE_LEGACY_KERAS", "KERAS_BACKEND", "PYTHONPATH")}
  env["KERAS_BACKEND"] = backend
  env["TF_CPP_MIN_LOG_LEVEL"] = "3"
  if pythonpath:
    env["PYTHONPATH"] = ROOT
  proc = subprocess.run([sys.executable] + list(args), env=env, cwd=ROOT,
                        capture_output=True, text=True, timeout=timeout,
                        check=False)
  lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
  assert proc.returncode == 0 and lines, (
      f"{args} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
      f"{proc.stderr[-5000:]}")
  return json.loads(lines[-1][len("RESULT "):])
