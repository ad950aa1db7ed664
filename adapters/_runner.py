"""The job behind ``streamlstm run``: keyed models over the core, output, checkpoints.

Imported lazily by :mod:`streamlstm.adapters.cli` (it pulls in numpy and the core).
Everything numeric is the core's (:class:`streamlstm.OnlineLSTM`, and for keys with
shared weights :class:`streamlstm.KeyedLSTM`, the core's one keyed store); this module only
routes rows to them in input order and writes what comes back.

Keys with shared weights: a block of rows of many keys is one ``KeyedLSTM.step_many`` call
(bit-identical to row by row), or, learning, one ``learn_many`` call per batch of rows with
distinct keys (:func:`key_batches`): the weights are fixed within the call and take ONE
optimizer step at its end, from the mean gradient of the keys whose update came due.
Learning blocks are therefore part of the job: they end at multiples of ``block_size``
input rows counted from the job's first row, however the rows arrive (a pipe waits for a
whole block), so a file, a pipe and a resumed run give the same numbers.
Without keys and with ``--per-key-models``, rows are cut into runs of one key, each one
block call of the core, which gives the same numbers for any blocking (one row or
thousands). ``--ahead`` with keys and shared weights swaps each key's state out of the
``KeyedLSTM`` into the model for its run (its label arrives before its next step, which a
keyed block call cannot express), with the core's per-event learning.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import select
import signal
import stat
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence, TextIO

import numpy as np

from streamlstm import InputError, KeyedLSTM, LSTMState, OnlineLSTM, persistence

from ._csvio import BadRecord, Block, CliError, RecordReader, Schema, reading_guard
from ._uncertainty import RowUncertainty, block_keys, check_levels

KIND = "streamlstm.cli"
FORMAT = 1
DEFAULT_BLOCK = 4096  # rows per block (--block-size), and per learning call of a keyed job


def _one(call: Callable[..., Any], *args: Any) -> float:
    """A single-event core call; its output, NaN if it is not finite.

    The inputs are finite (checked by the parser), so a ``ValueError`` here means the
    step was taken but its output overflowed, which the block calls report as NaN.
    """
    try:
        return call(*args)
    except ValueError:
        return math.nan


# ------------------------------------------------------------------------ engine
class Imputer:
    """Missing feature values (NaN from the parser under ``--missing impute``) replaced by the
    running mean of their column over the rows before them (0 until the column has had a
    value). Sums run strictly in row order, so a row gets the same value whether it came
    in a block of one row (a pipe) or of thousands (a file).

    >>> imp = Imputer(1)
    >>> X = np.array([[1.0], [np.nan], [3.0], [np.nan]])
    >>> imp.fill(X); X[:, 0].tolist(), imp.filled.tolist()
    ([1.0, 1.0, 3.0, 2.0], [2])
    """

    def __init__(self, n: int):
        self.sum = np.zeros(n)
        self.count = np.zeros(n, dtype=np.int64)
        self.filled = np.zeros(n, dtype=np.int64)   # values imputed, per column

    def fill(self, X: np.ndarray) -> None:
        """Impute the NaN of ``X`` (rows in input order) in place and take its rows into the means."""
        miss = np.isnan(X)
        if len(X) == 1:  # one row (a pipe): the same additions without the block machinery
            row, m = X[0], miss[0]
            if m.any():
                row[m] = np.divide(self.sum, self.count, out=np.zeros(len(row)), where=self.count > 0)[m]
                self.filled += m
            self.sum += np.where(m, 0.0, row)
            self.count += ~m
            return
        vals = np.where(miss, 0.0, X)
        sums = np.add.accumulate(np.vstack([self.sum, vals]), axis=0)  # sequential per column
        counts = self.count + np.vstack([np.zeros((1, X.shape[1]), dtype=np.int64), np.cumsum(~miss, axis=0)])
        if miss.any():
            before = np.divide(sums[:-1], counts[:-1], out=np.zeros(X.shape), where=counts[:-1] > 0)
            X[miss] = before[miss]
            self.filled += miss.sum(axis=0)
        self.sum, self.count = sums[-1].copy(), counts[-1].copy()

    def to_meta(self) -> dict[str, list[Any]]:
        return {"sum": self.sum.tolist(), "count": self.count.tolist(), "filled": self.filled.tolist()}

    @classmethod
    def from_meta(cls, d: Any, n: int) -> "Imputer":
        """The imputer saved by :meth:`to_meta`, for ``n`` features; a saved imputer whose sums
        would not fit ``n`` features or would impute a non-finite value is refused (the engine
        would otherwise refuse a row that passed the CSV checks, or fail mid-block)."""
        ok = isinstance(d, dict) and all(isinstance(d.get(f), list) and len(d[f]) == n
                                         for f in ("sum", "count", "filled"))
        ok = ok and all(type(v) in (int, float) and math.isfinite(v) for v in d["sum"])
        ok = ok and all(type(v) is int and 0 <= v <= 1 << 62 for f in ("count", "filled") for v in d[f])
        if not ok:
            raise CliError(f"corrupt checkpoint: 'imputer' must hold lists 'sum' (finite), 'count' and 'filled' "
                           f"(counts >= 0) of {n} values, one per feature")
        imp = cls(n)
        imp.sum[:] = d["sum"]
        imp.count[:] = d["count"]
        imp.filled[:] = d["filled"]
        return imp


def key_batches(keys: Sequence[Any]) -> list[tuple[int, int]]:
    """The learning batches of a block of keyed rows, as ``[a, b)`` row ranges: a batch holds
    at most one row of each key, and ends before the row that repeats a key of the batch.
    Each is one ``KeyedLSTM.learn_many`` call, whose one optimizer step then averages the
    gradients of distinct streams, never of one stream's consecutive rows.

    >>> key_batches(["a", "b", "c", "a", "b", "a"])
    [(0, 3), (3, 5), (5, 6)]
    """
    n = len(keys)
    if len(set(keys)) == n:  # every key once (many interleaved keys): one batch
        return [(0, n)] if n else []
    spans = []
    start = 0
    seen: set[Any] = set()
    for i, k in enumerate(keys):
        if k in seen:
            spans.append((start, i))
            start = i
            seen = set()
        seen.add(k)
    spans.append((start, n))
    return spans


def _has_learned(model: OnlineLSTM) -> bool:
    """Whether a model has seen a label: its predictions are forecasts, not initial values."""
    return model.n_updates > 0 or bool(model.target_statistics()[0].sum() > 0)


def _check_fits(model: OnlineLSTM, what: str, n_inputs: int | None = None, ahead: int = 0) -> None:
    """Refuse (exit 2) a model this command cannot run: a classifier, several outputs, or
    (from a checkpoint) another input width or a window too short for its forecasts."""
    if model.loss == "cross_entropy":
        raise CliError(f"{what} is a classifier (loss 'cross_entropy', {model.n_outputs} classes): `streamlstm run` "
                       "predicts one number per row; classify with the Python API or River's LSTMClassifier")
    if model.n_outputs != 1:
        raise CliError(f"{what} predicts {model.n_outputs} values per step: `streamlstm run` needs n_outputs=1")
    if n_inputs is not None and model.n_inputs != n_inputs:
        raise CliError(f"corrupt checkpoint: {what} takes {model.n_inputs} inputs, its job has {n_inputs}")
    if ahead > model.bptt:
        raise CliError(f"corrupt checkpoint: {what} has bptt={model.bptt}, shorter than its job's ahead={ahead}")


def _is_int(v: Any) -> bool:
    return type(v) is int


def check_checkpoint(meta: Any, arrays: dict[str, np.ndarray], source: str) -> None:
    """Raise :class:`CliError` (exit 2) naming the field when the metadata and arrays of a
    ``streamlstm run`` checkpoint do not hold what :meth:`Engine.restore` reads.

    The container's own checks (magic, sizes, CRC) have passed; this catches a file that
    was edited or built by hand, before anything is allocated from it.
    """
    def bad(what: str) -> CliError:
        return CliError(f"{source}: corrupt checkpoint: {what}")

    if not isinstance(meta, dict):
        raise bad("its metadata is not a JSON object")
    fmt = meta.get("format", 0)
    if not _is_int(fmt) or fmt < 0:
        raise bad(f"'format' is {fmt!r}, not a version number")
    if fmt > FORMAT:
        raise CliError(f"{source} was written by a newer streamlstm CLI (format {fmt}): upgrade streamlstm")
    job = meta.get("job")
    if not isinstance(job, dict):
        raise bad("'job' is missing or not an object")
    for name, ok, want in (
            ("target", lambda v: isinstance(v, str) and v, "a column name"),
            ("features", lambda v: isinstance(v, list) and all(isinstance(f, str) for f in v), "a list of column names"),
            ("key", lambda v: v is None or isinstance(v, str), "a column name or null"),
            ("time", lambda v: v is None or isinstance(v, str), "a column name or null"),
            ("ahead", lambda v: v is None or (_is_int(v) and v >= 0), "an integer >= 0"),
            ("per_key_models", lambda v: v is None or isinstance(v, bool), "true or false"),
            ("difference", lambda v: v is None or isinstance(v, bool), "true or false"),
            ("model", lambda v: v in (None, "lstm", "engine"), "'lstm' or 'engine'"),
            ("anomaly", lambda v: v is None or isinstance(v, bool), "true or false"),
            ("block_size", lambda v: v is None or (_is_int(v) and 1 <= v <= 1 << 40), "an integer >= 1")):
        if not ok(job.get(name)):
            raise bad(f"job.{name} is {job.get(name)!r}, expected {want}")
    try:
        check_levels(job.get("interval", []))
    except ValueError as exc:
        raise bad(f"job.interval: {exc}") from None
    if not isinstance(meta.get("params"), dict):
        raise bad("'params' is missing or not an object")
    for name in ("learned", "consumed"):
        v = meta.get(name, 0)
        if not _is_int(v) or v < 0:
            raise bad(f"{name!r} is {v!r}, expected an integer >= 0")
    header = meta.get("header", [])
    if not isinstance(header, list) or not all(isinstance(c, str) for c in header):
        raise bad("'header' is not a list of column names")
    st = meta.get("stats", {})
    if not isinstance(st, dict) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in st.values()):
        raise bad("'stats' is not an object of numbers")
    digest = meta.get("input_sha256")
    if digest is not None and not (isinstance(digest, str) and len(digest) == 64):
        raise bad(f"'input_sha256' is {digest!r}, not a SHA-256 digest")
    keys = meta.get("keys")
    keyed = job.get("key") is not None
    if not isinstance(keys, list):
        raise bad("'keys' is missing or not a list")
    if keyed and not (all(isinstance(k, str) for k in keys) and len(set(keys)) == len(keys)):
        raise bad("'keys' is not a list of distinct key strings")
    if not keyed and keys != [None]:
        raise bad(f"'keys' is {keys[:3]!r}, a job without --key has the one key null")
    n = len(keys)

    def array(name: str, kinds: str, ndim: int, rows: int | None = None, cols: int | None = None) -> np.ndarray:
        a = arrays.get(name)
        if a is None:
            raise bad(f"the array {name!r} is missing")
        if a.dtype.kind not in kinds or a.ndim != ndim or (rows is not None and a.shape[0] != rows) or (
                cols is not None and a.shape[1] != cols):
            want = ", ".join(str(d) for d in (rows, cols)[:ndim]).replace("None", "any")
            raise bad(f"the array {name!r} is {a.dtype} of shape {a.shape}, expected {ndim}-d ({want}) of kind {kinds!r}")
        # values and forecasts: NaN stands for "none yet"; an infinite one is no forecast at all
        # (it would be written out, scored and fed to the intervals and anomaly scores)
        if a.dtype.kind == "f" and np.isinf(a).any():
            raise bad(f"the array {name!r} holds an infinite value")
        return a

    H = job.get("ahead") or 0
    if job.get("model") == "engine":  # the forecasting engine's bytes are checked by its own loader
        array("forecaster", "u", 1)
        array("ring", "f", 2, n, H)
        return
    if job.get("per_key_models") and keyed:
        models = array("models", "u", 1)
        sizes = array("model_sizes", "i", 1, n)
        if (sizes < 0).any() or int(sizes.sum()) != models.shape[0]:
            raise bad(f"'model_sizes' do not add up to the {models.shape[0]} bytes of 'models'")
    else:
        array("model", "u", 1)
        if keyed:
            array("states", "f", 2, n)
            array("state_counters", "i", 2, n, 2)
    if "template" in arrays:
        array("template", "u", 1)
    if H:
        array("last", "f", 1, n)
        array("ring", "f", 2, n, H)
        if "ring_real" in arrays:  # a ring of flags read row by row beside 'ring'
            array("ring_real", "bu", 2, n, H)
        if job.get("difference"):
            array("ring_v", "f", 2, n, H)


class Engine:
    """Models, per-key states and forecasting bookkeeping for one job.

    ``job``: target, features, key, time, ahead (0 = regression), per_key_models,
    block_size (keys with shared weights: the rows of one learning call).
    ``params``: :class:`OnlineLSTM` keyword arguments (``n_inputs`` is derived).
    Keys with shared weights live in :attr:`store`, a :class:`KeyedLSTM` over
    :attr:`model`; with ``per_key_models`` every key has its own model in :attr:`models`
    (a ``KeyedLSTM`` holds one set of weights).
    """

    def __init__(self, job: dict[str, Any], params: dict[str, Any], learn: bool = True,
                 template: OnlineLSTM | None = None):
        self._setup(job, params, learn)
        if template is not None:
            _check_fits(template, "the loaded model")
        self._template = None if template is None else template.to_bytes()
        if template is not None and template.n_inputs != self.n_inputs:
            raise CliError(f"the loaded model takes {template.n_inputs} inputs, this job has {self.n_inputs} "
                           f"({len(self.job['features'])} features{' + the target' if self.H else ''})")
        if self.n_inputs == 0:
            raise CliError("no input columns: give --features, or --ahead to forecast from the target's own history")
        if template is not None and self.H > template.bptt:
            raise CliError(f"the loaded model has bptt={template.bptt}, too short for --ahead {self.H}: the true "
                           "value must reach back to the step that made its forecast")
        self.model = None if self.per_key else (template if template is not None else self._new_model())
        if self.keyed and not self.per_key:
            self.store = KeyedLSTM(self.model, learn=learn)
        self.informed_default = template is not None and _has_learned(template)

    def _setup(self, job: dict[str, Any], params: dict[str, Any], learn: bool) -> None:
        self.job = dict(job)
        self.params = dict(params)
        self.learn = learn
        self.H = int(job.get("ahead") or 0)
        self.keyed = job.get("key") is not None
        self.per_key = bool(job.get("per_key_models")) and self.keyed
        self.n_inputs = len(job["features"]) + (1 if self.H else 0)
        self.model: OnlineLSTM | None = None
        self.models: dict[Any, OnlineLSTM] = {}   # --per-key-models: each key's own model
        self.store: KeyedLSTM | None = None       # keys with shared weights: their states
        self.last: dict[Any, float] = {}
        self.ring: dict[Any, np.ndarray] = {}    # forecasts of the last H steps (per key)
        self.ring_v: dict[Any, np.ndarray] = {}  # input values of the last H steps (--difference)
        self.diff = bool(job.get("difference")) and self.H > 0
        self.learned = 0
        self._template: bytes | None = None
        features = job["features"]
        self.imputer = Imputer(len(features)) if features and job.get("missing", "impute") == "impute" else None
        # whether each model (None: the shared one; a key: its own) had a label before a
        # prediction: those made before are not scored in the summary (see `unreal`)
        self.informed: dict[Any, bool] = {}
        self.informed_default = False
        self.ring_real: dict[Any, np.ndarray] = {}  # were the forecasts in `ring` made after a label
        self.unreal = np.zeros(0, dtype=bool)  # rows of the last block without a real prediction
        self.uncertainty = RowUncertainty(job.get("interval") or [], bool(job.get("anomaly")), self.H)

    def extra_columns(self, blk: Block, pred: np.ndarray, prev: np.ndarray | None) -> list[np.ndarray]:
        """The --interval / --anomaly columns of the rows just processed (none without them)."""
        if not self.uncertainty.active:
            return []
        return self.uncertainty.columns(block_keys(blk), blk.y, blk.known, pred, prev)

    def _restored(self, blob: bytes, source: str, what: str) -> OnlineLSTM:
        """A model of a checkpoint, checked to fit this job."""
        try:
            model = OnlineLSTM.from_bytes(blob)
        except (persistence.FormatError, ValueError, TypeError) as exc:
            raise CliError(f"{source}: corrupt checkpoint: {what}: {exc}") from None
        _check_fits(model, f"{source}: {what}", self.n_inputs, self.H)
        return model

    def _new_model(self) -> OnlineLSTM:
        if self._template is not None:
            return OnlineLSTM.from_bytes(self._template)
        try:
            return OnlineLSTM(n_inputs=self.n_inputs, **self.params)
        except (ValueError, TypeError) as exc:
            raise CliError(f"bad model settings: {exc}") from None

    def warm_up(self) -> None:
        """Load the core's compiled kernels this job can call (numba's cache), on a copy of
        the model, so that the first rows do not pay for it: it is start-up work."""
        model = (self.model if self.model is not None else self._new_model()).copy()
        x = np.zeros((2, self.n_inputs))
        if self.store is not None:
            keyed = KeyedLSTM(model.copy(), learn=self.learn)
            keyed.step_many(["a", "b"], x)
            if self.learn:
                keyed.learn_many(["a", "b"], x, np.zeros(2))
        model.advance_many(x)
        model.advance(x[0])
        if self.learn:
            model.learn_one(x[0], 0.0)
            if self.H:
                model.label(0.0, lag=0)

    @property
    def block_rows(self) -> int | None:
        """Input rows per learning call when the blocking changes the numbers (keys with
        shared weights, learning, no ``--ahead``): blocks then end at multiples of it,
        counted from the job's first row. None: any blocking gives the same numbers."""
        if self.store is None or not self.learn or self.H:
            return None
        return int(self.job.get("block_size") or DEFAULT_BLOCK)

    def reset_states(self) -> None:
        """Every key's recurrent state (and forecasting memory) back to zero (--fresh-state)."""
        if self.store is not None:
            self.store.clear()
        for book in (self.last, self.ring, self.ring_v, self.ring_real):
            book.clear()
        for m in ([self.model] if self.model is not None else []) + list(self.models.values()):
            m.reset_state()

    def key_states(self) -> dict[Any, LSTMState]:
        """Each key's state (a copy), in the order the keys arrived: ``{None: state}`` without keys."""
        if not self.keyed:
            assert self.model is not None
            return {None: self.model.state}
        if self.per_key:
            return {k: m.state for k, m in self.models.items()}
        assert self.store is not None
        store = self.store
        return {k: store.state(k) for k in self._keys()}

    @property
    def n_keys(self) -> int:
        if not self.keyed:
            return 1
        return len(self.models) if self.store is None else len(self.store)

    def _activate(self, key: Any) -> OnlineLSTM:
        """The model for a run of rows of ``key``: its own (--per-key-models), or the shared
        one holding the key's state, taken out of the store (see :meth:`_release`)."""
        if self.per_key:
            m = self.models.get(key)
            if m is None:
                m = self.models[key] = self._new_model()
            return m
        model = self.model
        assert model is not None
        if self.store is not None:
            if key in self.store:
                model.state = self.store.state(key)
            else:
                model.reset_state()
        return model

    def _release(self, key: Any, model: OnlineLSTM) -> None:
        """The key's state, moved on by its run, back into the store."""
        if self.store is not None:
            self.store.set_state(key, model.state)

    # --------------------------------------------------------------- rows
    def process(self, blk: Block) -> tuple[np.ndarray, np.ndarray | None]:
        """Predictions for the rows of ``blk`` (NaN = none) and, when forecasting, the
        forecast made ``ahead`` rows earlier for each row."""
        n = len(blk)
        pred = np.full(n, np.nan)
        prev = np.full(n, np.nan) if self.H else None
        self.unreal = np.zeros(n, dtype=bool)
        if self.imputer is not None and n:
            self.imputer.fill(blk.X)
        keys = blk.keys
        if self.store is not None and not self.H:
            try:
                self._regress_keyed(blk, pred)
            except ValueError as exc:  # the parser lets only finite numbers through
                raise CliError(f"internal error: the core refused a row that passed the CSV checks: {exc}", 1) from None
            return pred, prev
        if keys is None:
            runs = [(None, 0, n)]
        else:
            runs = []
            start = 0
            k0 = keys[0] if n else None
            for i in range(1, n):
                k = keys[i]
                if k != k0:
                    runs.append((k0, start, i))
                    start, k0 = i, k
            if n:
                runs.append((k0, start, n))
        try:
            for key, a, b in runs:
                if self.H:
                    self._forecast(key, a, b, blk, pred, prev)
                else:
                    self._regress(key, a, b, blk, pred)
        except (InputError, ValueError) as exc:  # the parser lets only finite numbers through
            raise CliError(f"internal error: the core refused a row that passed the CSV checks: {exc}", 1) from None
        return pred, prev

    def _regress_keyed(self, blk: Block, pred: np.ndarray) -> None:
        """The rows of many keys with shared weights: calls of the keyed store. Inference: one
        call. Learning: one call (one optimizer step) per batch of :func:`key_batches`."""
        store = self.store
        assert store is not None
        if not self.learn:
            if not self.informed.get(None, self.informed_default):
                self.unreal[:] = True
            pred[:] = store.step_many(blk.keys, blk.X)[:, 0]
            return
        Y = np.where(blk.known, blk.y, 0.0)
        keys, known = blk.keys, blk.known
        spans = key_batches(keys)
        i = 0
        while i < len(spans):
            a, b = spans[i]
            j = i
            while b - a == 1 and j + 1 < len(spans) and spans[j + 1][1] - spans[j + 1][0] == 1 \
                    and keys[spans[j + 1][0]] == keys[a]:
                j += 1
            if j > i:  # rows of one key in a row, each its own batch: the core's block call on
                # the key's state gives the same numbers (one due key: exactly the core's update)
                b = spans[j][1]
                if not self.informed.get(None, self.informed_default):
                    for r in range(a, b):  # each row its own call
                        self._inform(r, r + 1, known)
                model = self._activate(keys[a])
                pred[a:b] = model.learn_many(blk.X[a:b], Y[a:b], known[a:b])[:, 0]
                self._release(keys[a], model)
            else:
                self._inform(a, b, known)
                part = keys if a == 0 and b == len(blk) else keys[a:b]
                pred[a:b] = store.learn_many(part, blk.X[a:b], Y[a:b], known[a:b])[:, 0]
            i = j + 1
        self.learned += int(known.sum())

    def _inform(self, a: int, b: int, known: np.ndarray) -> None:
        """Rows a..b-1, learned in one call with fixed weights: until a call with a label has
        been learned, every prediction is the untrained model's (not scored in the summary)."""
        if not self.informed.get(None, self.informed_default):
            self.unreal[a:b] = True
            if known[a:b].any():
                self.informed[None] = True

    def _regress(self, key: Any, a: int, b: int, blk: Block, pred: np.ndarray) -> None:
        model = self._activate(key)
        ik = key if self.per_key else None
        if not self.informed.get(ik, self.informed_default):
            # predictions up to the first learned label (included: made before learning it)
            first = np.flatnonzero(blk.known[a:b]) if self.learn else np.zeros(0, dtype=np.int64)
            self.unreal[a:a + int(first[0]) + 1 if len(first) else b] = True
            if len(first):
                self.informed[ik] = True
        if b - a == 1:  # one row (interleaved keys, a pipe): the single-event calls cost less
            x = blk.X[a]
            if self.learn and blk.known[a]:
                pred[a] = _one(model.learn_one, x, float(blk.y[a]))
                self.learned += 1
            else:
                pred[a] = _one(model.advance, x)
            return
        X = blk.X[a:b]
        if self.learn:
            M = blk.known[a:b]
            P = model.learn_many(X, blk.y[a:b], M)
            self.learned += int(M.sum())
        else:
            P = model.advance_many(X)
        pred[a:b] = P[:, 0]

    def _forecast(self, key: Any, a: int, b: int, blk: Block, pred: np.ndarray, prev: np.ndarray) -> None:
        H = self.H
        y = blk.y[a:b]
        known = blk.known[a:b]
        m = b - a
        v = y
        if not known.all():  # no value: the target's last known value stands in as input
            idx = np.where(known, np.arange(m), -1)
            np.maximum.accumulate(idx, out=idx)
            v = np.where(idx >= 0, y[np.maximum(idx, 0)], self.last.get(key, math.nan))
        s = 0
        if v[0] != v[0]:  # nothing known yet for this key: wait (no step, no output)
            ok = np.flatnonzero(v == v)
            if not len(ok):
                return
            s = int(ok[0])
        mm = m - s
        X = np.empty((mm, self.n_inputs))
        X[:, 0] = v[s:]
        X[:, 1:] = blk.X[a + s:b]
        model = self._activate(key)
        ik = key if self.per_key else None
        informed = self.informed.get(ik, self.informed_default)
        real = np.full(mm, informed)
        base = None
        if self.diff:  # the model learns y[t+H] - y[t]; base[i] is the value at the step row i answers
            rv = self.ring_v.get(key)
            base = np.concatenate([np.full(H, np.nan) if rv is None else rv, v[s:]])
        if self.learn:
            n0 = model.n_steps_stream
            if known[s] and n0 >= H:  # the true value of the step that forecast this row
                model.label(float(y[s] - base[0]) if base is not None else float(y[s]), lag=H - 1)
                self.learned += 1
                real[:] = True
            Y = np.zeros(mm)
            M = np.zeros(mm, dtype=bool)
            if mm > 1:
                M[:-1] = known[s + 1:] & (n0 + np.arange(1, mm) >= H)
                target = y[s + 1:] if base is None else y[s + 1:] - base[1:mm]
                Y[:-1] = np.where(M[:-1], target, 0.0)
            P = self._learn_lagged(model, X, Y, M, H - 1)
            self.learned += int(M.sum())
            real[1:] |= np.logical_or.accumulate(M[:-1])  # a row's label comes after its step
            if real[-1] or M.any():
                self.informed[ik] = True
        else:
            P = model.advance_many(X)[:, 0]
        if base is not None:
            P = P + v[s:]
            self.ring_v[key] = base[mm:].copy()
        ring = self.ring.get(key)
        if ring is None:
            ring = np.full(H, np.nan)
        comb = np.concatenate([ring, P])
        prev[a + s:b] = comb[:mm]
        self.ring[key] = comb[mm:].copy()
        comb_real = np.concatenate([self.ring_real.get(key, np.ones(H, dtype=bool)), real])
        self.unreal[a + s:b] = ~comb_real[:mm]
        self.ring_real[key] = comb_real[mm:].copy()
        pred[a + s:b] = P
        self.last[key] = float(v[-1])
        self._release(key, model)

    def _learn_lagged(self, model: OnlineLSTM, X: np.ndarray, Y: np.ndarray, M: np.ndarray, lag: int) -> np.ndarray:
        """Row t: advance X[t], then (if M[t]) label the step ``lag`` steps back with Y[t]."""
        if len(X) == 1:  # the last row of a run is never labelled here (its value comes later)
            return np.array([_one(model.advance, X[0])])
        if lag == 0:
            return model.learn_many(X, Y, M)[:, 0]
        return model.learn_many(X, Y, M, lag=lag)[:, 0]

    # --------------------------------------------------------- persistence
    def _keys(self) -> list[Any]:
        if not self.keyed:
            return [None]
        if self.per_key:
            return list(self.models)
        assert self.store is not None
        return list(self.store.keys())  # rows in the order the keys arrived (the store never drops one here)

    def snapshot(self, extra: dict[str, Any]) -> bytes:
        keys = self._keys()
        arrays: dict[str, np.ndarray] = {}
        if self.per_key:
            blobs = [self.models[k].to_bytes() for k in keys]
            arrays["models"] = np.frombuffer(b"".join(blobs), dtype=np.uint8)
            arrays["model_sizes"] = np.array([len(b) for b in blobs], dtype=np.int64)
        else:
            assert self.model is not None
            arrays["model"] = np.frombuffer(self.model.to_bytes(), dtype=np.uint8)
            if self.store is not None:  # the layout of 0.1 (a dict of states): whole state buffers
                states = [self.store.state(k) for k in keys]
                size = self.model.state.buffer.shape[0]
                arrays["states"] = (np.stack([st.buffer for st in states]) if keys
                                    else np.zeros((0, size), dtype=self.model.state.buffer.dtype))
                arrays["state_counters"] = (np.stack([st.counters for st in states]).astype(np.int64)
                                            if keys else np.zeros((0, 2), dtype=np.int64))
        if self.per_key and self._template is not None:
            arrays["template"] = np.frombuffer(self._template, dtype=np.uint8)
        if self.H:
            arrays["ring_real"] = np.array([self.ring_real.get(k, np.ones(self.H, dtype=bool)) for k in keys],
                                           dtype=np.uint8).reshape(len(keys), self.H)
            arrays["last"] = np.array([self.last.get(k, math.nan) for k in keys], dtype=np.float64)
            arrays["ring"] = np.array([self.ring.get(k, np.full(self.H, np.nan)) for k in keys],
                                      dtype=np.float64).reshape(len(keys), self.H)
            if self.diff:
                arrays["ring_v"] = np.array([self.ring_v.get(k, np.full(self.H, np.nan)) for k in keys],
                                            dtype=np.float64).reshape(len(keys), self.H)
        meta = {"format": FORMAT, "job": self.job, "params": self.params, "keys": keys,
                "learned": self.learned, "informed": [k for k, v in self.informed.items() if v],
                "informed_default": self.informed_default, **extra}
        if self.uncertainty.active:
            meta["uncertainty"], more = self.uncertainty.export()
            arrays.update(more)
        if self.imputer is not None:
            meta["imputer"] = self.imputer.to_meta()
        return persistence.dumps(KIND, meta, arrays)

    @classmethod
    def restore(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray], learn: bool,
                source: str = "the checkpoint") -> "Engine":
        """The engine a checkpoint holds; one that does not fit together raises
        :class:`CliError` (exit 2) naming ``source`` and what is wrong."""
        check_checkpoint(meta, arrays, source)
        eng = cls.__new__(cls)
        eng._setup(meta["job"], meta["params"], learn)
        eng.learned = int(meta.get("learned", 0))
        # files from before these fields: every model counts as having learned, as then
        eng.informed = {k: True for k in meta.get("informed", [])}
        eng.informed_default = bool(meta.get("informed_default", "informed" not in meta))
        if eng.imputer is not None and "imputer" in meta:
            eng.imputer = Imputer.from_meta(meta["imputer"], len(eng.job["features"]))
        if "template" in arrays:
            eng._template = arrays["template"].tobytes()
        keys = meta["keys"]
        if eng.per_key:
            eng.model = None
            blob = arrays["models"].tobytes()
            pos = 0
            for k, size in zip(keys, arrays["model_sizes"].tolist()):
                eng.models[k] = eng._restored(blob[pos:pos + size], source, f"the model of key {k!r}")
                pos += size
            if eng._template is not None:
                eng._restored(eng._template, source, "the model new keys start from")
        else:
            eng.model = model = eng._restored(arrays["model"].tobytes(), source, "the model")
            if eng.keyed:
                _check_saved_states(model, keys, arrays["states"], arrays["state_counters"])
                eng.store = store = KeyedLSTM(model, learn=learn)
                for k, buf, cnt in zip(keys, arrays["states"], arrays["state_counters"]):
                    try:  # the store checks a state it is given
                        store.set_state(k, LSTMState(buf.copy(), cnt.astype(np.int64), model.layers, model.hidden))
                    except (ValueError, TypeError) as exc:
                        raise CliError(f"{source}: corrupt checkpoint: the state of key {k!r}: {exc}") from None
        if eng.H:
            for k, last, ring in zip(keys, arrays["last"].tolist(), arrays["ring"]):
                if last == last:
                    eng.last[k] = last
                    eng.ring[k] = ring.copy()
            if "ring_real" in arrays:
                for k, flags in zip(keys, arrays["ring_real"]):
                    eng.ring_real[k] = flags.astype(bool)
            if eng.diff:
                for k, last, rv in zip(keys, arrays["last"].tolist(), arrays["ring_v"]):
                    if last == last:
                        eng.ring_v[k] = rv.copy()
        if eng.uncertainty.active:
            eng.uncertainty.restore(meta.get("uncertainty"), arrays, source)
        return eng


