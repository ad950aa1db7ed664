#!/usr/bin/env bash
# Recreate the separate benchmark venv holding deep-river (a peer for bench/bench_river.py).
# deep-river 0.3.4 needs river<0.26 and an older torch, so it cannot share the dev venv.
# The registry serves only a CUDA build of torch 2.5.x (several GB); it runs fine on CPU.
# Resolved on 2026-11-26: torch 2.5.1+cu124 (+ nvidia-* wheels), river 0.25.0, deep-river 0.3.4.
# Used by: DEEPRIVER_PYTHON=$VENV/bin/python python bench/bench_river.py  (default path below).
set -euo pipefail
VENV="${DEEPRIVER_VENV:-/work/venv-deepriver}"
python3.11 -m venv "$VENV" 2>/dev/null || python3 -m venv "$VENV"
"$VENV/bin/pip" install --upgrade pip
"$VENV/bin/pip" install 'torch==2.5.*' deep-river==0.3.4 'river<0.26'
# deep_river/utils/__init__.py imports its estimator checks, which import pytest at import time:
# without pytest, `import deep_river` fails (missing from deep-river's declared dependencies).
"$VENV/bin/pip" install pytest
"$VENV/bin/python" -c "import deep_river, river, torch; print('deep-river', deep_river.__version__, 'river', river.__version__, 'torch', torch.__version__)"
