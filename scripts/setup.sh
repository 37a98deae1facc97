#!/usr/bin/env bash
# Set up crystallab in ./.venv: PyTorch first (pinned, so pip keeps it), then the package with
# every extra but vllm (`all`: hf, lab, ray) and the dev tools. Safe to rerun. On a CPU-only
# machine install a CPU build of torch first if your index offers one (the pinned wheel here is
# the CPU build on these machines). `pip install crystallab` alone is the torch-free core.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -c "import torch" 2>/dev/null || python -m pip install -q "torch==${CRYSTALLAB_TORCH:-2.13.0}"
python -m pip install -q -e ".[all,dev]"
# The api tests' top-logprobs server (tests/models/test_api.py): llama-cpp-python, compiled from
# source (PyPI has no Linux wheel). GGML_NATIVE=OFF because a -march=native build crashed with a
# general protection fault in libggml-cpu at the first completion on these machines; the
# multimodal library and llama.cpp's tools are not needed. Always in CI (a few minutes, once per
# machine: pip caches the wheel); elsewhere with CRYSTALLAB_LLAMA_CPP=1 (that test skips without it).
if [ -n "${CI:-}" ] || [ "${CRYSTALLAB_LLAMA_CPP:-0}" = 1 ]; then
    python -c "import llama_cpp.server" 2>/dev/null || \
        CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF" \
        CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" python -m pip install -q "llama-cpp-python[server]==0.3.36" || \
        echo "crystallab: llama-cpp-python did not build; the llama.cpp api test will skip" >&2
fi
# The report's browser test (tests/reporting/test_report.py) needs headless Chromium and its driver; in CI
# (as root) install them from Debian when missing. Elsewhere that test skips without them.
if [ "$(id -u)" = 0 ] && [ -n "${CI:-}" ] && ! command -v chromium >/dev/null 2>&1; then
    apt-get -qq update && apt-get -qq install -y --no-install-recommends chromium chromium-driver >/dev/null
fi
python -c "import crystallab, torch, transformers; print(f'crystallab {crystallab.__version__} ready (torch {torch.__version__}, transformers {transformers.__version__})')"
