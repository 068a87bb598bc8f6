#!/usr/bin/env bash
# Create the two environments (when missing or stale) from the proven dependency sets:
#   $VENV           (.venv)          main: torch, numpy 2, ai-edge-litert 2.3, litert-torch, onnxruntime
#                                    (requirements/lock.txt) and mobiledepth itself, editable;
#   $CONVERTER_VENV (.venv-convert)  onnx2tf 1.29.24 + TensorFlow 2.19, numpy 1.26
#                                    (requirements/converter-lock.txt), run only as a child process.
# The main environment records the converter's python in $VENV/mobiledepth-converter-python
# (mobiledepth/converter_env.py reads it). CONVERTER_VENV=none skips the converter environment.
# torch goes in first and alone: with torch 2.13.0 already present, nothing later pulls a
# CUDA build. Re-running is cheap: a stamp in each environment records what it was built from.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
CONVERTER_VENV=${CONVERTER_VENV:-.venv-convert}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}

pip_in() {  # pip_in VENV ARGS...: quiet pip of that environment
    local venv=$1; shift
    "$venv/bin/python" -m pip --disable-pip-version-check -q "$@" 2> >(grep -v 'is ignored: it is neither' >&2)
}

fresh() {  # fresh VENV WANT: true when the environment's stamp says WANT
    [ -f "$1/.mobiledepth-stamp" ] && [ "$(cat "$1/.mobiledepth-stamp")" = "$2" ]
}

make_venv() {  # an environment this script built from other pins is made anew: no stale packages stay behind
    if [ -f "$1/.mobiledepth-stamp" ]; then
        echo "bootstrap: $1 was built from other pins; recreating it"
        rm -rf "$1"
    fi
    if [ ! -x "$1/bin/python" ]; then
        echo "bootstrap: creating $1"
        "$PYTHON" -m venv "$1"
    fi
}

main_env() {
    local want
    want=$(cat requirements/lock.txt pyproject.toml | sha256sum | cut -d' ' -f1)-torch$TORCH_VERSION
    fresh "$VENV" "$want" && return 0
    make_venv "$VENV"
    echo "bootstrap: installing torch==$TORCH_VERSION (CPU) into $VENV"
    pip_in "$VENV" install "torch==$TORCH_VERSION"
    echo "bootstrap: installing pinned dependencies (requirements/lock.txt)"
    pip_in "$VENV" install -r requirements/lock.txt
    echo "bootstrap: installing mobiledepth (editable)"
    pip_in "$VENV" install --no-deps --no-build-isolation -e .
    "$VENV/bin/python" -m pip check
    echo "$want" > "$VENV/.mobiledepth-stamp"
}

converter_env() {
    local want
    want=$(sha256sum requirements/converter-lock.txt | cut -d' ' -f1)
    fresh "$CONVERTER_VENV" "$want" && return 0
    make_venv "$CONVERTER_VENV"
    echo "bootstrap: installing onnx2tf + tensorflow into $CONVERTER_VENV (requirements/converter-lock.txt)"
    pip_in "$CONVERTER_VENV" install -r requirements/converter-lock.txt
    "$CONVERTER_VENV/bin/python" -m pip check
    echo "$want" > "$CONVERTER_VENV/.mobiledepth-stamp"
}

main_env
record="$VENV/mobiledepth-converter-python"
if [ "$CONVERTER_VENV" = "none" ]; then
    rm -f "$record"
else
    converter_env
    python_path="$(cd "$CONVERTER_VENV" && pwd)/bin/python"
    [ "$(cat "$record" 2>/dev/null)" = "$python_path" ] || echo "$python_path" > "$record"
fi
