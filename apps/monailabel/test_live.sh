#!/usr/bin/env bash
# Opt-in live test of the MONAI Label app (`make monailabel-test`; not part of `make test`).
# Builds its own virtualenv (default .venv-monailabel, about 2 GB, reused while requirements.txt and
# pyproject.toml are unchanged), installs the working tree's atria-cascade into it, then runs test_live.py: a real server on 127.0.0.1 with the demo weights and
# phantom studies, checked over HTTP against `cascade predict --demo`. The last line says PASS or FAIL.
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV="${MONAILABEL_VENV:-.venv-monailabel}"
PYTHON="${PYTHON:-python3}"
PY="$VENV/bin/python"
REQUIREMENTS=apps/monailabel/requirements.txt
pip_install() {  # quiet pip; drops the warnings about this machine's local index folders
  "$PY" -m pip install -q "$@" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }
}

if [ ! -f "$VENV/.installed" ] || [ "$REQUIREMENTS" -nt "$VENV/.installed" ] || [ pyproject.toml -nt "$VENV/.installed" ]; then
  echo "[live] building $VENV"
  "$PYTHON" -m venv "$VENV"
  # The CPU build of torch 2.13.0 first (a bare `torch` would pull a CUDA build of several GB).
  pip_install "torch==2.13.0"
  # monailabel's own requirements pull sam2, torchvision and a CUDA torch: install it alone and
  # add what its server imports (requirements.txt).
  pip_install --no-deps "monailabel==0.8.5"
  pip_install -r "$REQUIREMENTS"
  pip_install .  # atria-cascade's dependencies
  touch "$VENV/.installed"
fi
# The working tree's atria-cascade, installed as a user would (bundles as package data), every run.
pip_install --no-deps --force-reinstall .
"$PY" - <<'PY'
import sys, torch
if torch.__version__ != "2.13.0+cpu":
    sys.exit(f"[live] expected torch 2.13.0+cpu in the test environment, found {torch.__version__}")
PY
exec "$PY" apps/monailabel/test_live.py "$@"
