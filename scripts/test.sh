#!/usr/bin/env bash
# The test suite (tiny models, CPU): `bash scripts/test.sh [pytest options]`.
set -euo pipefail
bash "$(dirname "$0")/setup.sh"
cd "$(dirname "$0")/.."
exec python -m pytest -q "$@"
