"""The job behind ``streamlstm run``: keyed models over the core, output, checkpoints.

Imported lazily by :mod:`streamlstm.adapters.cli` (it pulls in numpy and the core).
Everything numeric is the core's (:class:`streamlstm.OnlineLSTM`); this module only
routes rows to models and per-key states, in input order, and writes what comes back.

Row order is kept exactly: rows are cut into runs of consecutive rows with the same key,
and each run is one block call of the core, so a block of 1 row (a pipe fed line by line)
and a block of thousands (a regular file) give the same numbers.
"""

from __future__ import annotations

import json
import math
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, TextIO

import numpy as np

from streamlstm import InputError, LSTMState, OnlineLSTM, persistence

from ._csvio import Block, CliError, RecordReader, Schema, reading_guard

KIND = "streamlstm.cli"
FORMAT = 1
_NONE = object()


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
class Engine:
    """Models, per-key states and forecasting bookkeeping for one job.

    ``job``: target, features, key, time, ahead (0 = regression), per_key_models.
    ``params``: :class:`OnlineLSTM` keyword arguments (``n_inputs`` is derived).
    """

    def __init__(self, job: dict[str, Any], params: dict[str, Any], learn: bool = True,
                 template: OnlineLSTM | None = None):
        self._setup(job, params, learn)
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

    def _setup(self, job: dict[str, Any], params: dict[str, Any], learn: bool) -> None:
        import inspect

        self.job = dict(job)
        self.params = dict(params)
        self.learn = learn
        self.H = int(job.get("ahead") or 0)
        self.keyed = job.get("key") is not None
        self.per_key = bool(job.get("per_key_models")) and self.keyed
        self.n_inputs = len(job["features"]) + (1 if self.H else 0)
        self.model: OnlineLSTM | None = None
        self.models: dict[Any, OnlineLSTM] = {}
        self.states: dict[Any, LSTMState] = {}
        self.cur: Any = _NONE
        self.last: dict[Any, float] = {}
        self.ring: dict[Any, np.ndarray] = {}    # forecasts of the last H steps (per key)
        self.ring_v: dict[Any, np.ndarray] = {}  # input values of the last H steps (--difference)
        self.diff = bool(job.get("difference")) and self.H > 0
        self.learned = 0
        self._template: bytes | None = None
        self._lag_block = "lag" in inspect.signature(OnlineLSTM.learn_many).parameters

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
        model.advance_many(x)
        model.advance(x[0])
        if self.learn:
            model.learn_one(x[0], 0.0)
            if self.H:
                model.label(0.0, lag=0)

    @property
    def n_keys(self) -> int:
        if not self.keyed:
            return 1
        return len(self.models) if self.per_key else len(self.states) + (self.cur is not _NONE and self.cur not in self.states)

    def _activate(self, key: Any) -> OnlineLSTM:
        if self.per_key:
            m = self.models.get(key)
            if m is None:
                m = self.models[key] = self._new_model()
            return m
        model = self.model
        if self.keyed and key != self.cur:
            if self.cur is not _NONE:
                self.states[self.cur] = model.state
            st = self.states.get(key)
            if st is None:
                model.reset_state()
            else:
                model.state = st
            self.cur = key
        return model

    # --------------------------------------------------------------- rows
    def process(self, blk: Block) -> tuple[np.ndarray, np.ndarray | None]:
        """Predictions for the rows of ``blk`` (NaN = none) and, when forecasting, the
        forecast made ``ahead`` rows earlier for each row."""
        n = len(blk)
        pred = np.full(n, np.nan)
        prev = np.full(n, np.nan) if self.H else None
        keys = blk.keys
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

    def _regress(self, key: Any, a: int, b: int, blk: Block, pred: np.ndarray) -> None:
        model = self._activate(key)
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
        base = None
        if self.diff:  # the model learns y[t+H] - y[t]; base[i] is the value at the step row i answers
            rv = self.ring_v.get(key)
            base = np.concatenate([np.full(H, np.nan) if rv is None else rv, v[s:]])
        if self.learn:
            n0 = model.n_steps_stream
            if known[s] and n0 >= H:  # the true value of the step that forecast this row
                model.label(float(y[s] - base[0]) if base is not None else float(y[s]), lag=H - 1)
                self.learned += 1
            Y = np.zeros(mm)
            M = np.zeros(mm, dtype=bool)
            if mm > 1:
                M[:-1] = known[s + 1:] & (n0 + np.arange(1, mm) >= H)
                target = y[s + 1:] if base is None else y[s + 1:] - base[1:mm]
                Y[:-1] = np.where(M[:-1], target, 0.0)
            P = self._learn_lagged(model, X, Y, M, H - 1)
            self.learned += int(M.sum())
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
        pred[a + s:b] = P
        self.last[key] = float(v[-1])

    def _learn_lagged(self, model: OnlineLSTM, X: np.ndarray, Y: np.ndarray, M: np.ndarray, lag: int) -> np.ndarray:
        """Row t: advance X[t], then (if M[t]) label the step ``lag`` steps back with Y[t]."""
        if len(X) == 1:  # the last row of a run is never labelled here (its value comes later)
            return np.array([_one(model.advance, X[0])])
        if lag == 0:
            return model.learn_many(X, Y, M)[:, 0]
        if self._lag_block:
            return model.learn_many(X, Y, M, lag=lag)[:, 0]
        P = np.empty(len(X))
        advance, label = model.advance, model.label
        for i in range(len(X)):  # until the core's block call takes a lag
            P[i] = _one(advance, X[i])
            if M[i]:
                label(float(Y[i]), lag)
        return P

    # --------------------------------------------------------- persistence
    def _keys(self) -> list[Any]:
        if not self.keyed:
            return [None]
        if self.per_key:
            return list(self.models)
        if self.cur is not _NONE:
            self.states[self.cur] = self.model.state
        return list(self.states)

    def snapshot(self, extra: dict[str, Any]) -> bytes:
        keys = self._keys()
        arrays: dict[str, np.ndarray] = {}
        if self.per_key:
            blobs = [self.models[k].to_bytes() for k in keys]
            arrays["models"] = np.frombuffer(b"".join(blobs), dtype=np.uint8)
            arrays["model_sizes"] = np.array([len(b) for b in blobs], dtype=np.int64)
        else:
            arrays["model"] = np.frombuffer(self.model.to_bytes(), dtype=np.uint8)
            if self.keyed:
                size = self.model.state.buffer.shape[0]
                dt = self.model.state.buffer.dtype
                arrays["states"] = (np.stack([self.states[k].buffer for k in keys]) if keys
                                    else np.zeros((0, size), dtype=dt))
                arrays["state_counters"] = (np.stack([self.states[k].counters for k in keys]).astype(np.int64)
                                            if keys else np.zeros((0, 2), dtype=np.int64))
        if self.per_key and self._template is not None:
            arrays["template"] = np.frombuffer(self._template, dtype=np.uint8)
        if self.H:
            arrays["last"] = np.array([self.last.get(k, math.nan) for k in keys], dtype=np.float64)
            arrays["ring"] = np.array([self.ring.get(k, np.full(self.H, np.nan)) for k in keys],
                                      dtype=np.float64).reshape(len(keys), self.H)
            if self.diff:
                arrays["ring_v"] = np.array([self.ring_v.get(k, np.full(self.H, np.nan)) for k in keys],
                                            dtype=np.float64).reshape(len(keys), self.H)
        meta = {"format": FORMAT, "job": self.job, "params": self.params, "keys": keys,
                "learned": self.learned, **extra}
        return persistence.dumps(KIND, meta, arrays)

    @classmethod
    def restore(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray], learn: bool) -> "Engine":
        if meta.get("format", 0) > FORMAT:
            raise CliError("this file was written by a newer streamlstm CLI: upgrade streamlstm")
        eng = cls.__new__(cls)
        eng._setup(meta["job"], meta["params"], learn)
        eng.learned = int(meta.get("learned", 0))
        if "template" in arrays:
            eng._template = arrays["template"].tobytes()
        keys = meta["keys"]
        if eng.per_key:
            eng.model = None
            blob = arrays["models"].tobytes()
            pos = 0
            for k, size in zip(keys, arrays["model_sizes"].tolist()):
                eng.models[k] = OnlineLSTM.from_bytes(blob[pos:pos + size])
                pos += size
        else:
            eng.model = OnlineLSTM.from_bytes(arrays["model"].tobytes())
            if eng.keyed:
                tmpl = eng.model.state
                _check_saved_states(eng.model, keys, arrays["states"], arrays["state_counters"])
                for k, buf, cnt in zip(keys, arrays["states"], arrays["state_counters"]):
                    eng.states[k] = LSTMState(buf.copy(), cnt.astype(tmpl.counters.dtype), tmpl.layers, tmpl.hidden)
        if eng.H:
            for k, last, ring in zip(keys, arrays["last"].tolist(), arrays["ring"]):
                if last == last:
                    eng.last[k] = last
                    eng.ring[k] = ring.copy()
            if eng.diff:
                for k, last, rv in zip(keys, arrays["last"].tolist(), arrays["ring_v"]):
                    if last == last:
                        eng.ring_v[k] = rv.copy()
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
class Writer:
    """CSV or JSON-lines rows: pass-through columns, the target, predictions, errors."""

    def __init__(self, stream: TextIO, fmt: str, schema: Schema, ahead: int, digits: int | None):
        self.stream = stream
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
        self.names = names
        self._num = "%r" if digits is None else f"%.{int(digits)}g"

    def header(self) -> None:
        if self.fmt == "csv":
            self.stream.write(",".join(_quote(n) for n in self.names) + "\n")

    def write(self, blk: Block, pred: np.ndarray, prev: np.ndarray | None) -> np.ndarray:
        """Write the rows; returns the error per row (NaN where unknown)."""
        if self.ahead:
            err = blk.y - prev
            nums = [prev, err, pred]
        else:
            err = blk.y - pred
            nums = [pred, err] if self.has_target else [pred]
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
        self.stream.write("".join(cells))

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
        self.stream.write(out[:end].tobytes().decode("utf-8", "surrogateescape"))

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
        self.stream.write("".join(dumps(dict(zip(names, row)), ensure_ascii=False) + "\n" for row in zip(*cols)))


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
    scored: int = 0        # rows with a known error
    sum_abs: float = 0.0
    sum_sq: float = 0.0
    consumed: int = 0      # input records consumed (processed + skipped)

    @np.errstate(over="ignore", invalid="ignore")
    def add(self, blk: Block, err: np.ndarray) -> None:
        self.rows += len(blk)
        self.unlabelled += int(len(blk) - blk.known.sum())
        ok = err[err == err]
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
        return {k: getattr(self, k) for k in ("rows", "skipped", "unlabelled", "scored", "sum_abs", "sum_sq", "consumed")}

    @classmethod
    def from_meta(cls, d: dict[str, Any]) -> "Stats":
        return cls(**{k: d[k] for k in ("rows", "skipped", "unlabelled", "scored", "sum_abs", "sum_sq", "consumed")
                      if k in d})


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
    header_meta: list[str] = field(default_factory=list)


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


