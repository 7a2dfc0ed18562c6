"""Registers the `slow` marker (tests of tens of seconds; CI runs them)."""


def pytest_configure(config):
  config.addinivalue_line(
      "markers", "slow: takes tens of seconds (a tool run end to end)")