def _check_saved_states(model: OnlineLSTM, keys: list[Any], states: np.ndarray, counters: np.ndarray) -> None:
    """Every key's saved state must fit the model and be one it can run, checked here:
    a bad one found when its key comes back would stop the run far from its cause."""
    want = (len(keys), model.state.buffer.shape[0])
    if states.shape != want or states.dtype != np.dtype(model.dtype) or counters.shape != (len(keys), 2):
        raise persistence.FormatError(f"corrupt checkpoint: array 'states' is {states.dtype} {states.shape} and "
                                      f"'state_counters' {counters.shape}, the model needs {model.dtype} {want} "
                                      f"and ({len(keys)}, 2)")
    try:
        model.check_states(states, counters, "array 'states'")
    except ValueError as exc:
        raise persistence.FormatError(f"corrupt checkpoint: {exc}") from None


# ------------------------------------------------------------------------ output
class OutputError(CliError):
    """The output could not be written (disk full, I/O error): the run stops (exit 1)."""

    def __init__(self, message: str):
        super().__init__(message, 1)


class _FdOutput:
    """Bytes to a file descriptor, every one of them or an :class:`OutputError`.

    Python's text streams cannot promise that: with ``PYTHONUNBUFFERED=1`` (``python -u``)
    ``sys.stdout`` writes straight to the descriptor and drops the rest of a short write
    (a full disk) without a word. Here a short write is continued, a failed one raises,
    and a regular output file is synced before a checkpoint counts its rows.
    """

    FLUSH_AT = 1 << 16  # bytes held before a write (a block of rows is one write)

    def __init__(self, fd: int):
        self.fd = fd
        self.buf = bytearray()
        self.regular = _is_regular_fd(fd)

    def write(self, data: Any) -> None:
        self.buf += memoryview(data)  # bytes or a uint8 array (+= on the array would be numpy's)
        if len(self.buf) >= self.FLUSH_AT:
            self.flush()

    def write_text(self, text: str) -> None:
        self.write(text.encode("utf-8", "surrogateescape"))

    def flush(self) -> None:
        if not self.buf:
            return
        done = 0
        view = memoryview(self.buf)
        try:
            while done < len(view):
                try:
                    done += os.write(self.fd, view[done:])
                except BlockingIOError:  # a non-blocking descriptor: wait until it takes more
                    select.select([], [self.fd], [])
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise OutputError(f"cannot write the output: {exc.strerror or exc} "
                              f"({done:,} of {len(view):,} bytes written)") from None
        finally:
            view.release()
            del self.buf[:done]

    def sync(self) -> None:
        """Flush, and for a regular file make it durable (a checkpoint is about to count it)."""
        self.flush()
        if self.regular:
            try:
                os.fsync(self.fd)
            except OSError as exc:
                raise OutputError(f"cannot write the output: {exc.strerror or exc} (while syncing it to disk)") from None


