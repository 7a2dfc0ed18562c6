"""The README's Keras 3 snippet runs under TensorFlow 2.20 defaults."""

import os
import re
import subprocess
import sys

import pytest

from tests.keras_layers.conftest import ROOT

SECTION = "## Use the layers in tf.keras / Keras 3"


def _snippet():
  with open(os.path.join(ROOT, "README.md")) as f:
    text = f.read()
  assert SECTION in text
  section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
  blocks = re.findall(r"```python\n(.*?)```", section, re.S)
  assert len(blocks) == 1
  return blocks[0]


@pytest.mark.slow
def test_readme_keras3_snippet_runs():
  env = {k: v for k, v in os.environ.items()
         if k not in ("TF_USE_LEGACY_KERAS", "KERAS_BACKEND")}
  env["PYTHONPATH"] = ROOT
  env["TF_CPP_MIN_LOG_LEVEL"] = "3"
  code = ("import tensorflow as tf, keras\n"
          "assert tf.keras.Model is keras.Model, 'tf.keras is not Keras 3'\n"
          + _snippet() + "\nprint('SNIPPET OK')\n")
  proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT,
                        capture_output=True, text=True, timeout=900,
                        check=False)
  assert proc.returncode == 0 and "SNIPPET OK" in proc.stdout, (
      proc.stderr[-4000:])
