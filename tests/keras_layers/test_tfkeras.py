"""The Keras 3 layers in tf.keras under TensorFlow 2.20 defaults.

Three clean processes (TF_USE_LEGACY_KERAS unset): one builds Functional,
Sequential and subclassed models around every layer, trains them with fit,
saves them to .keras and exports the Functional ones; a fresh one reloads
every .keras file and must reproduce the outputs exactly; a third runs the
exported SavedModels with the package unimportable.
"""

import os

import pytest

from tests.keras_layers.conftest import run_clean

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "tfkeras_checks.py")


@pytest.mark.slow
def test_fit_save_reload_and_export(tmp_path):
  out_dir = str(tmp_path)
  trained = run_clean([SCRIPT, "train", out_dir])
  layers = {key.split("/")[0] for key in trained}
  assert len(layers) == 10, sorted(layers)
  for key, r in trained.items():
    assert r["trainable"] > 0, key
    assert r["loss_last"] < r["loss_first"], (key, r)
    assert not r["unchanged"], (key, r["unchanged"])
  reloaded = run_clean([SCRIPT, "load", out_dir])
  assert set(reloaded) == {k.replace("/", "_") for k in trained}
  for key, diff in reloaded.items():
    assert diff == 0.0, (key, diff)
  served = run_clean([SCRIPT, "serve", out_dir], pythonpath=False)
  assert set(served) == layers
  for name, diff in served.items():
    assert diff <= 1e-5, (name, diff)