class _TextOutput:
    """A text stream without a descriptor (in-process callers, tests)."""

    def __init__(self, stream: TextIO):
        self.stream = stream

    def write(self, data: Any) -> None:
        self.write_text(bytes(data).decode("utf-8", "surrogateescape"))

    def write_text(self, text: str) -> None:
        try:
            self.stream.write(text)
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise OutputError(f"cannot write the output: {exc.strerror or exc}") from None

    def flush(self) -> None:
        try:
            self.stream.flush()
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise OutputError(f"cannot write the output: {exc.strerror or exc}") from None

    sync = flush


def _is_regular_fd(fd: int) -> bool:
    try:
        return stat.S_ISREG(os.fstat(fd).st_mode)
    except OSError:
        return False


def _output(stream: TextIO) -> _FdOutput | _TextOutput:
    """Write to the stream's descriptor when it has one (after what it holds already)."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both
        return _TextOutput(stream)
    stream.flush()
    return _FdOutput(fd)


def _json_safe(s: str) -> str:
    """``s`` with each byte that was not UTF-8 in the input (kept as a lone surrogate by
    ``surrogateescape``) written as the four characters ``\\xNN``: JSON must be UTF-8.

    >>> _json_safe(b"caf\\xe9".decode("utf-8", "surrogateescape"))
    'caf\\\\xe9'
    """
    return s.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


class Writer:
    """CSV or JSON-lines rows: pass-through columns, the target, predictions, errors.

    CSV copies every cell it keeps byte for byte, including bytes that are not UTF-8.
    JSON lines are UTF-8 JSON: a byte of a key, time or column name that is not UTF-8 is
    written as the four characters ``\\xNN`` (backslash, x, two hex digits), so that every
    line parses and keys that differ by such bytes stay apart. Output goes to the stream's file descriptor
    (see :class:`_FdOutput`): a row is either written or the run stops with an error.
    """

    def __init__(self, stream: TextIO, fmt: str, schema: Schema, ahead: int, digits: int | None,
                 extra: Sequence[str] = ()):
        self.stream = stream
        self.out = _output(stream)
        self.fmt = fmt
        self.digits = digits
        self.ahead = ahead
        t = schema.target
        self.has_target = schema.has_target
        names = list(schema.pass_names)
        if self.has_target:
            names.append(t)
        if ahead:
            names += [f"forecast_{t}_t", "error", f"forecast_{t}_t+{ahead}"]
        else:
            names.append(f"pred_{t}")
            if self.has_target:
                names.append("error")
        self.names = names + list(extra)   # --interval / --anomaly columns (``_uncertainty``)
        self._num = "%r" if digits is None else f"%.{int(digits)}g"

    def header(self) -> None:
        if self.fmt == "csv":
            self.out.write_text(",".join(_quote(n) for n in self.names) + "\n")

    def flush(self) -> None:
        """Everything written so far is with the operating system (or an :class:`OutputError`)."""
        self.out.flush()

    def sync(self) -> None:
        """:meth:`flush`, and a regular output file synced to disk: for a checkpoint."""
        self.out.sync()

    def write(self, blk: Block, pred: np.ndarray, prev: np.ndarray | None,
              extra: Sequence[np.ndarray] = ()) -> np.ndarray:
        """Write the rows (``extra``: the values of the extra columns); returns the error per
        row (NaN where unknown)."""
        if self.ahead:
            err = blk.y - prev
            nums = [prev, err, pred]
        else:
            err = blk.y - pred
            nums = [pred, err] if self.has_target else [pred]
        nums += list(extra)
        if not len(blk):
            return err
        if self.fmt == "csv":
            self._csv(blk, nums)
        else:
            self._jsonl(blk, nums)
        return err

    def _csv(self, blk: Block, nums: list[np.ndarray]) -> None:
        if blk.spans is not None and self.digits is None:
            self._csv_compiled(blk, nums)
            return
        # Each column is turned into strings on its own (map over a whole column runs at C
        # speed: no per-row tuple or format-string parsing), then the strings are dropped
        # into the slots of one list of cells and separators, and joined once.
        # Numbers: shortest exact repr (``repr``, the same as ``'%r' %``) or ``'%.Ng'``.
        cols: list[Any] = []
        for col in blk.passthrough:
            cols.append([_quote(s) for s in col] if blk.quoted else col)
        if self.has_target:
            cols.append(blk.target_text)
        one = repr if self.digits is None else self._num.__mod__
        for arr in nums:
            if np.isnan(arr).any():  # no value: an empty cell
                cols.append([one(v) if v == v else "" for v in arr.tolist()])
            else:
                cols.append(map(one, arr.tolist()))
        width = 2 * len(cols)  # cell, separator, cell, separator, ..., cell, "\n"
        cells = ([""] + [","]) * (len(cols) - 1) + ["", "\n"]
        cells *= len(blk)
        for j, col in enumerate(cols):
            cells[2 * j::width] = col
        self.out.write_text("".join(cells))

    def _csv_compiled(self, blk: Block, nums: list[np.ndarray]) -> None:
        # The kept cells are copied from the input's bytes, the numbers printed by the
        # compiled repr: byte for byte what _csv writes, several times faster.
        from ._fastcsv import MAX_REPR, format_block

        n = len(blk)
        values = np.empty((len(nums), n), dtype=np.float64)
        for k, arr in enumerate(nums):
            values[k] = arr
        spans = blk.spans
        out = np.empty(len(blk.raw) + n * (spans.shape[1] + len(nums) * (MAX_REPR + 1) + 1), dtype=np.uint8)
        end = format_block(blk.raw, spans, values.view(np.uint64), out)
        self.out.write(out[:end])

    def _jsonl(self, blk: Block, nums: list[np.ndarray]) -> None:
        cols: list[list[Any]] = [list(c) for c in blk.passthrough]
        if self.has_target:
            cols.append([v if k else None for v, k in zip(blk.y.tolist(), blk.known.tolist())])
        for arr in nums:
            if self.digits is not None:
                cols.append([float(self._num % v) if v == v else None for v in arr.tolist()])
            else:
                cols.append([v if v == v else None for v in arr.tolist()])
        names = self.names
        dumps = json.dumps
        text = "".join(dumps(dict(zip(names, row)), ensure_ascii=False) + "\n" for row in zip(*cols))
        if not text.isascii():
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:  # bytes that were not UTF-8: see the class doc
                names = [_json_safe(n) for n in names]
                cols[:len(blk.passthrough)] = [[_json_safe(s) for s in c] for c in cols[:len(blk.passthrough)]]
                text = "".join(dumps(dict(zip(names, row)), ensure_ascii=False) + "\n" for row in zip(*cols))
        self.out.write_text(text)


def _quote(s: str) -> str:
    if '"' in s or "," in s or "\n" in s or "\r" in s:
        return '"' + s.replace('"', '""') + '"'
    return s


# ------------------------------------------------------------------------- stats
@dataclass
class Stats:
    rows: int = 0          # rows processed (predicted)
    skipped: int = 0       # bad rows skipped
    unlabelled: int = 0    # rows without a target value
    scored: int = 0        # rows with a known error of a real prediction
    sum_abs: float = 0.0
    sum_sq: float = 0.0
    consumed: int = 0      # input records consumed (processed + skipped)
    unscored: int = 0      # rows with an error, predicted before the model had any label

    @np.errstate(over="ignore", invalid="ignore")
    def add(self, blk: Block, err: np.ndarray, unreal: np.ndarray | None = None) -> None:
        self.rows += len(blk)
        self.unlabelled += int(len(blk) - blk.known.sum())
        has = err == err
        if unreal is not None and len(unreal) == len(err) and unreal.any():
            self.unscored += int((has & unreal).sum())
            has &= ~unreal
        ok = err[has]
        if len(ok):  # summed strictly in row order: the totals do not depend on how rows were blocked
            self.scored += len(ok)
            self.sum_abs = float(np.add.accumulate(np.concatenate(([self.sum_abs], np.abs(ok))))[-1])
            self.sum_sq = float(np.add.accumulate(np.concatenate(([self.sum_sq], ok * ok)))[-1])

    @property
    def mae(self) -> float:
        return self.sum_abs / self.scored if self.scored else math.nan

    @property
    def rmse(self) -> float:
        return math.sqrt(self.sum_sq / self.scored) if self.scored else math.nan

    def to_meta(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in _STATS}

    @classmethod
    def from_meta(cls, d: dict[str, Any]) -> "Stats":
        return cls(**{k: d[k] for k in _STATS if k in d})


_STATS = ("rows", "skipped", "unlabelled", "scored", "sum_abs", "sum_sq", "consumed", "unscored")


# ------------------------------------------------------------------------ signals
class Stop(Exception):
    """A stop request (SIGINT/SIGTERM) or a broken output pipe."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


