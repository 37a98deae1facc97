#!/usr/bin/env bash
# Set up crystallab in ./.venv: PyTorch first (pinned, so pip keeps it), then the package with
# its dev extras. Safe to rerun. On a CPU-only machine install a CPU build of torch first if
# your index offers one (the pinned wheel here is the CPU build on these machines).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -c "import torch" 2>/dev/null || python -m pip install -q "torch==${CRYSTALLAB_TORCH:-2.13.0}"
python -m pip install -q -e ".[dev]"
# The report's browser test (tests/test_report.py) needs headless Chromium and its driver; in CI
# (as root) install them from Debian when missing. Elsewhere that test skips without them.
if [ "$(id -u)" = 0 ] && [ -n "${CI:-}" ] && ! command -v chromium >/dev/null 2>&1; then
    apt-get -qq update && apt-get -qq install -y --no-install-recommends chromium chromium-driver >/dev/null
fi
python -c "import crystallab, torch, transformers; print(f'crystallab {crystallab.__version__} ready (torch {torch.__version__}, transformers {transformers.__version__})')"
