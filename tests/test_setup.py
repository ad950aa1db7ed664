"""Set-up: numba's cache stays out of the installed package (issue 11, point 1).

A cache written into ``site-packages/streamlstm/__pycache__`` survives ``pip uninstall``
and turns into a namespace package that hides a later editable install. These tests run
fresh interpreters with a clean environment and look where numba would put (and where
the kernels do put) their cache files. No kernel is compiled: the cache locations
are fixed when the functions are decorated. `.ci/run` runs the README's two commands in
one venv, the end-to-end check of the same thing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import streamlstm

PACKAGE = Path(streamlstm.__file__).resolve().parent

PROBE = """
import json, os, sys
{before}
import importlib, pkgutil
import streamlstm._kernels as KP
from numba.core import config
from streamlstm._numba_config import module_cache_dir
mods = [importlib.import_module("streamlstm._kernels." + m.name) for m in pkgutil.iter_modules(KP.__path__)]
paths = [d._cache._cache_path for M in mods for d in vars(M).values()
         if hasattr(d, "_cache") and hasattr(d._cache, "_cache_path")]
stamp = os.path.join(module_cache_dir(os.path.join(KP.__path__[0], "_jit.py")), "streamlstm-kernels.stamp")
print(json.dumps({{"env": os.environ.get("NUMBA_CACHE_DIR"), "config": config.CACHE_DIR, "paths": paths,
                  "stamp": stamp, "stamp_exists": os.path.exists(stamp)}}))
"""


def _probe(tmp_path: Path, before: str = "", **env: str) -> dict:
    clean = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    clean.update({"HOME": str(tmp_path / "home"), "XDG_CACHE_HOME": str(tmp_path / "xdg"), **env})
    out = subprocess.run([sys.executable, "-c", PROBE.format(before=before)], capture_output=True, text=True,
                         env=clean, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def _inside(path: str, folder: Path) -> bool:
    return Path(path).resolve().is_relative_to(folder)


def test_numba_cache_defaults_to_the_per_user_directory(tmp_path):
    got = _probe(tmp_path)
    user = tmp_path / "xdg" / "streamlstm" / "numba"
    assert got["env"] == got["config"] == str(user)
    assert got["paths"], "no cached kernel found to check"
    assert all(_inside(p, user) for p in got["paths"]), got["paths"]
    assert not any(_inside(p, PACKAGE) for p in got["paths"])
    assert got["stamp_exists"] and _inside(got["stamp"], user)  # the kernels' stale-cache stamp goes there too


def test_numba_cache_dir_set_by_the_user_wins(tmp_path):
    mine = tmp_path / "mine"
    got = _probe(tmp_path, NUMBA_CACHE_DIR=str(mine))
    assert got["config"] == str(mine)
    assert all(_inside(p, mine) for p in got["paths"])
    assert not (tmp_path / "xdg" / "streamlstm").exists()


def test_numba_imported_first_still_caches_in_the_user_directory(tmp_path):
    got = _probe(tmp_path, before="import numba")
    user = tmp_path / "xdg" / "streamlstm" / "numba"
    assert got["config"] == str(user)
    assert all(_inside(p, user) for p in got["paths"]), got["paths"]


def test_an_unwritable_cache_home_falls_back_to_numba(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    got = _probe(tmp_path, XDG_CACHE_HOME=str(blocker))
    assert got["env"] is None  # left to numba's own choice, no crash on import