class _Signals:
    def __init__(self) -> None:
        self.pending: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "_Signals":
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handler)
            except ValueError:  # not the main thread
                pass
        return self

    def _handler(self, signum: int, frame: Any) -> None:
        self.pending = signum
        if reading_guard.reading:  # blocked on input: leave the read now
            raise Stop(signum)

    def check(self) -> None:
        if self.pending is not None:
            raise Stop(self.pending)

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


# --------------------------------------------------------------------------- job
@dataclass
class RunOptions:
    on_bad_row: str = "error"
    block_size: int = 4096
    checkpoint: str | None = None
    checkpoint_every: int | None = None
    checkpoint_seconds: float | None = None
    save: str | None = None
    progress: bool = False
    collect: bool = False           # keep actual / predicted per row (plot, demo)
    flush_each_batch: bool = True
    prefetch: bool = True           # a regular file: parse the next blocks on a second thread
    position: Callable[[], tuple[int, int]] | None = None  # (bytes read, size) of a file, for % and ETA
    header_meta: list[str] = field(default_factory=list)
    fingerprint: InputFingerprint | None = None  # of the input consumed so far (resume: of the rows skipped)
    resumed: bool = False           # stats.consumed rows are counted by the checkpoint on disk


@dataclass
class Outcome:
    stats: Stats
    elapsed: float
    engine: Engine
    rows_before: int = 0            # rows counted by the checkpoint this run resumed from
    stopped_by: int | None = None
    bad_row: str | None = None
    actual: list[np.ndarray] = field(default_factory=list)
    predicted: list[np.ndarray] = field(default_factory=list)
    keys: list[Any] = field(default_factory=list)     # key strings per row (--key), for the plot
    times: list[Any] = field(default_factory=list)    # time cells per row (--time), for the plot


