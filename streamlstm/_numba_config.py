"""Where numba keeps the compiled kernels: a per-user cache directory, never the package.

Numba's default cache lives in ``__pycache__`` next to the source. For an installed
package that is inside ``site-packages``, and a later ``pip install -e .`` (which removes
the wheel's files but not that directory) leaves ``site-packages/streamlstm/`` behind as
a namespace package that hides the editable install: ``from streamlstm import
OnlineLSTM`` then fails. So unless ``NUMBA_CACHE_DIR`` is set, it is set here to
:func:`user_cache_dir` before numba reads its configuration.

Imported by ``streamlstm/__init__.py`` before anything else, so that every module that
compiles with ``cache=True`` (the core's and the adapters', all inside this package) sees
it. Standard library only: ``streamlstm --help`` must not pay for importing numba.

Setting the environment variable (rather than numba's config object alone) keeps the
choice when numba re-reads its environment before a compilation, and hands it to child
processes (Flink workers, ``multiprocessing``), which then share the same cache. The one
visible effect is that other ``cache=True`` functions in the same process are cached
there too (in their own sub-directories, named after their source path).

>>> import os
>>> os.environ["NUMBA_CACHE_DIR"] != ""
True
"""

from __future__ import annotations

import os
import sys

__all__ = ["configure", "module_cache_dir", "user_cache_dir"]


def user_cache_dir() -> str:
    """The per-user cache directory for streamlstm's compiled kernels.

    ``$XDG_CACHE_HOME/streamlstm/numba`` (default ``~/.cache``) on Linux and other Unix
    systems, ``~/Library/Caches/streamlstm/numba`` on macOS and
    ``%LOCALAPPDATA%\\streamlstm\\numba`` on Windows.

    >>> user_cache_dir().endswith(os.path.join("streamlstm", "numba"))
    True
    """
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or os.path.join(os.path.expanduser("~"), "AppData", "Local")
    elif sys.platform == "darwin":
        base = os.path.join(os.path.expanduser("~"), "Library", "Caches")
    else:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "streamlstm", "numba")


def configure() -> str | None:
    """Point numba's cache at :func:`user_cache_dir` unless ``NUMBA_CACHE_DIR`` is set.

    Returns the directory in use, or None when no writable one could be made (numba then
    picks its own place, as it does for read-only installs). Called once on import.
    """
    chosen = os.environ.get("NUMBA_CACHE_DIR")
    if chosen:
        return chosen
    path = user_cache_dir()
    try:
        os.makedirs(path, exist_ok=True)
    except OSError:
        return None
    if not os.access(path, os.W_OK | os.X_OK):
        return None
    os.environ["NUMBA_CACHE_DIR"] = path
    config = sys.modules.get("numba.core.config")
    if config is not None:  # numba was imported first: its config has read the environment already
        config.CACHE_DIR = path  # type: ignore[attr-defined]
    return path


def module_cache_dir(source_file: str) -> str:
    """The directory where numba keeps the cached functions of ``source_file``.

    Under ``NUMBA_CACHE_DIR`` (set by :func:`configure`) numba's own sub-directory for the
    source file's folder; ``__pycache__`` beside the file when no cache directory is set.
    Imports numba: for kernel modules that manage their cache entries.
    """
    from numba.core import caching, config

    cache_dir = getattr(config, "CACHE_DIR", "")  # set from the environment when numba is imported
    if not cache_dir:
        return os.path.join(os.path.dirname(os.path.abspath(source_file)), "__pycache__")
    return os.path.join(cache_dir, caching._CacheLocator.get_suitable_cache_subpath(source_file))


configure()