def save_file(path: str, engine: Engine, stats: Stats, header: list[str]) -> None:
    blob = engine.snapshot({"stats": stats.to_meta(), "consumed": stats.consumed, "header": header})
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

    def checkpoint() -> None:
        nonlocal last_ck
        if opts.checkpoint:
            writer.stream.flush()
            save_file(opts.checkpoint, engine, stats, header)
        last_ck = time.perf_counter()

    blocks = _blocks(reader, schema, opts, stats.consumed)
    if reader.regular and opts.prefetch:  # reads never block: parse the next blocks on a second thread
        blocks = _Prefetch(blocks, reader)
    with _Signals() as sig, np.errstate(all="ignore"):
        try:
            while True:
                sig.check()
                item = next(blocks, None)
                if item is None:
                    break
                blk, bad, cut = item
                if bad and opts.on_bad_row == "error":
                    cut = bad[0][0]
                    keep = int(np.searchsorted(blk.pos, cut))
                    if keep < len(blk):
                        blk = blk.head(keep)
                if len(blk):
                    pred, prev = engine.process(blk)
                    err = writer.write(blk, pred, prev)
                    stats.add(blk, err)
                    if opts.collect:
                        out.actual.append(np.where(blk.known, blk.y, np.nan))
                        out.predicted.append(prev if prev is not None else pred)
                for p, msg in bad:
                    if p >= cut:
                        break
                    stats.skipped += 1
                    if opts.on_bad_row == "warn":
                        log(f"warning: {msg} (row skipped)")
                stats.consumed += cut
                if opts.flush_each_batch:
                    writer.stream.flush()
                if bad and opts.on_bad_row == "error":
                    out.bad_row = bad[0][1]
                    break
                now = time.perf_counter()
                if opts.checkpoint and ((every and stats.consumed % every == 0)
                                        or (opts.checkpoint_seconds and now - last_ck >= opts.checkpoint_seconds)):
                    checkpoint()
                if opts.progress and now - last_progress > 0.25:
                    last_progress = now
                    rate = (stats.rows - out.rows_before) / max(now - t0, 1e-9)
                    mae = f"  MAE {stats.mae:.4g}" if stats.scored else ""
                    sys.stderr.write(f"\r\033[K{stats.rows:,} rows  {rate:,.0f} rows/s{mae}")
                    sys.stderr.flush()
        except Stop as stop:
            out.stopped_by = stop.signum
        finally:
            if isinstance(blocks, _Prefetch):
                blocks.close()
            if opts.progress:
                sys.stderr.write("\r\033[K")
                sys.stderr.flush()
        out.elapsed = time.perf_counter() - t0
        # everything above is emitted; now make it durable
        try:
            writer.stream.flush()
        except BrokenPipeError:
            raise
        if opts.checkpoint:
            checkpoint()
        if opts.save and out.stopped_by is None and out.bad_row is None:
            save_file(opts.save, engine, stats, header)
    return out


