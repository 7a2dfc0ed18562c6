"""Each Keras 3 layer equals its tf_keras twin (copied weights), per backend.

The tf_keras layers are checked against independent numpy references in
tests/layers; here every Keras 3 layer must reproduce its twin to 1e-5
(relative to the output's scale) in inference and training mode, with
global and local spans, and leave the same moving statistics. TensorFlow
runs in this process (`import keras` is Keras 3 whatever
TF_USE_LEGACY_KERAS says); JAX and PyTorch each run all cases in one
subprocess with KERAS_BACKEND set.
"""

import os

import pytest

from tests import reference_packages
from tests.keras_layers import twin_checks
from tests.keras_layers.conftest import run_clean

HERE = os.path.dirname(os.path.abspath(__file__))
TOL = 1e-5
CASE_NAMES = [name for name, _, _, _ in twin_checks.cases()]


def _check(name, result):
  scale = max(1.0, result.get("scale", 1.0))
  assert result["inference"] <= TOL * scale, (name, result)
  if "training" in result:
    assert result["training"] <= TOL * max(1.0, result["training_scale"]), (
        name, result)
    assert result["moving"] <= TOL * 10, (name, result)


# A few seconds each; the rest are marked slow (the machine is shared).
FAST = ("axial_attention_global", "axial_attention_local",
        "axial_attention_2d_local", "local_attention_ps", "msca")


@pytest.mark.parametrize("name", [
    n if n in FAST else pytest.param(n, marks=pytest.mark.slow)
    for n in CASE_NAMES])
def test_twin_on_tensorflow(name):
  import keras  # pylint: disable=g-import-not-at-top
  assert keras.backend.backend() == "tensorflow"
  results = twin_checks.run_cases(only=[name])
  _check(name, results[name])
  _check("copy_back", results["copy_back"])


def test_every_public_layer_has_a_case():
  covered = {"AxialAttention", "AxialAttention2D", "AxialBlock",
             "LocalSelfAttention2D", "GlobalSelfAttention2D",
             "InterlacedSparseSelfAttention", "MultiScaleConvAttention",
             "MSCANBlock", "Hamburger", "LightHamHead"}
  for name in covered:
    assert hasattr(twin_checks._TfkModules, name)  # pylint: disable=protected-access


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_twins_on_other_backends(backend):
  reference_packages.require(backend)
  out = run_clean([os.path.join(HERE, "twin_checks.py")], backend=backend)
  assert out["backend"] == backend
  assert set(out["cases"]) == set(CASE_NAMES + ["copy_back"])
  for name, result in out["cases"].items():
    _check(name, result)
