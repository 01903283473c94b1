#!/usr/bin/env bash
# Creates the dadapy environment for the GRIDE intrinsic dimension (smoltolk_hf.evaluation.representations):
# dadapy pins numpy<2, which the main environment (datasets) cannot use, so it gets a venv of its own.
# `bash scripts/setup_dadapy.sh [VENV_DIR]`; default ${SMOLTOLK_CACHE:-~/.cache/smoltolk_hf}/dadapy-venv, the
# interpreter `intrinsic_dimension` looks for (or point $SMOLTOLK_DADAPY_PYTHON at VENV_DIR/bin/python).
# Fast and silent when it already exists; a fresh install builds dadapy from source (about 4 min on 2 cores).
set -euo pipefail
venv="${1:-${SMOLTOLK_CACHE:-$HOME/.cache/smoltolk_hf}/dadapy-venv}"
if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "import dadapy" >/dev/null 2>&1; then
  exit 0
fi
python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q "numpy<2" "dadapy==0.3.4"
"$venv/bin/python" -c "import dadapy"
echo "$venv/bin/python"
