"""Registers the `slow` marker used by the importer tests (tens of seconds)."""


def pytest_configure(config):
  config.addinivalue_line("markers",
                          "slow: takes tens of seconds (large models)")
