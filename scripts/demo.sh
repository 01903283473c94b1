#!/usr/bin/env bash
# The main job on the embedded default backbone (no downloads): `bash scripts/demo.sh [smoltolk demo options]`.
set -euo pipefail
bash "$(dirname "$0")/setup.sh"
exec smoltolk demo "$@"
