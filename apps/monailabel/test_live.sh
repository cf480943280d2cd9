#!/usr/bin/env bash
# Opt-in live test of the MONAI Label app (`make monailabel-test`; not part of `make test`).
#
# Builds its virtualenv from scratch with the install commands of apps/monailabel/README.md ("Install"),
# read from the README itself, so a pin that no longer resolves or a README command that no longer
# works fails here: by default in a temporary folder (about 2 GB) removed at the end. Then runs
# test_live.py: a real server on 127.0.0.1 with the demo weights and phantom studies, checked over HTTP
# against `cascade predict --demo`. The last line says PASS or FAIL.
#
#   bash apps/monailabel/test_live.sh [--dicomweb] [--keep]
#   MONAILABEL_VENV=DIR bash apps/monailabel/test_live.sh   # build in DIR and keep it; a later run reuses
#       it while the README's commands, requirements.txt and pyproject.toml are unchanged (for iterating
#       on the app; the from-scratch default is what proves the README)
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON="${PYTHON:-python3}"
README=apps/monailabel/README.md

# The README's install block, one command a line (comments dropped), its venv folder replaced by ours.
COMMANDS="$("$PYTHON" - "$README" <<'PY'
import re, sys
section = open(sys.argv[1]).read().split("\n## Install\n", 1)[1]
block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
print("\n".join(line.split(" #", 1)[0].strip() for line in block.splitlines() if line.split(" #", 1)[0].strip()))
PY
)"
STAMP="$( { printf '%s\n' "$COMMANDS"; cat apps/monailabel/requirements.txt pyproject.toml; } | sha256sum | cut -d' ' -f1)"

if [ -n "${MONAILABEL_VENV:-}" ]; then
  VENV="$MONAILABEL_VENV"
else
  VENV="$(mktemp -d "${TMPDIR:-/tmp}/monailabel-venv.XXXXXX")"
  trap 'rm -rf "$VENV"' EXIT
fi
PY="$VENV/bin/python"

if [ "$(cat "$VENV/.installed" 2>/dev/null)" != "$STAMP" ]; then
  echo "[live] building $VENV from scratch with the commands of $README:"
  if [ -e "$VENV" ] && [ ! -f "$VENV/pyvenv.cfg" ] && [ -n "$(ls -A "$VENV")" ]; then
    echo "monailabel live test: FAIL (install: $VENV is neither empty nor a virtualenv; not removing it)"
    exit 1
  fi
  rm -rf "$VENV"
  LOG="$(mktemp)"
  while IFS= read -r command; do
    command="${command//.venv-monailabel/$VENV}"
    echo "[live]   $command"
    # the README's own words; pip's notes about this machine's local index folders go to the log
    if ! eval "$command" >"$LOG" 2>&1; then
      grep -v "is ignored: it is neither a file nor a directory" "$LOG" | tail -20
      echo "monailabel live test: FAIL (install: $command)"
      exit 1
    fi
  done <<<"$COMMANDS"
  rm -f "$LOG"
  echo "$STAMP" >"$VENV/.installed"
else
  echo "[live] reusing $VENV (built by the README's current commands)"
  # The working tree's atria-cascade, installed as a user would (bundles as package data).
  "$PY" -m pip install -q --no-deps --force-reinstall . 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }
fi
"$PY" - <<'PY'
import sys, torch
if torch.__version__.split("+")[0] != "2.13.0":
    sys.exit(f"[live] expected torch 2.13.0 in the test environment, found {torch.__version__}")
print(f"[live] torch {torch.__version__}")
PY
"$PY" apps/monailabel/test_live.py "$@"
