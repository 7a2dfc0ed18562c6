"""Test configuration: make the checkout importable and keep TF quiet."""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
# Peak-memory measurements (benchmarks/benchmark._peak_bytes) read TensorFlow's
# CPU allocator statistics, which only the BFC allocator keeps.
os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def pytest_configure(config):
  config.addinivalue_line(
      "markers", "slow: tens of seconds (CI still runs it)")
