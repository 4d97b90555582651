#!/usr/bin/env bash
# The test command: sets up .venv if needed, then runs the whole suite (unit, service, Ray).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
