#!/usr/bin/env bash
# The full test suite: setup, lint, types, unit tests, then end-to-end tests that boot
# real x86_64, arm64 and riscv64 guests. Extra arguments go to pytest (e.g. -m "not e2e").
set -euo pipefail
cd "$(dirname "$0")"
./setup.sh --tests
.venv/bin/ruff check lab tests bench
.venv/bin/ruff format --check lab tests bench
.venv/bin/mypy
(cd ansible && PATH="$PWD/../.venv/bin:$PATH" ../.venv/bin/ansible-lint -q)
exec .venv/bin/python -m pytest "$@"
