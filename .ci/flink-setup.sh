#!/usr/bin/env bash
# Create (or refresh) the separate venv used by the Flink adapter tests and benchmark.
#
#   bash .ci/flink-setup.sh [VENV_PATH]      # default: <repo>/.venv-flink
#
# Why a separate venv: apache-flink 2.3.0 pins numpy<2.2 (and an old apache-beam,
# protobuf, cloudpickle), so it cannot share the dev venv. Wheels exist up to Python 3.12.
# Idempotent: Java is installed only when missing, the venv is reused, pip only
# installs what is missing. Prints the versions it ended up with.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${1:-$REPO/.venv-flink}"
FLINK_VERSION="${FLINK_VERSION:-2.3.0}"

# --- Java 17 (PyFlink starts a JVM through py4j) -----------------------------------
if ! java -version 2>&1 | grep -q 'version "17'; then
    if [ "$(id -u)" != 0 ]; then
        echo "flink-setup: Java 17 missing and not root: install openjdk-17-jre-headless" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq openjdk-17-jre-headless >/dev/null
fi
java -version 2>&1 | head -1

# --- Python (apache-flink ships wheels for 3.9 .. 3.12) ----------------------------
PY=""
for cand in python3.11 python3.12 python3.10 python3; do
    if command -v "$cand" >/dev/null 2>&1 &&
        "$cand" -c 'import sys; sys.exit(not ((3, 9) <= sys.version_info[:2] <= (3, 12)))'; then
        PY="$cand"
        break
    fi
done
if [ -z "$PY" ]; then
    echo "flink-setup: need Python 3.9-3.12 for apache-flink $FLINK_VERSION" >&2
    exit 1
fi

if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)

# --- Flink + test deps. numba is resolved together with flink's numpy<2.2 pin --------
# (on this machine: numpy 2.1.3, numba 0.68.1, llvmlite 0.50.0)
if ! "$VENV/bin/python" -c "import pyflink.version as v, sys; sys.exit(v.__version__ != '$FLINK_VERSION')" 2>/dev/null; then
    "${PIP[@]}" install -q "apache-flink==$FLINK_VERSION" numba pytest
else
    "${PIP[@]}" install -q numba pytest
fi

# --- the repo itself, editable, without letting it move flink's pins ----------------
# Everything already installed is frozen as a constraint, so a dependency of the repo
# that would need e.g. numpy>=2.2 fails loudly here instead of breaking pyflink.
if [ -f "$REPO/pyproject.toml" ] || [ -f "$REPO/setup.py" ]; then
    CONSTRAINTS="$(mktemp)"
    trap 'rm -f "$CONSTRAINTS"' EXIT
    "${PIP[@]}" freeze --exclude-editable | grep -v '^-e ' | grep -vi '^streamlstm' >"$CONSTRAINTS" || true
    "${PIP[@]}" install -q -c "$CONSTRAINTS" -e "$REPO"
else
    echo "flink-setup: no pyproject.toml in $REPO yet, skipping 'pip install -e'" >&2
fi

(cd / && "$VENV/bin/python" -) <<'EOF'
import numpy, numba, pyflink.version
print(f"flink-setup: {__import__('sys').executable}: apache-flink {pyflink.version.__version__}, "
      f"numpy {numpy.__version__}, numba {numba.__version__}")
try:
    import streamlstm
    assert streamlstm.__file__, "namespace package only"
    print("flink-setup: streamlstm importable from", streamlstm.__file__)
except (ImportError, AssertionError) as e:
    print("flink-setup: streamlstm not importable yet:", e)
EOF
