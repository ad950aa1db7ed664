"""Another checkout of streamlstm (e.g. the v0.1.0 tag in a temporary worktree) imported
beside this one, so that one process times both, interleaved, under the same load.

    git worktree add /tmp/v010 v0.1.0      # or the commit 9e19979
    python bench/bench_core.py --against /tmp/v010
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType


def load_reference(checkout: str | os.PathLike[str], name: str = "streamlstm_ref") -> ModuleType:
    """The ``streamlstm`` package of ``checkout`` as module ``name`` (its relative imports
    resolve inside it; numba caches it apart, by its own file paths)."""
    pkg = Path(checkout).resolve() / "streamlstm"
    spec = importlib.util.spec_from_file_location(name, pkg / "__init__.py", submodule_search_locations=[str(pkg)])
    if spec is None or spec.loader is None:
        raise ImportError(f"no streamlstm package in {checkout}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def describe(checkout: str | os.PathLike[str]) -> str:
    """The checkout's commit (and tag, when it has one)."""
    def git(*a: str) -> str:
        try:
            return subprocess.run(["git", "-C", str(checkout), *a], capture_output=True, text=True,
                                  timeout=20).stdout.strip()
        except Exception:
            return ""
    commit = git("rev-parse", "--short", "HEAD") or "unknown commit"
    tag = git("describe", "--tags", "--exact-match")
    return f"{tag} ({commit})" if tag else commit
