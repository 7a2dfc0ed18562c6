"""tools/benchmark_keras3.py: user errors end with one 'error:' line, exit 2."""

import os
import subprocess
import sys

from tests.keras_layers.conftest import ROOT


def test_bad_sizes_exit_2():
  proc = subprocess.run(
      [sys.executable, os.path.join(ROOT, "tools", "benchmark_keras3.py"),
       "--sizes=0,x"], capture_output=True, text=True, timeout=120,
      check=False)
  assert proc.returncode == 2
  lines = proc.stderr.strip().splitlines()
  assert lines[-1].startswith("error: --sizes"), proc.stderr
