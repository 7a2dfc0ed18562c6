"""The CI runs both test tiers: the README's test command, then the slow one.

`.ci/run` and `scripts/test.sh` run in a copy of the checkout whose
`.venv/bin/python` records its arguments instead of running them, so the
test sees the exact pip and pytest commands the CI would start.
"""

import json
import os
import re
import shutil
import stat
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMON = ["tests", "-q", "-n", "2", "--dist", "loadgroup", "-rfEs"]

_RECORDER = """#!/bin/sh
exec {python} -c '
import json, os, sys
with open(os.environ["CALLS"], "a") as f:
  f.write(json.dumps(sys.argv[1:]) + "\\n")
if sys.argv[1:3] == ["-m", "pytest"] and os.environ.get("FAIL_PYTEST"):
  sys.exit(int(os.environ["FAIL_PYTEST"]))
if sys.argv[1:2] == ["scripts/check_venv.py"] and os.environ.get("FAIL_CHECK"):
  sys.exit(1)
' "$@"
"""


def _readme_test_command():
  with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
    text = f.read()
  (section,) = re.findall(r"^Tests:\n\n```\n(.*?)```", text,
                          re.MULTILINE | re.DOTALL)
  (command,) = section.strip().splitlines()
  return command


def _checkout(tmp_path):
  for name in (".ci/run", "scripts/test.sh"):
    os.makedirs(tmp_path / os.path.dirname(name), exist_ok=True)
    shutil.copy(os.path.join(REPO, name), tmp_path / name)
  fake = tmp_path / ".venv" / "bin" / "python"
  os.makedirs(fake.parent)
  fake.write_text(_RECORDER.format(python=sys.executable))
  fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
  return tmp_path


def _run(root, command, **env):
  calls = root / "calls.jsonl"
  if calls.exists():
    calls.unlink()
  done = subprocess.run(
      ["bash", "-c", command], cwd=root, capture_output=True, text=True,
      timeout=60, env=dict(os.environ, CALLS=str(calls), **env))
  lines = calls.read_text().splitlines() if calls.exists() else []
  return done.returncode, [json.loads(line) for line in lines]


def _pytest_runs(calls):
  return [c[2:] for c in calls if c[:2] == ["-m", "pytest"]]


def _tier(args):
  """The -m expression of a pytest command line (the last one counts)."""
  marks = [args[i + 1] for i, a in enumerate(args) if a == "-m"]
  assert marks, args
  return marks[-1]


def test_readme_command_runs_the_fast_tier_on_two_workers(tmp_path):
  root = _checkout(tmp_path)
  command = _readme_test_command()
  assert command == "bash scripts/test.sh"
  code, calls = _run(root, command)
  assert code == 0
  (run,) = _pytest_runs(calls)
  assert run[:len(COMMON)] == COMMON, run
  assert _tier(run) == "not slow"
  assert ["-m", "pip", "install", "-q", "-e", ".[test]"] in calls


def test_ci_runs_the_readme_command_then_the_slow_tier(tmp_path):
  root = _checkout(tmp_path)
  _, readme_calls = _run(root, _readme_test_command())
  code, calls = _run(root, "bash .ci/run")
  assert code == 0
  runs = _pytest_runs(calls)
  assert len(runs) == 2, calls
  # The README's command, exactly, then the same command on the slow tier:
  # together every test of the suite.
  assert runs[0] == _pytest_runs(readme_calls)[0]
  assert _tier(runs[0]) == "not slow" and _tier(runs[1]) == "slow"
  assert [a for a in runs[1] if a != "slow"] == [
      a for a in runs[0] if a != "not slow"]


def test_ci_fails_if_either_tier_fails_and_still_runs_both(tmp_path):
  root = _checkout(tmp_path)
  code, calls = _run(root, "bash .ci/run", FAIL_PYTEST="1")
  assert code != 0
  assert [_tier(r) for r in _pytest_runs(calls)] == ["not slow", "slow"]


def test_slow_marker_is_registered_for_both_tiers():
  with open(os.path.join(REPO, "setup.cfg"), encoding="utf-8") as f:
    assert re.search(r"^markers\s*=\s*\n\s+slow:", f.read(), re.MULTILINE)


def test_test_command_checks_the_venv_before_pytest_and_stops_if_broken(
    tmp_path):
  root = _checkout(tmp_path)
  _, calls = _run(root, _readme_test_command())
  check = calls.index(["scripts/check_venv.py"])
  assert calls[check - 1] == ["-m", "pip", "install", "-q", "-e", ".[test]"]
  assert calls[check + 1][:2] == ["-m", "pytest"]
  code, calls = _run(root, _readme_test_command(), FAIL_CHECK="1")
  assert code != 0 and not _pytest_runs(calls)


def test_venv_check_names_a_package_that_does_not_import(tmp_path):
  # What a full disk during the install can leave: pip returned 0, but the
  # tensorflow package lacks its `python` subpackage.
  fake = tmp_path / "site" / "tensorflow"
  fake.mkdir(parents=True)
  (fake / "__init__.py").write_text(
      "from tensorflow.python import pywrap_tensorflow\n")
  done = subprocess.run(
      [sys.executable, os.path.join(REPO, "scripts", "check_venv.py")],
      capture_output=True, text=True, timeout=120,
      env=dict(os.environ, PYTHONPATH=str(tmp_path / "site")))
  assert done.returncode == 1
  assert "importing tensorflow failed" in done.stderr
  assert "No module named 'tensorflow.python'" in done.stderr
  assert "GiB are free" in done.stderr


def test_venv_check_passes_in_this_venv():
  done = subprocess.run(
      [sys.executable, os.path.join(REPO, "scripts", "check_venv.py")],
      capture_output=True, text=True, timeout=300,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
  assert done.returncode == 0, done.stderr
