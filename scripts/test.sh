#!/usr/bin/env bash
# Creates .venv (if needed), installs the package with its test extras and
# runs one tier of the test suite on two processes:
#   bash scripts/test.sh          the fast tier: every test not marked slow
#   bash scripts/test.sh --slow   the slow tier: the tests marked slow
# (.ci/run runs both.) Further arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
TIER=(-m "not slow")
if [ "${1:-}" = "--slow" ]; then
  TIER=(-m slow)
  shift
fi
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[test]"
export TF_CPP_MIN_LOG_LEVEL=2
.venv/bin/python scripts/check_venv.py
exec .venv/bin/python -m pytest tests -q -n 2 --dist loadgroup -rfEs \
  -p no:cacheprovider "${TIER[@]}" "$@"
