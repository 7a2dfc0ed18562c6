"""Rebuilds the official state dicts of tests/fixtures/segnext_isanet.

The fixtures store tensor names/shapes, a seed and the official models'
logits; the values come from the fixture script's `fill_state_dict`, so the
state dicts written here are the ones the official code ran.
"""

import importlib.util
import json
import os

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "segnext_isanet")
_SCRIPT = os.path.join(ROOT, "scripts", "fixtures",
                       "make_segnext_isanet_fixtures.py")


def _script():
  spec = importlib.util.spec_from_file_location("_segnext_isanet_fixtures",
                                                _SCRIPT)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def load(name):
  """(config dict, arrays dict) of fixture `name`."""
  with open(os.path.join(FIXTURES, name + ".json")) as f:
    config = json.load(f)
  with np.load(os.path.join(FIXTURES, name + ".npz")) as data:
    arrays = {k: data[k] for k in data.files}
  return config, arrays


def state_dict(config):
  """{name: numpy array} of the official model the fixture was made with."""
  return _script().fill_state_dict(config["entries"], config["seed"],
                                   config["signed_norm_weights"])


def save_published(config, path, state=None, container="state_dict"):
  """torch.save()s the state dict laid out as the published files are."""
  import torch  # pylint: disable=g-import-not-at-top
  state = state_dict(config) if state is None else state
  tensors = {k: torch.from_numpy(np.array(v)) for k, v in state.items()}
  if config["kind"] == "segnext":
    payload = {"state_dict": tensors, "meta": {"iter": 160000}}
  else:  # openseg: {"config_dict": ..., "state_dict": {"module.…"}}
    payload = {"config_dict": {"network": {"model_name": "isanet",
                                           "bn_type": "inplace_abn"}},
               "state_dict": {"module." + k: v for k, v in tensors.items()}}
  if container is None:
    payload = tensors
  torch.save(payload, path)
  return path


def relative_error(ours, reference):
  return float(np.max(np.abs(ours - reference)) / np.max(np.abs(reference)))
