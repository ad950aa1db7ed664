"""Features of River events as the network's input rows: value coercion, the three input
encodings (``levels``, ``changes``, ``both``) and their block form for ``learn_many``.

A missing feature (absent, ``None`` or NaN) stands in as its running mean: the only statistic
kept here. Scaling is the core's online normaliser (``standardize_inputs``), not repeated here.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from itertools import repeat
from typing import Any

import numpy as np

ENCODINGS = ("levels", "changes", "both")


def as_number(name: Any, value: Any) -> float | None:
    """``float(value)`` of feature ``name``, or ``None`` for a missing value (None, NaN)."""
    if type(value) is float:
        f = value
    elif value is None:
        return None
    elif isinstance(value, (numbers.Real, np.bool_, np.integer, np.floating)):
        f = float(value)
    else:
        raise TypeError(f"feature {name!r} has value {value!r} ({type(value).__name__}), "
                        "which is not a real number")
    if f != f:
        return None
    if f in (math.inf, -math.inf):
        raise ValueError(f"feature {name!r} has value {value!r}, which is not finite")
    return f


def as_target(y: Any) -> float | None:
    """``float(y)`` of a regression target; ``None`` for a missing target (None, NaN)."""
    if y is None:
        return None
    if isinstance(y, (str, bytes)) or not isinstance(y, (numbers.Real, np.number)):
        raise TypeError(f"target must be a real number, got {y!r}")
    f = float(y)
    if f != f:
        return None
    if f in (math.inf, -math.inf):
        raise ValueError(f"target {y!r} is not finite")
    return f


def _arrival_order(name: Any) -> tuple[str, str]:
    """Order of features that are new in the same event: by type, then name."""
    return type(name).__name__, repr(name)


def _column(values: Any, name: Any) -> np.ndarray:
    """A DataFrame column as float64 with NaN for missing values (None, NaN)."""
    arr = np.asarray(values)
    if arr.dtype.kind in "fiub":
        out = arr.astype(np.float64)
    else:
        out = np.empty(len(arr), dtype=np.float64)
        for i, v in enumerate(arr):
            f = as_number(name, v)
            out[i] = np.nan if f is None else f
    if np.isinf(out).any():
        bad = out[np.isinf(out)][0]
        raise ValueError(f"feature {name!r} has value {bad!r}, which is not finite")
    return out


def frame_matrix(X: Any) -> tuple[list, np.ndarray]:
    """(feature names, float64 matrix with NaN for missing) of a DataFrame."""
    names = list(X.columns)
    A = np.empty((len(X), len(names)), dtype=np.float64)
    for i, name in enumerate(names):
        A[:, i] = _column(X[name].to_numpy(), name)
    return names, A


class Features:
    """Feature name -> column, by order of first arrival, with each feature's running mean.

    ``mode`` is ``"levels"`` (the value), ``"changes"`` (the change since the feature's last
    observed value; 0 when missing or new) or ``"both"`` (two columns per feature). ``count``
    and ``mean`` are the count and running mean of each feature's observed values (a missing
    level is replaced by ``mean``), ``last`` its last observed value.

    >>> feats = Features("both")
    >>> feats.row(*feats.parse({"b": 2, "a": 1.0}), learn=True)
    ([1.0, 0.0, 2.0, 0.0], 2)
    >>> feats.row(*feats.parse({"a": 4.0}), learn=True)    # b missing: its mean, no change
    ([4.0, 3.0, 2.0, 0.0], 0)
    >>> feats.mean
    [2.5, 2.0]
    """

    def __init__(self, mode: str = "levels"):
        if mode not in ENCODINGS:
            raise ValueError(f"inputs must be 'levels', 'changes' or 'both', got {mode!r}")
        self.mode = mode
        self.names: list = []
        self.index: dict = {}
        self.count: list[int] = []
        self.mean: list[float] = []
        self.last: list[float] = []

    def __setstate__(self, state: dict[str, Any]) -> None:
        state.pop("m2", None)  # a 0.1.0 pickle: it also kept a running variance, never read
        self.__dict__.update(state)

    @property
    def width(self) -> int:
        """Input columns per feature."""
        return 2 if self.mode == "both" else 1

    @property
    def n_columns(self) -> int:
        return self.width * len(self.names)

    def _observe(self, values: Iterable[tuple[int, float]]) -> None:
        """Take observed ``(feature index, value)`` pairs into the running means (one call per
        event or column: a call per value would cost the fast path a few percent)."""
        count, mean, last = self.count, self.mean, self.last
        for j, f in values:
            n = count[j] + 1
            count[j] = n
            mean[j] += (f - mean[j]) / n
            last[j] = f

    def _append(self, name: Any, f: float) -> None:
        self.index[name] = len(self.names)
        self.names.append(name)
        self.count.append(1)
        self.mean.append(f)
        self.last.append(f)

    def fast_row(self, x: dict, learn: bool) -> list[float] | None:
        """``row(*parse(x), learn)`` for the common event, built without its bookkeeping: ``x``
        holds exactly the known features, each a real number and all finite. ``None`` for
        anything else (the general path then decides, and raises for bad values)."""
        names = self.names
        if len(x) != len(names) or not names:
            return None
        try:
            vals = [x[k] for k in names]
            total = sum(vals)  # a str or None raises here
        except (KeyError, TypeError):
            return None
        if type(total) is not float and type(total) is not int:
            return None  # complex, Decimal, numpy scalars...: the general path converts or refuses
        if total - total != 0:  # a NaN or an infinity anywhere (or an overflowing sum)
            return None
        if self.mode == "levels":
            row = vals
        else:
            ch = [v - last for v, last in zip(vals, self.last)]
            if self.mode == "changes":
                row = ch
            else:
                row = [0.0] * (2 * len(vals))
                row[0::2] = vals
                row[1::2] = ch
        if learn:
            self._observe(enumerate(vals))
        return row

    def fast_changes(self, x: dict) -> list[float] | None:
        """``fast_row(x, learn=False)`` in ``"changes"`` mode, in one pass: the differences are
        computed first and their sum checks them all (a str or None raises, a NaN or infinity
        propagates, anything exotic changes the sum's type). ``None``: use the general path."""
        names = self.names
        if len(x) != len(names) or not names:
            return None
        try:
            ch = [x[k] - last for k, last in zip(names, self.last)]
            total = sum(ch)
        except (KeyError, TypeError):
            return None
        if (type(total) is not float and type(total) is not int) or total - total != 0:
            return None
        return ch

    def parse(self, x: dict | None) -> tuple[dict[int, float], dict[Any, float]]:
        """Validate every value: ``({column: value} of known features, {name: value} of new ones)``."""
        known: dict[int, float] = {}
        new: dict[Any, float] = {}
        if not x:
            return known, new
        index = self.index
        for k, v in x.items():
            f = as_number(k, v)
            if f is None:
                continue
            j = index.get(k)
            if j is None:
                new[k] = f
            else:
                known[j] = f
        return known, new

    def row(self, known: dict[int, float], new: dict[Any, float] | None = None,
            learn: bool = False) -> tuple[list[float], int]:
        """The input row of an event (after ``parse``). With ``learn`` the statistics take the
        values in and new features are appended; returns ``(row, number of new features)``."""
        lv = self.mean[:]
        ch = [0.0] * len(lv) if self.mode != "levels" else None
        for j, f in known.items():
            lv[j] = f
            if ch is not None:
                ch[j] = f - self.last[j]
        n_new = 0
        if learn:
            self._observe(known.items())
            if new:
                for name in sorted(new, key=_arrival_order):
                    self._append(name, new[name])
                    lv.append(new[name])
                    if ch is not None:
                        ch.append(0.0)
                n_new = len(new)
        return self._assemble(lv, ch), n_new

    def _assemble(self, lv: list[float], ch: list[float] | None) -> list[float]:
        if ch is None:
            return lv
        if self.mode == "changes":
            return ch
        out = [0.0] * (2 * len(lv))
        out[0::2] = lv
        out[1::2] = ch
        return out

    # ------------------------------------------------------------------ blocks
    def block(self, A: np.ndarray, cols: list[int | None], start: int, end: int) -> np.ndarray:
        """Rows ``start:end`` of ``A`` (NaN = missing; ``cols[i]`` the column of ``A``'s i-th
        feature, None = unknown and ignored) as input rows, exactly as ``row(.., learn=True)``
        one by one would build them, provided no known feature is missing after it was observed
        within the block (``block_end`` cuts blocks so). The statistics take the values in."""
        n = len(self.names)
        T = end - start
        lv = np.tile(np.asarray(self.mean, dtype=np.float64), (T, 1)) if n else np.zeros((T, 0))
        ch = np.zeros((T, n)) if self.mode != "levels" else None
        for i, j in enumerate(cols):
            if j is None:
                continue
            a = A[start:end, i]
            obs = ~np.isnan(a)
            if not obs.any():
                continue
            lv[obs, j] = a[obs]
            if ch is not None:
                rows = np.flatnonzero(obs)
                prev = np.empty(len(rows))
                prev[0] = self.last[j]
                prev[1:] = a[rows[:-1]]
                ch[rows, j] = a[rows] - prev
            self._observe(zip(repeat(j), a[obs].tolist()))
        if ch is None:
            return np.ascontiguousarray(lv)
        if self.mode == "changes":
            return np.ascontiguousarray(ch)
        out = np.empty((T, 2 * n))
        out[:, 0::2] = lv
        out[:, 1::2] = ch
        return out


def block_end(A: np.ndarray, cols: list[int | None], start: int, stop: int) -> int:
    """First row r in (start, stop] such that some known feature observed in rows start..r-1
    is missing at row r (its imputed mean would have moved), else ``stop``."""
    end = stop
    for i, j in enumerate(cols):
        if j is None:
            continue
        obs = ~np.isnan(A[start:stop, i])
        if not obs.any():
            continue
        first = int(np.argmax(obs))
        gaps = np.flatnonzero(~obs[first:])
        if len(gaps):
            end = min(end, start + first + int(gaps[0]))
    return end