def _blocks(reader: RecordReader, schema: Schema, opts: RunOptions, consumed: int) -> Iterator[tuple[Block, list[tuple[int, str]], int]]:
    """``(typed block, bad rows, records consumed)`` until the input ends.

    Blocks end at multiples of ``checkpoint_every`` input records, so that a checkpoint
    falls exactly there."""
    every = opts.checkpoint_every
    while True:
        n = opts.block_size
        if every:
            n = min(n, every - consumed % every)
        plain = reader.next_plain(n) if schema.compiled else None
        if plain is not None:  # plain lines as bytes, for the compiled parser
            blk, bad = schema.parse_plain(*plain)
            cut = plain[2]
        else:
            lines, recs = reader.next_batch(n)
            if not recs:
                return
            blk, bad = schema.parse(lines, recs)
            cut = len(recs)
        yield blk, bad, cut
        consumed += cut


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


def summary(out: Outcome, what: str = "rows") -> str:
    s = out.stats
    here = s.rows - out.rows_before
    rate = here / out.elapsed if out.elapsed > 0 else 0.0
    resumed = f" ({here:,} in this run)" if out.rows_before else ""
    parts = [f"{s.rows:,} {what}{resumed} in {out.elapsed:.2f} s ({rate:,.0f} rows/s)"]
    parts.append(f"{out.engine.learned:,} learned, {s.skipped:,} skipped, {s.unlabelled:,} without a target")
    if out.engine.keyed:
        parts.append(f"{out.engine.n_keys:,} keys")
    line = "; ".join(parts)
    if s.scored:
        line += f"\nMAE {s.mae:.6g}, RMSE {s.rmse:.6g} over {s.scored:,} scored rows"
    return line


def plot(path: str, actual: np.ndarray, predicted: np.ndarray, title: str, pred_label: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = np.arange(len(actual))
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(11, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax1.plot(t, actual, lw=0.9, label="actual")
    ax1.plot(t, predicted, lw=0.9, label=pred_label)
    ax1.set_title(title)
    ax1.legend(loc="best")
    ax2.plot(t, actual - predicted, lw=0.7, color="tab:red")
    ax2.axhline(0, color="k", lw=0.5)
    ax2.set_ylabel("error")
    ax2.set_xlabel("row")
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=110)
    except OSError as exc:
        raise CliError(f"cannot write the plot {path}: {exc.strerror or exc}", 1) from None
    finally:
        plt.close(fig)
