"""Every public docstring's example runs, under the names users import."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import streamlstm
import streamlstm.adapters

OPTIONAL = {"streamlstm.adapters.flink": "pyflink", "streamlstm.adapters.river": "river",
            "streamlstm.adapters.cli": "click"}


def _modules() -> list[str]:
    names = ["streamlstm"]
    for pkg in (streamlstm, streamlstm.adapters):
        names += [f"{pkg.__name__}.{m.name}" for m in pkgutil.iter_modules(pkg.__path__)]
    return sorted(set(names))


@pytest.mark.parametrize("name", _modules())
def test_doctests(name):
    if name in OPTIONAL:
        pytest.importorskip(OPTIONAL[name])
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} doctest(s) failed in {name}"
