#!/usr/bin/env bash
# Creates .venv (if needed), installs the package with its test extras and
# runs the test suite on two processes.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[test]"
export TF_CPP_MIN_LOG_LEVEL=2
exec .venv/bin/python -m pytest tests -q -n 2 --dist loadgroup -rfEs -p no:cacheprovider "$@"
