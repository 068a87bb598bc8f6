#!/usr/bin/env bash
# Create .venv (when missing) and install mobiledepth with the proven dependency set.
# torch goes in first and alone: with torch 2.13.0 already present, nothing later pulls a
# CUDA build. Re-running is cheap: a stamp records what the venv was built from.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}

stamp="$VENV/.mobiledepth-stamp"
want=$(cat requirements/lock.txt pyproject.toml | sha256sum | cut -d' ' -f1)-torch$TORCH_VERSION
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
    echo "bootstrap: creating $VENV"
    "$PYTHON" -m venv "$VENV"
fi
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@" 2> >(grep -v 'is ignored: it is neither' >&2); }
echo "bootstrap: installing torch==$TORCH_VERSION (CPU)"
pip install "torch==$TORCH_VERSION"
echo "bootstrap: installing pinned dependencies (requirements/lock.txt)"
pip install -r requirements/lock.txt
echo "bootstrap: installing mobiledepth (editable)"
pip install --no-deps --no-build-isolation -e .
"$VENV/bin/python" -m pip check
echo "$want" > "$stamp"
