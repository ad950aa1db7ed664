"""The core settings the River estimators pass through, and their documentation, both from the
core's settings schema (:mod:`streamlstm.settings`).

``_CORE`` (every estimator has them) is the schema less ``_DERIVED`` (taken from the data) and
``_CORE_OPTIONAL`` (the settings some estimators expose, documented by each, since what they
allow depends on the estimator). The docstring entries of ``_CORE`` are written by
:func:`params_doc` from the schema's description, allowed values and the estimator's default.
The estimators' ``__init__`` signatures stay explicit (River's ``clone()`` reads them);
``tests/test_settings_schema.py`` pins each to the schema: names, order, types and defaults,
where only the defaults of :data:`RIVER_DEFAULTS` and an estimator's ``_own_defaults`` differ.
"""

from __future__ import annotations

import inspect
import textwrap
from typing import Any, TypeVar

from streamlstm.settings import SettingInfo, describe

_DERIVED = ("n_inputs", "n_outputs")

_CORE_OPTIONAL = ("loss", "huber_delta", "standardize_inputs", "standardize_targets")

_CORE = tuple(s.name for s in describe() if s.name not in _DERIVED + _CORE_OPTIONAL)

#: The River estimators' defaults where they differ from the core's: a River estimator starts
#: from nothing on one stream and is measured per event (``bench/RESULTS.md``), so 16 units
#: learning at 3e-3, in float32 (the running normalisers stay float64).
RIVER_DEFAULTS: dict[str, Any] = {"hidden": 16, "lr": 3e-3, "dtype": "float32"}

# What the schema's one line cannot say about a setting in the River estimators.
_RIVER_NOTES = {
    "dtype": "float32 learns about 25% faster at ``hidden=32``; the running normalisers stay float64.",
}

_PLACEHOLDER = "    {params}\n"


def _allowed(info: SettingInfo) -> str:
    if info.choices:
        return "one of " + ", ".join(f'``"{c}"``' for c in info.choices)
    if info.type == "bool":
        return "``True`` or ``False``"
    bounds = info.bounds
    if bounds is None:
        return ""
    if info.type.startswith("int"):
        text = f"an integer >= {bounds.low:g}"
    else:
        text = f"in {bounds}"
    if info.type.startswith("tuple"):
        text = "two numbers, each " + text
    return text + (" or ``None``" if "None" in info.type else "")


def params_doc(defaults: dict[str, Any] | None = None, indent: str = "    ") -> str:
    """The numpydoc "Parameters" entries of ``_CORE``, each name line at ``indent``: the
    schema's description, what is allowed, and the default (``defaults`` by name; the core's
    default for a name not given).

    >>> print(params_doc({"hidden": 16}, indent="").splitlines()[:2])
    ['hidden', '    units per layer; an integer >= 1; default ``16``.']
    """
    defaults = defaults or {}
    lines = []
    for info in describe():
        if info.name not in _CORE:
            continue
        default = defaults.get(info.name, info.default)
        unbroken = f"``{default!r}``".replace(" ", "\0")  # a literal is not wrapped
        text = f"{info.doc}; {_allowed(info)}; default {unbroken}."
        lines.append(indent + info.name)
        lines += [line.replace("\0", " ") for line in textwrap.wrap(
            text, 96 - len(indent), initial_indent=indent + "    ", subsequent_indent=indent + "    ",
            break_on_hyphens=False)]
        if info.name in _RIVER_NOTES:
            lines += [indent + "    " + line for line in _RIVER_NOTES[info.name].splitlines()]
    return "\n".join(lines) + "\n"


T = TypeVar("T", bound=type)


def with_params_doc(cls: T) -> T:
    """Class decorator: the core settings' entries (with the defaults of ``cls.__init__``), then
    a blank line, in place of the line ``{params}`` of the class docstring."""
    doc = cls.__doc__ or ""
    if _PLACEHOLDER not in doc:
        raise ValueError(f"{cls.__name__}'s docstring has no '{{params}}' line")
    defaults = {name: p.default for name, p in inspect.signature(cls.__init__).parameters.items()  # type: ignore[misc]
                if p.default is not inspect.Parameter.empty}
    cls.__doc__ = doc.replace(_PLACEHOLDER, params_doc(defaults) + "\n")
    return cls