def _collect(out: Outcome, blk: Block, pred: np.ndarray, prev: np.ndarray | None, schema: Schema) -> None:
    out.actual.append(np.where(blk.known, blk.y, np.nan))
    out.predicted.append(prev if prev is not None else pred)
    if schema.k_idx is not None:
        out.keys.append(list(blk.keys))
    if schema.time_idx is not None:
        out.times.append(list(blk.passthrough[schema.pass_idx.index(schema.time_idx)]))


class InputFingerprint:
    """A running SHA-256 of the input records consumed, kept in checkpoints: ``--resume``
    checks that the input it skips is the one the checkpoint consumed.

    A record counts as the bytes of its line and a newline (a plain line), its fields as
    JSON (a quoted record) or its error message (a record that is not valid CSV), so a
    pipe and a file, the compiled and the Python reader, give the same digest. Blank
    lines and line ends (LF, CRLF, CR) do not count.

    >>> a, b = InputFingerprint(), InputFingerprint()
    >>> a.add(["1,2", "3,4"], 2)
    >>> b.add(np.frombuffer(b"1,2\\n3,4\\n5,6\\n", dtype=np.uint8), 2)
    >>> a.hexdigest() == b.hexdigest()
    True
    """

    def __init__(self) -> None:
        self._hash = hashlib.sha256()

    def add(self, source: Any, count: int) -> None:
        """The first ``count`` records of ``source``: a record list (:meth:`RecordReader.next_batch`)
        or the uint8 array of plain lines, each ending in a newline (:meth:`RecordReader.next_plain`)."""
        if count <= 0:
            return
        if isinstance(source, np.ndarray):
            end = len(source)
            ends = None
            if source[-1] != 10 or count < int(np.count_nonzero(source == 10)):
                ends = np.flatnonzero(source == 10)
                end = int(ends[count - 1]) + 1
            self._hash.update(source[:end].data)
            return
        recs = source[:count]
        if set(map(type, recs)) == {str}:
            self._hash.update(("\n".join(recs) + "\n").encode("utf-8", "surrogateescape"))
            return
        for rec in recs:
            if type(rec) is str:
                data = rec + "\n"
            elif isinstance(rec, BadRecord):
                data = "\x00" + rec.message + "\n"
            else:
                data = "\x01" + json.dumps(list(rec)) + "\n"
            self._hash.update(data.encode("utf-8", "surrogateescape"))

    def hexdigest(self) -> str:
        return self._hash.hexdigest()

    def copy(self) -> InputFingerprint:
        twin = InputFingerprint()
        twin._hash = self._hash.copy()
        return twin

    def adopt(self, other: InputFingerprint) -> None:
        """Become ``other`` (the fingerprint of the same records, taken further elsewhere)."""
        self._hash = other._hash


