#!/bin/sh
# Lint, type-check and test the Python SDK. Creates .venv (dev tools only;
# the package itself has no dependencies) when it is missing.
# The daemon binary: TELEMETRYD_BIN, else <repo>/target/debug/telemetryd.
set -eu
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
    .venv/bin/python -m pip install --quiet --disable-pip-version-check \
        pytest==8.3.4 ruff==0.8.4 mypy==1.13.0
fi
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy --strict src
.venv/bin/python -m pytest "$@"
