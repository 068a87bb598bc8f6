#!/usr/bin/env bash
# Set everything up (first run only) and run the default (fast) test tier.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
exec .venv/bin/python -m pytest "$@"