def check_file_option(option: str, path: str | None) -> None:
    """Refuse (exit 2) a file to write that is a FIFO, device, socket or folder, before
    any work: an atomic write would replace it with a regular file."""
    if path:
        try:
            persistence.check_replaceable(path)
        except OSError as exc:
            raise CliError(f"{option} {path} {exc.strerror}: it must name a regular file") from None


class CheckpointLock:
    """An exclusive lock on a checkpoint (``fcntl.flock`` on ``.NAME.lock`` beside the file
    it names, through symlinks) held for a whole run: a second run given the same
    checkpoint stops at once with :class:`CliError` instead of writing over the first's.
    Where the file system has no locks, the run goes on unlocked.
    """

    def __init__(self, path: str):
        folder, name = os.path.split(os.path.realpath(path))
        self.path = os.path.join(folder, f".{name}.lock")
        self.fd: int | None = None
        try:
            import fcntl
        except ImportError:  # not POSIX
            return
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise CliError(f"cannot lock the checkpoint {path}: {self.path}: {exc.strerror or exc}", 1) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
            os.close(fd)
            raise CliError(f"the checkpoint {path} is in use by another streamlstm run (process {holder}, lock "
                           f"{self.path}): two runs must not write one checkpoint") from None
        except OSError:  # no locks on this file system
            os.close(fd)
            return
        self.fd = fd
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # releases the lock; the lock file stays (removing it would race)
            self.fd = None

    def __enter__(self) -> "CheckpointLock":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def save_file(path: str, engine: Engine, stats: Stats, header: list[str], fingerprint: str | None = None) -> None:
    extra = {"stats": stats.to_meta(), "consumed": stats.consumed, "header": header}
    if fingerprint is not None:
        extra["input_sha256"] = fingerprint
    blob = engine.snapshot(extra)
    try:
        persistence.write_atomic(path, blob)
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror or exc}", 1) from None


