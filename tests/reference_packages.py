"""Reference packages the tests compare against: missing one is a failure.

The agreement tests (the Cityscapes panoptic evaluator, other Keras
backends) are the evidence for claims the README makes; skipping them when
their reference is not installed would let a CI run pass without that
evidence. `pip install -e '.[test]'` installs every one of them.
"""

import importlib

import pytest


def require(module: str, extra: str = "test"):
  """Imports `module`, or fails the test naming the extra that installs it."""
  try:
    return importlib.import_module(module)
  except ImportError as e:
    pytest.fail(
        f"reference package for this test is missing: {module} ({e}); "
        f"install the '{extra}' extra: pip install -e '.[{extra}]'",
        pytrace=False)
