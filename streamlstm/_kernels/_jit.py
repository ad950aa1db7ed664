"""The kernels' one numba decorator, and the purge of their stale on-disk cache.

``error_model="numpy"``: a division by zero gives inf/NaN (checked where it matters)
instead of raising, which would need a branch per division. No ``fastmath``: LLVM keeps
every sum in the written order, so all paths through the kernels round alike.
"""

from __future__ import annotations

import hashlib
import os
import types
from pathlib import Path

from numba import njit
from numba.core.dispatcher import Dispatcher

from .._numba_config import module_cache_dir

jit = njit(cache=True, error_model="numpy", nogil=True)
jit_inline = njit(cache=True, error_model="numpy", nogil=True, inline="always")
# Only the loops that spread independent tiles over threads (``prange``): numba's parallel
# pass also rewrites array expressions and allocations, which the serial kernels keep as
# written.
jit_parallel = njit(cache=True, error_model="numpy", nogil=True, parallel=True)


def inline_twins(module: types.ModuleType, keep: tuple[str, ...] = ()) -> types.SimpleNamespace:
    """Twins of the compiled functions of ``module`` (same code, same numba options),
    inlined into their callers in numba's IR and calling one another; the functions named
    in ``keep`` stay the ordinary compiled ones.

    A compiled function that hands array views to other compiled functions pays reference
    counts per view and per call (atomic operations LLVM cannot remove); inlined in numba's
    IR, numba's own pruning cancels them: the anomaly score and interval of
    ``scored.k_predict_scored`` take 650 ns instead of 950 (under load). Making the kernels
    inline-always themselves would add about a minute to their cold compile; twins cost
    only their one caller's (about 7 s more for ``k_predict_scored``). The twins compute
    the same numbers (no fastmath either way). Their source is the module's own: its edits
    reach the callers' cached code through :func:`purge_stale_cache`'s stamp.
    """
    namespace = dict(vars(module))
    twins = {name: f for name, f in vars(module).items()
             if isinstance(f, Dispatcher) and f.py_func.__module__ == module.__name__ and name not in keep}
    for name, f in twins.items():
        py = f.py_func
        code = types.FunctionType(py.__code__, namespace, py.__name__, py.__defaults__, py.__closure__)
        code.__doc__ = py.__doc__
        options = {k: v for k, v in f.targetoptions.items() if k != "nopython"}  # njit's own
        namespace[name] = njit(**options, inline="always")(code)
    return types.SimpleNamespace(**{name: namespace[name] for name in twins})


_PACKAGE = Path(__file__).resolve().parent
_MARKER = "streamlstm-kernels.stamp"


def _cache_dirs() -> list[Path]:
    """Where numba keeps this package's cache: the one directory it really uses (under
    NUMBA_CACHE_DIR, or beside the sources when that is unset). Never create a folder
    inside an installed package that numba does not use: it would outlive an uninstall."""
    return [Path(module_cache_dir(str(_PACKAGE / "_jit.py")))]


def purge_stale_cache() -> None:
    """Numba's cache checks only the source file of each function, but a kernel inlines
    its callees from the package's other modules: after an edit of one module, the cached
    machine code of the others would run the old code. Keep a stamp of every module beside
    the cache and drop the package's entries when it moves."""
    digest = hashlib.sha256()
    sources = sorted(_PACKAGE.glob("*.py"))
    for path in sources:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    stamp = digest.hexdigest()
    for cache in _cache_dirs():
        try:
            marker = cache / _MARKER
            if marker.exists() and marker.read_text() == stamp:
                continue
            for path in sources:
                for entry in cache.glob(f"{path.stem}.*.nb[ic]"):
                    entry.unlink()
            cache.mkdir(parents=True, exist_ok=True)
            tmp = cache / f"{_MARKER}.{os.getpid()}"
            tmp.write_text(stamp)
            tmp.replace(marker)
        except OSError:  # a read-only install: numba then caches elsewhere or not at all
            pass


purge_stale_cache()