def run_job(reader: RecordReader, schema: Schema, engine: Engine, writer: Writer, opts: RunOptions,
            stats: Stats, log: Callable[[str], None]) -> Outcome:
    """Read, predict/learn, write until the input ends, a bad row stops it, or a signal."""
    out = Outcome(stats, 0.0, engine, rows_before=stats.rows)
    t0 = time.perf_counter()
    last_ck = t0
    last_progress = 0.0
    every = opts.checkpoint_every
    header = opts.header_meta
    fingerprint = opts.fingerprint if opts.fingerprint is not None else InputFingerprint()
    saved = [stats.consumed if opts.resumed else None]  # the input rows the checkpoint on disk counts

    def checkpoint() -> None:
        nonlocal last_ck
        if opts.checkpoint:
            writer.sync()  # a checkpoint never counts a row whose output is not out
            save_file(opts.checkpoint, engine, stats, header, fingerprint.hexdigest())
            saved[0] = stats.consumed
        last_ck = time.perf_counter()

    group = getattr(engine, "block_rows", None)  # rows per learning call, when blocks are part of the job
    blocks = _blocks(reader, schema, opts, stats.consumed, fingerprint, group)
    if reader.regular and opts.prefetch:  # reads never block: parse the next blocks on a second thread
        blocks = _Prefetch(blocks, reader)
    stop_at_bad = opts.on_bad_row == "error"
    groups = _grouped(blocks, group, stats.consumed, stop_at_bad) if group else ([item] for item in blocks)
    with _Signals() as sig, np.errstate(all="ignore"):
        try:
            while True:
                sig.check()
                items = next(groups, None)
                if items is None:
                    break
                parts = []
                for blk, bad, cut, source, read_through in items:
                    whole = cut
                    if bad and stop_at_bad:
                        cut = bad[0][0]
                        keep = int(np.searchsorted(blk.pos, cut))
                        if keep < len(blk):
                            blk = blk.head(keep)
                    parts.append((blk, bad, cut, whole, source, read_through))
                blk = parts[0][0] if len(parts) == 1 else _joined([p[0] for p in parts])
                if len(blk):
                    pred, prev = engine.process(blk)
                    err = writer.write(blk, pred, prev, engine.extra_columns(blk, pred, prev))
                    stats.add(blk, err, engine.unreal)
                    if opts.collect:
                        _collect(out, blk, pred, prev, schema)
                consumed_before = stats.consumed
                for _, bad, cut, whole, source, read_through in parts:
                    for p, msg in bad:
                        if p >= cut:
                            break
                        stats.skipped += 1
                        if opts.on_bad_row == "warn":
                            log(f"warning: {msg} (row skipped)")
                    stats.consumed += cut
                    if cut == whole:  # hashed on the reader's side (its thread, for a file)
                        fingerprint.adopt(read_through)
                    else:
                        fingerprint.add(source, cut)
                if opts.flush_each_batch:
                    writer.flush()
                bad = parts[-1][1]
                if bad and stop_at_bad:
                    out.bad_row = bad[0][1]
                    break
                now = time.perf_counter()
                # blocks end at multiples of `every`, or (a keyed learning job) at the first
                # end of a learning block after one
                if opts.checkpoint and ((every and stats.consumed // every != consumed_before // every)
                                        or (opts.checkpoint_seconds and now - last_ck >= opts.checkpoint_seconds)):
                    checkpoint()
                if opts.progress and now - last_progress > 0.25:
                    last_progress = now
                    sys.stderr.write("\r\033[K" + progress_line(stats, out.rows_before, now - t0, opts.position))
                    sys.stderr.flush()
        except Stop as stop:
            out.stopped_by = stop.signum
        except OutputError as exc:
            raise _output_lost(exc, opts, saved[0]) from None
        except BaseException:  # an error in the job: the rows answered before it still go out
            try:
                writer.flush()
            except (OSError, OutputError):
                pass
            raise
        finally:
            if isinstance(blocks, _Prefetch):
                blocks.close()
            if opts.progress:
                sys.stderr.write("\r\033[K")
                sys.stderr.flush()
        out.elapsed = time.perf_counter() - t0
        # everything above is emitted; now make it durable
        try:
            if opts.checkpoint:
                checkpoint()
            else:
                writer.flush()
        except OutputError as exc:
            raise _output_lost(exc, opts, saved[0]) from None
        if opts.save and out.stopped_by is None and out.bad_row is None:
            save_file(opts.save, engine, stats, header, fingerprint.hexdigest())
    return out


def _output_lost(exc: OutputError, opts: RunOptions, saved: int | None) -> OutputError:
    """The error of a failed write, saying what the checkpoint on disk still holds."""
    if not opts.checkpoint:
        return exc
    if saved is None:
        return OutputError(f"{exc}; stopped; no checkpoint was written to {opts.checkpoint}")
    return OutputError(f"{exc}; stopped; {opts.checkpoint} counts the first {saved:,} input rows, whose output "
                       "was written: run again with --resume to go on from there")


def _blocks(reader: RecordReader, schema: Schema, opts: RunOptions, consumed: int,
            fingerprint: InputFingerprint,
            group: int | None = None) -> Iterator[tuple[Block, list[tuple[int, str]], int, Any, InputFingerprint]]:
    """``(typed block, bad rows, records consumed, their source, fingerprint)`` until the
    input ends: the source (records or bytes of plain lines) and the fingerprint of the
    input through this block, which starts from ``fingerprint``, are for the consumer
    to take (or, when it consumes only part of the block, to hash that part).

    Blocks end at multiples of ``checkpoint_every`` input records, so that a checkpoint
    falls exactly there, and of ``group`` (see :func:`_grouped`)."""
    every = opts.checkpoint_every
    read = fingerprint.copy()
    while True:
        n = opts.block_size
        if every:
            n = min(n, every - consumed % every)
        if group:
            n = min(n, group - consumed % group)
        plain = reader.next_plain(n) if schema.compiled else None
        if plain is not None:  # plain lines as bytes, for the compiled parser
            blk, bad = schema.parse_plain(*plain)
            cut, source = plain[2], plain[1]
        else:
            lines, recs = reader.next_batch(n)
            if not recs:
                return
            blk, bad = schema.parse(lines, recs)
            cut, source = len(recs), recs
        read.add(source, cut)
        yield blk, bad, cut, source, read.copy()
        consumed += cut


def _grouped(blocks: Iterator[Any], group: int, consumed: int, stop_at_bad: bool) -> Iterator[list[Any]]:
    """The items of :func:`_blocks` (which end at multiples of ``group`` input records)
    gathered into the ones of each whole ``group`` of records, counted from the job's
    first record: a pipe that brings a few rows at a time waits for the rest of its group.
    A group ends early at the input's end and, when it stops the run, at a bad row."""
    pending: list[Any] = []
    for item in blocks:
        pending.append(item)
        consumed += item[2]
        if consumed % group == 0 or (stop_at_bad and item[1]):
            yield pending
            pending = []
    if pending:
        yield pending


def _joined(blocks: list[Block]) -> Block:
    """One block of the rows of ``blocks`` (typed by the Python reader or the compiled one)."""
    n_pass = len(blocks[0].passthrough)
    texts = [b.target_text for b in blocks]
    offsets = np.cumsum([0] + [int(b.pos[-1]) + 1 if len(b) else 0 for b in blocks[:-1]])
    return Block(np.concatenate([b.X for b in blocks]), np.concatenate([b.y for b in blocks]),
                 np.concatenate([b.known for b in blocks]),
                 None if blocks[0].keys is None else [k for b in blocks for k in b.keys],
                 [[c for b in blocks for c in b.passthrough[j]] for j in range(n_pass)],
                 None if any(t is None for t in texts) else [c for t in texts for c in t],  # type: ignore[union-attr]
                 [line for b in blocks for line in b.lines],
                 np.concatenate([b.pos + o for b, o in zip(blocks, offsets.tolist())]),
                 any(b.quoted for b in blocks))


class _Prefetch:
    """The blocks of :func:`_blocks`, read and parsed on a second thread, a few ahead.

    Only for regular files: their reads never wait for input, so no signal has to break
    one (the reader's read guard is turned off: a signal must only ever stop the main
    thread between blocks). The compiled reader and parser release the GIL, as does the
    core, so reading the next block overlaps with the model working on this one.
    """

    def __init__(self, blocks: Iterator[Any], reader: RecordReader, depth: int = 2):
        import queue
        import threading

        reader.guard_reads = False
        self._queue: Any = queue.Queue(depth)
        self._stop = False
        self._thread = threading.Thread(target=self._work, args=(blocks,), name="streamlstm-reader", daemon=True)
        self._thread.start()

    def _work(self, blocks: Iterator[Any]) -> None:
        try:
            for item in blocks:
                if self._stop:
                    return
                self._queue.put((item, None))
        except BaseException as exc:  # handed to the main thread, which raises it
            self._queue.put((None, exc))
            return
        self._queue.put((None, None))

    def __iter__(self) -> "_Prefetch":
        return self

    def __next__(self) -> Any:
        item, exc = self._queue.get()
        if exc is not None:
            raise exc
        if item is None:
            self._queue.put((None, None))  # stays ended
            raise StopIteration
        return item

    def close(self) -> None:
        import queue

        self._stop = True
        while self._thread.is_alive():
            try:
                self._queue.get(timeout=0.05)
            except queue.Empty:
                pass
        self._thread.join()


def _clock(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    m, sec = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


def progress_line(stats: Stats, rows_before: int, elapsed: float,
                  position: Callable[[], tuple[int, int]] | None = None) -> str:
    """The progress line on a terminal: % and ETA for a file, rows, rows/s, running MAE.

    >>> progress_line(Stats(rows=5000, scored=10, sum_abs=2.5), 0, 2.0, lambda: (250, 1000))
    ' 25.0%  ETA 0:06  5,000 rows  2,500 rows/s  MAE 0.25'
    """
    parts = []
    if position is not None:
        done, size = position()
        if size > 0:
            frac = min(max(done / size, 0.0), 1.0)
            eta = elapsed * (1 - frac) / frac if frac > 0 else math.inf
            parts.append(f"{100 * frac:5.1f}%  ETA {_clock(eta)}")
    rate = (stats.rows - rows_before) / max(elapsed, 1e-9)
    parts.append(f"{stats.rows:,} rows  {rate:,.0f} rows/s")
    if stats.scored:
        parts.append(f"MAE {stats.mae:.4g}")
    return "  ".join(parts)


def summary(out: Outcome, what: str = "rows") -> str:
    """The end-of-run report on stderr: counts, imputed values, and the error of the real forecasts."""
    s = out.stats
    eng = out.engine
    here = s.rows - out.rows_before
    rate = here / out.elapsed if out.elapsed > 0 else 0.0
    resumed = f" ({here:,} in this run)" if out.rows_before else ""
    parts = [f"{s.rows:,} {what}{resumed} in {out.elapsed:.2f} s ({rate:,.0f} rows/s)"]
    parts.append(f"{eng.learned:,} learned, {s.skipped:,} skipped, {s.unlabelled:,} without a target")
    if eng.keyed:
        parts.append(f"{eng.n_keys:,} keys")
    lines = ["; ".join(parts)]
    if eng.imputer is not None and eng.imputer.filled.any():
        per = [f"{name} {int(k):,}" for name, k in zip(eng.job["features"], eng.imputer.filled.tolist()) if k]
        lines.append(f"{int(eng.imputer.filled.sum()):,} missing feature values imputed with their column's running "
                     f"mean ({', '.join(per)})")
    if s.scored:
        left = (f"; {s.unscored:,} predicted before the model had any label left out" if s.unscored else "")
        lines.append(f"MAE {s.mae:.6g}, RMSE {s.rmse:.6g} over {s.scored:,} rows with a real forecast{left}")
    elif s.unscored:
        lines.append(f"no MAE: the {s.unscored:,} rows with a true value were all predicted before any label")
    return "\n".join(lines)


def _time_axis(cells: list[str]) -> np.ndarray | None:
    """Numbers or datetimes from the time column's cells; None when they are neither."""
    try:
        return np.array([float(c) if c.strip() else math.nan for c in cells])
    except ValueError:
        pass
    try:
        return np.array([c.strip().replace(" ", "T").rstrip("Z") or "NaT" for c in cells], dtype="datetime64[s]")
    except ValueError:
        return None


def plot(path: str, actual: np.ndarray, predicted: np.ndarray, title: str, pred_label: str,
         keys: list[str] | None = None, times: list[str] | None = None, time_name: str = "time",
         max_keys: int = 4) -> str:
    """Actual vs predicted and the error to a PNG; returns which keys were drawn.

    Against the time column when there is one (numbers or dates), else the row number
    (of the key). With ``keys``, one panel per key for the first ``max_keys`` keys to
    arrive (the other keys are left out and the title says so).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(actual)
    t = _time_axis(times) if times is not None else None
    xlabel = time_name if t is not None else "row"
    if keys is None:
        panels: list[tuple[str | None, np.ndarray]] = [(None, np.arange(n))]
        drawn = ""
    else:
        order = list(dict.fromkeys(keys))
        karr = np.array(keys, dtype=object)
        panels = [(k, np.flatnonzero(karr == k)) for k in order[:max_keys]]
        shown = ", ".join(repr(k) for k, _ in panels)
        drawn = (f"keys {shown}" if len(order) <= max_keys
                 else f"keys {shown}: the first {len(panels)} of {len(order):,} keys")
        if t is None:
            xlabel = "row of the key"
    ratios = [3, 1] * len(panels)
    fig, axes = plt.subplots(2 * len(panels), 1, figsize=(11, 1.2 + 2.6 * len(panels) + 0.8),
                             gridspec_kw={"height_ratios": ratios}, squeeze=False)
    for p, (k, idx) in enumerate(panels):
        ax1, ax2 = axes[2 * p, 0], axes[2 * p + 1, 0]
        x = t[idx] if t is not None else np.arange(len(idx))
        ax1.plot(x, actual[idx], lw=0.9, label="actual")
        ax1.plot(x, predicted[idx], lw=0.9, label=pred_label)
        ax1.set_title(f"key {k!r}: {len(idx):,} rows" if k is not None else f"{n:,} rows", fontsize=10)
        ax1.legend(loc="best", fontsize=8)
        ax2.plot(x, actual[idx] - predicted[idx], lw=0.7, color="tab:red")
        ax2.axhline(0, color="k", lw=0.5)
        ax2.set_ylabel("error")
        ax2.set_xlabel(xlabel)
    fig.suptitle(title + (f" ({drawn})" if drawn else ""))
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=110)
    except OSError as exc:
        raise CliError(f"cannot write the plot {path}: {exc.strerror or exc}", 1) from None
    finally:
        plt.close(fig)
    return drawn
