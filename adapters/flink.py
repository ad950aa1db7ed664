"""Apache Flink adapter: serve, learn or forecast per key with streamlstm in a keyed PyFlink job.

Pipeline (PyFlink 2.x DataStream API)::

    FileSource(text lines "key,time,x1..xn[,y1..ym]")    records its read position in checkpoints;
                                                          bounded, or watching its directories (--follow)
      (or any DataStream of such lines: build_model_pipeline(env, stream, None, model))
      -> key_by(key)
      -> ModelProcessFunction (KeyedProcessFunction)
           per key:    the engine's state as bytes in a ValueState (PICKLED_BYTE_ARRAY)
           per subtask: the engine, built in open() from the saved model (OnlineLSTM.save)
                        or, with --ahead, from the forecasting settings
      -> FileSink(lines "key,time,prediction[,error]")     exactly-once: a part file per checkpoint,
                                                          published when the checkpoint completes

Three engines (see ``docs/flink.md``):

* :class:`ServingEngine` (default): one shared, frozen model per subtask (a
  :class:`~streamlstm.KeyedLSTM` with ``update_input_stats=False``); each key's recurrent
  state (h, c) is the core's versioned ``KeyedLSTM.state_bytes`` blob in Flink keyed state.
* :class:`LearningEngine` (``--learn``): each key has its own model (weights, state,
  optimizer moments, normalisers), initialised from the saved model and stored as
  ``OnlineLSTM.to_bytes()`` in Flink keyed state; it learns from every labelled row.
* :class:`ForecastingEngine` (``--ahead H``): each key has its own core forecasting engine
  (:class:`~streamlstm.Forecaster`, ``to_bytes()`` in Flink keyed state) fed the rows'
  target values ``key,time[,x1..xn],y``; it writes ``key,time,forecast_t+H`` per row.

``--interval LEVEL`` (repeatable) and ``--anomaly`` add ``lo_LEVEL,hi_LEVEL`` and
``anomaly_score`` columns with every engine, per key: the core's calibrator
(``OnlineCalibrator`` through ``ForecastCalibration``; with ``--ahead`` the forecaster's own
``forecast_interval``) and ``AnomalyScorer``, their per-key state in Flink state next to the
model's. The adapter only routes rows and (de)serialises state: every number is the core's.

Everything that changes while the job runs is in Flink state, so checkpoints, restarts and
savepoints keep it exactly (rescaling moves it with its key). Learning ONE set of weights
shared by all keys is deliberately not offered: those weights would live in each worker's
memory, outside Flink state, would not be checkpointed (a restart would replay events into
already-updated weights) and would diverge between parallel workers, which each see only
their own keys.

Input rows (serving, learning): ``key,time`` then the model's ``n_inputs`` values,
optionally followed by the target (``n_outputs`` values, or one class index for a
``cross_entropy`` model; empty target fields = no target). Output rows:
``key,time,prediction[,error]``, the prediction being the model's output after the row's
inputs (class probabilities for ``cross_entropy``), error = target - prediction
(``-ln p[target]`` for ``cross_entropy``), only when the row has a target; with
``--interval``/``--anomaly`` always ``key,time,prediction,error,lo_L,hi_L...,anomaly_score``
(empty cells: nothing known). The forecasting engine's columns: :func:`forecasting_columns`.
Floats are written in round-trip ``repr``.

Environment facts this module encodes (PyFlink 2.3.0, Java 17, Python 3.11):
* Run it from a venv holding apache-flink (it pins numpy<2.2): see .ci/flink-setup.sh.
* Locally, ``python.executable`` must name that venv's interpreter, else process-mode
  workers run ``python`` from PATH and fail; with checkpointing on, Flink then retries for
  ever unless a restart strategy is set. ``make_env`` sets both (under ``flink run`` it
  leaves ``python.executable`` to ``-pyexec`` / the cluster's configuration).
* Thread mode (pemja, the Python interpreter embedded in the JVM) ignores the venv: it finds
  pyflink/numpy only through PYTHONPATH (and the editable streamlstm only if the venv's .pth
  files run: PYTHONUSERBASE), both set before the JVM starts (``prepare_worker_environment``).
  Thread mode also breaks on PRIMITIVE_ARRAY(BYTE) state (None -> TypeError, values come
  back as tuples of ints), so state is PICKLED_BYTE_ARRAY, which gives ``bytes`` in both modes.
* Process mode keeps a Python-side state cache (``python.state.cache-size``, 1000 keys by
  default); past it state accesses cross gRPC (a no-op job fell from ~10k to ~1.3k
  events/s going from 50 to 5000 keys). Thread mode reads the JVM state backend directly.
* Real process workers (a cluster; locally ``_python_worker_execution_mode=process``) replace
  ``builtins.print`` before user code is imported; ``streamlstm/__init__.py`` restores it
  before numba is imported (numba's import fails otherwise).
* A Python ``KeyedProcessFunction`` has no end-of-bundle and no pre-checkpoint hook, so an
  event's new state must be in Flink state when ``process_element`` returns: no batching
  across events. The engines instead memoise each recent key's loaded state (or decoded
  model / forecaster) by the exact bytes it was written as, reloading whenever Flink hands
  back other bytes (safe with checkpoints: Flink state stays the only source of truth).

The module starts no JVM on import and needs pyflink only to run a job (without it,
``ModelProcessFunction`` is a plain class, so the doctests run in any environment):

>>> parse_line("sensor-1,2024-01-01T00:00,0.5,1.5")
('sensor-1', '2024-01-01T00:00', (0.5, 1.5))
>>> format_output("sensor-1", "t0", 0.25, -0.5)
'sensor-1,t0,0.25,-0.5'
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import logging
import math
import os
import re
import signal
import site
import struct
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

__all__ = [
    "ForecastingEngine",
    "LearningEngine",
    "ModelProcessFunction",
    "ServingEngine",
    "build_model_pipeline",
    "build_pipeline",
    "file_sink",
    "file_source",
    "forecasting_columns",
    "forecasting_engine",
    "format_output",
    "learning_engine",
    "main",
    "make_env",
    "parse_line",
    "prepare_worker_environment",
    "read_output",
    "run_csv_job",
    "run_until_stopped",
    "serving_engine",
    "state_ttl_config",
    "stop_with_savepoint",
]

_log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------
# records

def _key_of(line: str) -> str:
    i = line.find(",")
    return line if i < 0 else line[:i]


def parse_line(line: str):
    """``"key,time,v1[,v2,...]"`` -> ``(key, time, (v1, v2, ...))``; time stays a string."""
    parts = line.rstrip("\r\n").split(",")
    if len(parts) < 3:
        raise ValueError(f"expected 'key,time,value[,...]', got {line!r}")
    return parts[0], parts[1], tuple(float(p) for p in parts[2:])


def _fmt(x) -> str:
    if isinstance(x, (list, tuple)) or getattr(x, "ndim", 0) > 0:
        return ",".join(repr(float(v)) for v in x)
    return repr(float(x))


def format_output(key: str, t: str, prediction, error=None) -> str:
    """``key,time,prediction[,...][,error[,...]]`` (floats in round-trip repr)."""
    s = f"{key},{t},{_fmt(prediction)}"
    if error is not None:
        s += "," + _fmt(error)
    return s


class BadRow(ValueError):
    """A row that cannot be fed to the model (wrong field count, not a number, not finite)."""


class _Rows:
    """Splits rows for one model: ``key,time,x1..xn[,y1..ym]``; formats the results."""

    def __init__(self, model) -> None:
        import numpy as np

        self._np = np
        self.n_in = model.n_inputs
        self.ce = model.loss == "cross_entropy"
        self.n_y = 1 if self.ce else model.n_outputs
        self.scalar = model.n_outputs == 1 and not self.ce

    def zero_x(self):
        return self._np.zeros(self.n_in)

    def zero_y(self):
        return 0.0 if self.n_y == 1 else self._np.zeros(self.n_y)

    def split(self, line: str):
        """-> (key, time, x: float64 array, y: float | array | None); BadRow if unusable."""
        parts = line.rstrip("\r\n").split(",")
        n = len(parts) - 2
        n_in = self.n_in
        if n != n_in and n != n_in + self.n_y:
            raise BadRow(f"expected key,time + {n_in} input(s) [+ {self.n_y} target value(s)], "
                         f"got {max(n, 0)} value(s)")
        try:
            x = self._np.array(parts[2:2 + n_in], dtype=self._np.float64)
            y = None
            if n > n_in:
                ys = parts[2 + n_in:]
                if all(not s.strip() for s in ys):
                    y = None  # empty target fields: no label
                elif self.n_y == 1:
                    y = float(ys[0])
                else:
                    y = self._np.array(ys, dtype=self._np.float64)
        except ValueError as exc:
            raise BadRow(str(exc)) from None
        return parts[0], parts[1], x, y

    def output(self, key: str, t: str, pred, y, cells: list[float] | None = None) -> str:
        if cells is not None:  # --interval / --anomaly: fixed columns, an empty error cell without a target
            error = "" if y is None else _cell(y - pred)
            return ",".join([key, t, _cell(pred), error, *(_cell(v) for v in cells)])
        if y is None:
            return format_output(key, t, pred)
        if self.ce:
            p = float(pred[int(y)])
            return format_output(key, t, pred, -math.log(p) if p > 0.0 else math.inf)
        return format_output(key, t, pred, y - pred)


# --------------------------------------------------------------------------------------
# the engines

_MODELS: dict = {}  # (path, size, mtime) -> OnlineLSTM, read once per worker process
_MODELS_LOCK = threading.Lock()


def _load_model(model):
    """A private OnlineLSTM from a model file path (read once per process) or model bytes."""
    from streamlstm.model import OnlineLSTM

    if isinstance(model, OnlineLSTM):
        return model.copy()
    if isinstance(model, (bytes, bytearray, memoryview)):
        return OnlineLSTM.from_bytes(bytes(model))
    path = os.path.abspath(os.fspath(model))
    st = os.stat(path)
    key = (path, st.st_size, st.st_mtime_ns)
    with _MODELS_LOCK:
        master = _MODELS.get(key)
        if master is None:
            master = _MODELS[key] = OnlineLSTM.load(path)
        return master.copy()  # every engine mutates its own copy's scratch buffers


class _Engine:
    """Common part: bad-row policy. ``process(state, line) -> (new_state | None, output | None)``."""

    def __init__(self, on_bad_row: str) -> None:
        if on_bad_row not in ("fail", "skip"):
            raise ValueError(f"on_bad_row must be 'fail' or 'skip', got {on_bad_row!r}")
        self.on_bad_row = on_bad_row
        self.n_bad = 0

    _unc: _KeyUncertainty | None = None

    def _setup_uncertainty(self, uncertainty: str | dict | None, model) -> None:
        levels, anomaly = _uncertainty_of(uncertainty)
        self._unc = _KeyUncertainty(levels, anomaly, model) if levels or anomaly else None

    def _open_state(self, key: str, state: bytes):
        """A key's state from Flink -> (the model's part, the uncertainty floats, checked and
        swapped in); without ``--interval`` / ``--anomaly`` the state is the model's alone."""
        unc = self._unc
        if unc is None:
            return state, None
        head = _KEY_STATE_HEADER.size
        magic, version, n_bytes = _KEY_STATE_HEADER.unpack_from(state) if len(state) >= head else (b"", 0, 0)
        if magic != _KEY_STATE_MAGIC or version != 1 or n_bytes not in unc.accepted_bytes or len(state) < head + n_bytes:
            raise RuntimeError(f"key {key!r}: its state in Flink does not hold this job's --interval / --anomaly "
                               f"state ({'another layout' if magic == _KEY_STATE_MAGIC else 'none'}: {n_bytes} bytes "
                               f"of it, this job's {unc.n_bytes}); was the job resumed with other options?")
        flat = unc._np.frombuffer(state, dtype="<f8", count=n_bytes // 8, offset=head).copy()
        try:
            unc.load_checked(flat)
        except ValueError as exc:
            raise RuntimeError(f"key {key!r}: {exc}") from None
        return state[head + n_bytes:], flat

    def _close_state(self, model_state: bytes, flat) -> bytes:
        """The bytes that go back to Flink: the model's alone, or with the uncertainty floats."""
        if flat is None:
            return model_state
        return b"".join((_KEY_STATE_HEADER.pack(_KEY_STATE_MAGIC, 1, flat.nbytes), flat.tobytes(), model_state))

    def _uncertain(self, flat, checked: bool, pred, y):
        """The row's extra cells and the key's new uncertainty floats (``[], None`` without)."""
        unc = self._unc
        if unc is None:
            return [], None
        if not checked:  # a fresh key's, or the memo's (this engine's own) floats
            unc.install(unc.fresh if flat is None else flat)
        cells = unc.cells(float(pred), y)
        return cells, unc.export()

    def _bad(self, line: str, exc: Exception):
        if self.on_bad_row == "fail":
            raise BadRow(f"bad row {line.rstrip()!r}: {exc}") from None
        self.n_bad += 1
        if self.n_bad <= 10 or self.n_bad % 10000 == 0:
            _log.warning("streamlstm: skipped bad row %r (%s); %d skipped so far", line.rstrip()[:200], exc,
                         self.n_bad)
        return None, None


# A serving / learning key's state with --interval / --anomaly: this header, then the
# uncertainty floats (a fixed count for the job's options), then the model's own state bytes.
_KEY_STATE_HEADER = struct.Struct("<8sII")   # magic, layout version, bytes of uncertainty floats
_KEY_STATE_MAGIC = b"SLSTMUNC"


class _KeyUncertainty:
    """``--interval`` / ``--anomaly`` of the serving and learning engines, one key at a time.

    Per key (in its Flink state, next to the model's): the state of an interval calibrator
    with that key alone (the core's ``OnlineCalibrator`` with pooled trackers, as a
    ``ForecastCalibration`` row, the CLI's ``--interval`` per key and a key's
    ``Forecaster`` use) and the ``AnomalyScorer``'s key state, as one flat float64 array.
    Order within a row, as in the CLI's regression (``adapters/_uncertainty.py``): the
    interval around the prediction is taken first (none before the key's first residual),
    then the residual ``y - prediction`` is folded in and the value scored against the
    prediction. The engines swap each key's array in and out of this one scratch key.
    """

    def __init__(self, levels: Sequence[float], anomaly: bool, model) -> None:
        import numpy as np

        from streamlstm import AnomalyScorer
        from streamlstm.forecasting.intervals import ForecastCalibration

        self._np = np
        self.levels = tuple(float(v) for v in levels)
        if model.n_outputs != 1 or model.loss == "cross_entropy":
            raise ValueError("--interval / --anomaly need a model with one numeric output (regression), this one has "
                             f"{model.n_outputs} output(s) and loss {model.loss!r}")
        self.cal = ForecastCalibration(self.levels, 1) if self.levels else None
        self.scorer = AnomalyScorer() if anomaly else None
        self._parts = []   # the scratch state arrays, each all of one key's (calibrator: its row + the pool row)
        if self.cal is not None:
            self.cal.row(None)
            self._parts.append(self.cal.calibrator.state)
        if self.scorer is not None:
            self._parts.append(self.scorer.calibrator.state)
        self._sizes = [a.size for a in self._parts]
        self.fresh = self.export()
        self.n_bytes = self.fresh.nbytes
        # the calibrator's floats as the version before its candidate scale rates wrote them
        # (2 floats per rate fewer in each row; ``load_checked`` widens them): accepted too
        cal = None if self.cal is None else self.cal.calibrator
        self._older_cal_size = 0 if cal is None else cal.state.size // cal.width * (cal.width - 2 * len(cal.scale_rates))
        self.accepted_bytes = {self.n_bytes, self.n_bytes - 8 * (self._sizes[0] - self._older_cal_size)}
        self._nan = [math.nan, math.nan] * len(self.levels)

    def export(self):
        """The scratch key's state as one new flat float64 array."""
        return self._np.concatenate([a.reshape(-1) for a in self._parts])

    def install(self, flat) -> None:
        """Copy a flat array this object exported into the scratch key (no checks)."""
        at = 0
        for a, n in zip(self._parts, self._sizes):
            a.reshape(-1)[:] = flat[at:at + n]
            at += n

    def load_checked(self, flat) -> None:
        """Install a key's flat array from Flink after the core's checks (shape, finiteness,
        counts, scales: ``ValueError`` naming what is wrong)."""
        from streamlstm.forecasting.intervals import STATE_ARRAY

        at = 0
        if self.cal is not None:
            rows, steps, _ = self.cal.calibrator.state.shape
            older = self._older_cal_size   # a key written before the candidate scale rates
            size = older if flat.size == older + sum(self._sizes[1:]) and older != self._sizes[0] else self._sizes[0]
            if flat.size < size + sum(self._sizes[1:]):
                raise ValueError(f"a key's interval state holds {flat.size} floats, expected {sum(self._sizes)}")
            self.cal.load([None], {STATE_ARRAY: flat[at:at + size].reshape(rows, steps, size // (rows * steps))})
            at += size
        if self.scorer is not None:
            self.scorer.set_key_state(0, flat[at:].reshape(self.scorer.calibrator.state.shape[1:]))

    def cells(self, pred: float, y: float | None) -> list[float]:
        """The row's bounds per level (NaN before the key's first residual) and its score
        (NaN without a target); updates the scratch key (the calibrator's one-step fast
        paths, the numbers of ``ForecastCalibration.bounds`` / ``observe``)."""
        out: list[float] = []
        if self.cal is not None:
            cal = self.cal.calibrator
            if cal.n_seen(0, 0):
                lower, upper = cal.interval(pred, 0)
                for lo, hi in zip(lower.tolist(), upper.tolist()):
                    out += [lo, hi]
            else:
                out += self._nan
            if y is not None:
                cal.update(y - pred, 0)
        if self.scorer is not None:
            out.append(math.nan if y is None else self.scorer.score(y, pred, 0))
        return out


def _uncertainty_of(spec: str | dict | None) -> tuple[tuple[float, ...], bool]:
    """``--interval`` levels and ``--anomaly`` from an engine argument (JSON, or a dict)."""
    import json

    d = spec if isinstance(spec, dict) else (json.loads(spec) if spec else {})
    return tuple(float(v) for v in d.get("interval", ())), bool(d.get("anomaly", False))


class ServingEngine(_Engine):
    """Frozen shared model; per key the core's ``KeyedLSTM.state_bytes`` (h and c).

    The input statistics are frozen (``update_input_stats=False``): shared statistics that
    moved with every event would be worker memory outside Flink state, so a restart would
    not restore them and two subtasks would drift apart. A key's predictions then depend
    only on the model file and that key's own events, in order.

    Recently seen keys (LRU, about ``cache_mb`` MB) also keep a row in the engine's
    ``KeyedLSTM`` together with the bytes that row was last written to Flink as; an event
    whose state in Flink equals those bytes skips reloading the row (``set_state_bytes``),
    any other bytes (a restore, a rescale, an evicted key) are loaded. Flink state stays
    the only source of truth, so this is exact with checkpoints.

    ``uncertainty``: ``{"interval": [levels], "anomaly": bool}`` (or its JSON) adds the
    key's calibrated interval of each prediction and its anomaly score
    (``key,time,prediction,error,lo_L,hi_L...,anomaly_score``; ``docs/flink.md``).

    >>> from streamlstm import OnlineLSTM
    >>> engine = ServingEngine(OnlineLSTM(n_inputs=1, hidden=4).to_bytes())
    >>> state, out = engine.process(None, "a,1,0.5,2.0")       # the row carries a target
    >>> len(state), out.count(",")                           # 32-byte header + h + c; key,time,pred,err
    (96, 3)
    >>> engine.process(state, "a,2,0.5")[0] != engine.process(None, "a,2,0.5")[0]   # the key's memory
    True
    """

    def __init__(self, model, on_bad_row: str = "fail", cache_mb: float = 64.0,
                 uncertainty: str | dict | None = None) -> None:
        super().__init__(on_bad_row)
        from streamlstm.keyed import KeyedLSTM

        m = _load_model(model)
        m.reset_state()
        self.model = m
        self._rows = _Rows(m)
        self._setup_uncertainty(uncertainty, m)
        self._keyed = KeyedLSTM(m, learn=False, update_input_stats=False)
        self._keyed.set_state(0, m.state)
        self.zero_state = self._keyed.state_bytes(0)
        self._keyed.step_one(0, self._rows.zero_x())  # compile / load the kernels in open(),
        self._keyed.state_bytes(0)                     # not on the first event
        self._keyed.forget(0)
        per_key = 2 * len(self.zero_state) + 400  # row + bytes + dict entries, roughly
        self.cache_keys = int(max(0.0, float(cache_mb)) * 2 ** 20 // per_key)
        self._memo: OrderedDict = OrderedDict()  # key -> (the bytes its row in _keyed holds, uncertainty)
        self.n_loaded = 0

    def process(self, state: bytes | None, line: str):
        try:
            key, t, x, y = self._rows.split(line)
        except BadRow as exc:
            return self._bad(line, exc)
        k = self._keyed
        if not self.cache_keys:  # no memo: one scratch row (key 0) whose state is swapped in
            rk, last = 0, None
        else:
            rk, last = key, self._memo.pop(key, None)
        checked = False
        if last is None or state is None or last[0] != state:
            model_state, arrays = (self.zero_state, None) if state is None else self._open_state(key, state)
            checked = arrays is not None
            try:
                k.set_state_bytes(rk, model_state)
            except ValueError as exc:
                k.forget(rk)
                raise RuntimeError(f"key {key!r}: its state in Flink does not fit this model ({exc}); "
                                   "was the job resumed with a model of another shape?") from None
            self.n_loaded += 1
        else:
            arrays = last[1]
        try:
            pred = k.step_one(rk, x)
        except ValueError as exc:
            k.forget(rk)
            return self._bad(line, exc)
        cells, arrays = self._uncertain(arrays, checked, pred, y)
        blob = self._close_state(k.state_bytes(rk), arrays)
        if self.cache_keys:
            self._memo[key] = (blob, arrays)
            if len(self._memo) > self.cache_keys:
                k.forget(self._memo.popitem(last=False)[0])
        return blob, self._rows.output(key, t, pred, y, cells if self._unc is not None else None)


class LearningEngine(_Engine):
    """Per key its own model (``OnlineLSTM.to_bytes()`` in Flink state), learning online.

    A new key starts from the saved model with a zero recurrent state. A row with a target
    is ``learn_one(x, y)`` (the prediction is the one made before learning), a row without
    one ``advance(x)``. After every event the key's whole model goes back into Flink state.

    Decoded models are memoised (LRU, about ``cache_mb`` MB) by the exact state bytes they
    were encoded to: an event whose state in Flink equals the memo's bytes reuses the
    decoded model, anything else (a restore, a rescale, an evicted key) decodes the bytes
    from Flink. Flink state stays the only source of truth, so this is exact with
    checkpoints; it saves ``from_bytes`` (the larger half of the serialisation cost).
    ``uncertainty``: as in :class:`ServingEngine`.

    >>> from streamlstm import OnlineLSTM
    >>> engine = LearningEngine(OnlineLSTM(n_inputs=1, hidden=4).to_bytes())
    >>> state, out = engine.process(None, "a,1,0.5,2.0")
    >>> OnlineLSTM.from_bytes(state).n_updates
    1
    """

    def __init__(self, model, on_bad_row: str = "fail", cache_mb: float = 64.0,
                 uncertainty: str | dict | None = None) -> None:
        super().__init__(on_bad_row)
        from streamlstm.model import OnlineLSTM

        self._from_bytes = OnlineLSTM.from_bytes
        m = _load_model(model)
        m.reset_state()
        self._setup_uncertainty(uncertainty, m)
        self.template = m
        self._shape = _shape_of(m)
        self.initial_state = m.to_bytes()
        self._rows = _Rows(m)
        per_entry = 2 * len(self.initial_state)  # the bytes + the decoded model, roughly
        self.cache_keys = int(max(0.0, float(cache_mb)) * 2 ** 20 // per_entry)
        self._cache: OrderedDict = OrderedDict()
        self.n_decoded = 0
        warm = m.copy()  # compile / load the kernels in open(), not on the first event
        warm.advance(self._rows.zero_x())
        warm.learn_one(self._rows.zero_x(), self._rows.zero_y())
        self._from_bytes(warm.to_bytes())

    def process(self, state: bytes | None, line: str):
        try:
            key, t, x, y = self._rows.split(line)
        except BadRow as exc:
            return self._bad(line, exc)
        hit = self._cache.pop(key, None)  # out of the memo while the model may change
        checked = False
        if hit is not None and state is not None and hit[0] == state:
            model, arrays = hit[1:]
        elif state is None:
            model, arrays = self.template.copy(), None
        else:
            model_state, arrays = self._open_state(key, state)
            checked = arrays is not None
            try:
                model = self._from_bytes(model_state)
            except ValueError as exc:
                raise RuntimeError(f"key {key!r}: its state in Flink is not a streamlstm model ({exc})") from None
            if _shape_of(model) != self._shape:
                raise RuntimeError(f"key {key!r}: its state in Flink is a model of another shape "
                                   f"{_shape_of(model)}, this job's is {self._shape} (n_inputs, n_outputs, "
                                   "hidden, layers, cell, bptt, loss, dtype): was the job resumed with "
                                   "another model?")
            self.n_decoded += 1
        try:
            pred = model.advance(x) if y is None else model.learn_one(x, y)
        except ValueError as exc:
            return self._bad(line, exc)  # the (possibly touched) model is dropped
        cells, arrays = self._uncertain(arrays, checked, pred, y)
        blob = self._close_state(model.to_bytes(), arrays)
        if self.cache_keys:
            self._cache[key] = (blob, model, arrays)
            if len(self._cache) > self.cache_keys:
                self._cache.popitem(last=False)
        return blob, self._rows.output(key, t, pred, y, cells if self._unc is not None else None)


def _shape_of(model) -> tuple:
    """What a key's model must share with the job's: its inputs, outputs and layout."""
    return (model.n_inputs, model.n_outputs, model.hidden, model.layers, model.cell, model.bptt, model.loss,
            model.dtype)


def serving_engine(model, on_bad_row: str = "fail", cache_mb="64", uncertainty: str = "") -> ServingEngine:
    """Engine factory for ``--engine``: ``model`` is a model file path or model bytes;
    ``uncertainty``: JSON ``{"interval": [levels], "anomaly": bool}`` (empty: neither)."""
    return ServingEngine(model, on_bad_row, float(cache_mb), uncertainty or None)


def learning_engine(model, on_bad_row: str = "fail", cache_mb="64", uncertainty: str = "") -> LearningEngine:
    """Engine factory for ``--engine``: per-key learning models (see :class:`LearningEngine`)."""
    return LearningEngine(model, on_bad_row, float(cache_mb), uncertainty or None)


# --------------------------------------------------------------------------------------
# the forecasting engine

FORECASTING_KIND = "streamlstm.flink.ForecastingKey"


def forecasting_columns(ahead: int, interval: Sequence[float] = (), anomaly: bool = False) -> list[str]:
    """The names of the forecasting engine's output columns, in order (its rows carry no
    header): ``key``, ``time``, ``forecast_t+H``, then ``lo_<level>``, ``hi_<level>`` per
    ``--interval`` level (in the order given) and ``anomaly_score`` with ``--anomaly``.

    >>> forecasting_columns(3, [0.8, 0.95], True)
    ['key', 'time', 'forecast_t+3', 'lo_0.8', 'hi_0.8', 'lo_0.95', 'hi_0.95', 'anomaly_score']
    """
    from streamlstm.adapters._uncertainty import column_names

    return ["key", "time", f"forecast_t+{int(ahead)}", *column_names(interval, anomaly)]


def _cell(v: float) -> str:
    """A float in round-trip repr; NaN (nothing known yet) as an empty cell, like the CLI."""
    return "" if v != v else repr(float(v))


class ForecastingEngine(_Engine):
    """Per key its own :class:`streamlstm.Forecaster` (``--ahead H``), with the key's
    intervals (``--interval``) and anomaly scores (``--anomaly``), all in Flink state.

    Input rows: ``key,time[,x1..xn],y`` (``n_features`` exogenous features, then the
    target; an empty or absent target means "no value"). A row with a value is
    ``learn_one(y, x)`` on the key's forecaster; every row then writes
    ``key,time,forecast_t+H[,lo_L,hi_L ...][,anomaly_score]`` (:func:`forecasting_columns`),
    with the meaning of the CLI's columns of the same names (``streamlstm run --ahead H``):

    * ``forecast_t+H``: ``forecast(xs=[x] * H)[H - 1]`` after the row, the forecast for the
      key's row H rows later (the row's features stand for those of the times forecast);
    * ``lo_L``, ``hi_L``: ``forecast_interval``'s bounds of that forecast (step H),
      calibrated on the key's own residuals inside its forecaster;
    * ``anomaly_score``: the core's :class:`~streamlstm.AnomalyScorer` (one state per key)
      scoring the row's value against the forecast made for it H rows earlier.

    Empty cells: nothing known yet (a key's rows before its first value; bounds before the
    key's first residual of step H; a score without a value or an earlier forecast). A row
    without a value does not step the forecaster and repeats its forecast (with the row's
    features), as the CLI does.

    A key's Flink state is one versioned container (``streamlstm.persistence``): the
    forecaster's own bytes (``Forecaster.to_bytes``), its last H forecasts (to score the
    value each was made for) and the scorer's state (``AnomalyScorer.key_state``). Decoded
    forecasters are memoised by the exact bytes they were written as (LRU, about
    ``cache_mb`` MB), as in :class:`LearningEngine`.

    ``params``: further :class:`~streamlstm.Forecaster` settings (``season``, ``lstm``,
    ``seed`` ...); ``horizon``, ``n_features`` and ``interval_levels`` come from ``ahead``,
    ``n_features`` and ``interval``.

    >>> engine = ForecastingEngine(ahead=2, interval=[0.9], anomaly=True, params={"lstm": False})
    >>> state, out = engine.process(None, "a,1,10.0")
    >>> out                           # no residual yet: empty bounds, no earlier forecast: no score
    'a,1,10.0,,,'
    >>> state, out = engine.process(state, "a,2,11.0")
    >>> len(out.split(",")) == len(forecasting_columns(2, [0.9], True))
    True
    """

    def __init__(self, ahead: int = 1, interval: Sequence[float] = (), anomaly: bool = False, n_features: int = 0,
                 params: dict | None = None, on_bad_row: str = "fail", cache_mb: float = 64.0) -> None:
        super().__init__(on_bad_row)
        import numpy as np

        from streamlstm import AnomalyScorer, Forecaster, persistence
        from streamlstm.forecasting.engine import EARLIER_DEFAULTS

        self._np = np
        self._persistence = persistence
        self._forecaster_from_bytes = Forecaster.from_bytes
        if not isinstance(ahead, int) or isinstance(ahead, bool) or ahead < 1:
            raise ValueError(f"ahead must be an integer >= 1, got {ahead!r}")
        if not isinstance(n_features, int) or isinstance(n_features, bool) or n_features < 0:
            raise ValueError(f"n_features must be an integer >= 0, got {n_features!r}")
        given = dict(params or {})
        for name in ("horizon", "n_features", "interval_levels"):
            if name in given:
                raise ValueError(f"params: give {name!r} as ahead / n_features / interval, not in params")
        self.H = ahead
        self.n_features = n_features
        self.levels = tuple(float(v) for v in interval)
        self.anomaly = bool(anomaly)
        template = Forecaster(horizon=ahead, n_features=n_features, interval_levels=self.levels, **given)
        self.params = template.get_params()     # every setting: a key's forecaster must have these
        # ... or, for a setting this job leaves at its default, the default of an earlier
        # version (a savepoint written before it changed: its keys go on as they were made)
        self._earlier = {k: v for k, v in EARLIER_DEFAULTS.items() if k not in given}
        self._new = lambda: Forecaster(**self.params)
        self._scorer = AnomalyScorer() if self.anomaly else None
        self._no_score = None if self._scorer is None else self._scorer.key_state(0)  # a fresh key's
        self.columns = forecasting_columns(ahead, self.levels, self.anomaly)
        self._empty = "," * (len(self.columns) - 3)
        self.n_decoded = 0
        blob = self._encode(template, np.full(ahead, np.nan), self._no_score)
        per_entry = 2 * len(blob)  # the bytes + the decoded forecaster, roughly
        self.cache_keys = int(max(0.0, float(cache_mb)) * 2 ** 20 // per_entry)
        self._cache: OrderedDict = OrderedDict()
        self._warm_up()

    def _warm_up(self) -> None:
        """Compile / load every kernel a key's events call, in ``open()``, not on the first event."""
        twin = self._new()
        x = self._np.zeros(self.n_features) if self.n_features else None
        for t in range(40):
            twin.learn_one(1.0 + 0.1 * (t % 5), x)
        twin.forecast_interval() if self.levels else twin.forecast()
        self._decode("warm-up", self._encode(twin, self._np.zeros(self.H), self._no_score))
        if self._scorer is not None:
            self._scorer.score(1.0, 0.5)
            self._scorer.set_key_state(0, self._no_score)

    # ------------------------------------------------------------------ key state
    def _encode(self, model, ring, scorer_state) -> bytes:
        np = self._np
        arrays = {"forecaster": np.frombuffer(model.to_bytes(), dtype=np.uint8), "ring": ring}
        if scorer_state is not None:
            arrays["anomaly"] = scorer_state
        return self._persistence.dumps(FORECASTING_KIND, {}, arrays)

    def _decode(self, key: str, state: bytes):
        """A key's state from Flink -> (forecaster, last H forecasts, scorer state), every
        part checked against this job's settings (``RuntimeError`` naming the key)."""
        np = self._np
        FormatError = self._persistence.FormatError
        try:
            _, _, arrays = self._persistence.loads(state, expect_kind=FORECASTING_KIND)
            model = self._forecaster_from_bytes(arrays["forecaster"].tobytes())
        except (FormatError, KeyError) as exc:
            raise RuntimeError(f"key {key!r}: its state in Flink is not a forecasting engine's key state ({exc}); "
                               "was the job resumed from another engine's savepoint?") from None
        got = model.get_params()
        diff = sorted(k for k in self.params if got.get(k) != self.params[k])
        if diff and not all(k in self._earlier and got.get(k) == self._earlier[k] for k in diff):
            raise RuntimeError(f"key {key!r}: its forecaster in Flink has other settings than this job's ({diff}: "
                               f"{[model.get_params().get(k) for k in diff]} vs {[self.params[k] for k in diff]}); "
                               "was the job resumed with other --ahead / --features / --interval options?")
        ring = arrays.get("ring")
        if ring is None or ring.dtype != np.float64 or ring.shape != (self.H,) or np.isinf(ring).any():
            got = None if ring is None else f"{ring.dtype} {ring.shape}"
            raise RuntimeError(f"key {key!r}: its last forecasts in Flink are {got}, expected {self.H} float64 "
                               "(finite or NaN)")
        scorer_state = arrays.get("anomaly")
        if (scorer_state is None) != (self._scorer is None):
            raise RuntimeError(f"key {key!r}: its state in Flink was written "
                               f"{'without' if scorer_state is None else 'with'} --anomaly, this job runs "
                               f"{'with' if scorer_state is None else 'without'} it")
        if scorer_state is not None:
            try:
                self._scorer.set_key_state(0, scorer_state)
            except ValueError as exc:
                raise RuntimeError(f"key {key!r}: {exc}") from None
            scorer_state = scorer_state.copy()
        return model, ring.copy(), scorer_state

    # ------------------------------------------------------------------ per event
    def _split(self, line: str):
        parts = line.rstrip("\r\n").split(",")
        n = len(parts) - 2
        if n != self.n_features and n != self.n_features + 1:
            raise BadRow(f"expected key,time + {self.n_features} feature(s) + the target value, got {max(n, 0)} "
                         "value(s)")
        try:
            x = self._np.array(parts[2:2 + self.n_features], dtype=self._np.float64) if self.n_features else None
            y = float(parts[-1]) if n > self.n_features and parts[-1].strip() else None
        except ValueError as exc:
            raise BadRow(str(exc)) from None
        return parts[0], parts[1], x, y

    def process(self, state: bytes | None, line: str):
        np = self._np
        try:
            key, t, x, y = self._split(line)
        except BadRow as exc:
            return self._bad(line, exc)
        hit = self._cache.pop(key, None)  # out of the memo while the forecaster may change
        if hit is not None and state is not None and hit[0] == state:
            model, ring, scorer_state = hit[1:]
        elif state is None:
            if y is None:  # a key's rows before its first value: nothing to forecast from
                return None, f"{key},{t},{self._empty}"
            model, ring, scorer_state = self._new(), np.full(self.H, np.nan), self._no_score
        else:
            model, ring, scorer_state = self._decode(key, state)
            self.n_decoded += 1
        H = self.H
        try:
            if y is not None:
                model.learn_one(y, x)
            xs = None if x is None else [x] * H
            if self.levels:
                point, lower, upper = model.forecast_interval(None, xs)
                bounds = [v for j in range(len(self.levels)) for v in (lower[j, H - 1], upper[j, H - 1])]
            else:
                point, bounds = model.forecast(None, xs), []
        except (ValueError, TypeError) as exc:
            return self._bad(line, exc)  # the (possibly touched) forecaster is dropped
        forecast = float(point[H - 1])
        cells = [_cell(forecast), *(_cell(v) for v in bounds)]
        if self._scorer is not None:
            made_for_this_row = float(ring[0])
            score = math.nan
            if y is not None and made_for_this_row == made_for_this_row:
                self._scorer.set_key_state(0, scorer_state)
                score = self._scorer.score(y, made_for_this_row, 0)
                scorer_state = self._scorer.key_state(0)
            cells.append(_cell(score))
        ring[:-1] = ring[1:]
        ring[-1] = forecast
        blob = self._encode(model, ring, scorer_state)
        if self.cache_keys:
            self._cache[key] = (blob, model, ring, scorer_state)
            if len(self._cache) > self.cache_keys:
                self._cache.popitem(last=False)
        return blob, f"{key},{t}," + ",".join(cells)


def forecasting_engine(settings: str, on_bad_row: str = "fail", cache_mb="64") -> ForecastingEngine:
    """Engine factory for ``--engine``: ``settings`` is a JSON object of
    :class:`ForecastingEngine`'s arguments (``ahead``, ``interval``, ``anomaly``,
    ``n_features``, ``params``)."""
    import json

    return ForecastingEngine(**json.loads(settings), on_bad_row=on_bad_row, cache_mb=float(cache_mb))


def state_digest(state: bytes | None) -> str:
    """A short digest of a state blob (for comparing runs)."""
    return "-" if state is None else hashlib.sha256(state).hexdigest()[:16]


# --------------------------------------------------------------------------------------
# environment

def prepare_worker_environment(
    *,
    work_dir: str | None = None,
    numba_cache_dir: str | None = None,
    extra_pythonpath: Sequence[str] = (),
) -> None:
    """Set the process environment that the JVM and the Python workers inherit.

    Must run before the first PyFlink call of the process (that call starts the JVM).
    * PYTHONPATH (this interpreter's site-packages first, + extras) and PYTHONUSERBASE (this
      venv's prefix, so that the embedded interpreter also runs the venv's .pth files, e.g.
      the editable install of streamlstm): thread mode's pemja interpreter ignores venvs.
      A venv's own python disables the user site, so PYTHONUSERBASE is inert for it.
    * NUMBA_CACHE_DIR: numba's cache in workers (default ``<work_dir>/numba-cache``).
    * TMPDIR, JVM_ARGS=-Djava.io.tmpdir, FLINK_LOG_DIR: keep Flink's files under ``work_dir``
      (if given); otherwise the logs land inside the venv's pyflink/log.
    Existing values are kept (PYTHONPATH is extended, not replaced).
    """
    paths = [*extra_pythonpath, *site.getsitepackages()]
    old = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    merged = []
    for p in [*old, *paths]:
        if p not in merged:
            merged.append(p)
    os.environ["PYTHONPATH"] = os.pathsep.join(merged)
    if sys.prefix != sys.base_prefix:  # in a venv
        os.environ.setdefault("PYTHONUSERBASE", sys.prefix)

    if work_dir is not None:
        work_dir = os.path.abspath(work_dir)
        tmp = os.path.join(work_dir, "tmp")
        logs = os.path.join(work_dir, "log")
        os.makedirs(tmp, exist_ok=True)
        os.makedirs(logs, exist_ok=True)
        os.environ.setdefault("TMPDIR", tmp)
        if "java.io.tmpdir" not in os.environ.get("JVM_ARGS", ""):
            os.environ["JVM_ARGS"] = (os.environ.get("JVM_ARGS", "") + f" -Djava.io.tmpdir={tmp}").strip()
        os.environ.setdefault("FLINK_LOG_DIR", logs)
        if numba_cache_dir is None:
            numba_cache_dir = os.path.join(work_dir, "numba-cache")
    if numba_cache_dir is not None:
        os.makedirs(numba_cache_dir, exist_ok=True)
        os.environ.setdefault("NUMBA_CACHE_DIR", os.path.abspath(numba_cache_dir))


def submitted_by_flink_cli() -> bool:
    """Whether this process was started by ``flink run -py ...`` (it hands us its gateway)."""
    return "PYFLINK_GATEWAY_PORT" in os.environ


def make_env(
    *,
    execution_mode: str = "thread",
    parallelism: int | None = 1,
    checkpoint_interval_ms: int = 1000,
    checkpoint_dir: str | None = None,
    restart_attempts: int = 3,
    restart_delay: str = "1 s",
    bundle_size: int | None = None,
    state_cache_size: int | None = None,
    python_executable: str | None = None,
    savepoint_dir: str | None = None,
    resume_from: str | None = None,
    conf: dict | None = None,
):
    """A StreamExecutionEnvironment with the settings this adapter relies on.

    execution_mode: "thread" (embedded, fastest here) or "process" (Beam workers; the local
    mini-cluster runs them in this process ("loopback") unless the environment variable
    ``_python_worker_execution_mode=process`` asks for real worker processes, which is what a
    cluster does).
    parallelism: None leaves it to the cluster (``flink run -p``) or Flink's default.
    checkpoint_interval_ms <= 0 disables checkpointing.
    checkpoint_dir: None keeps checkpoints in the JobManager's memory (enough for restarts of a
    running job); a path stores them on disk (file://...) so a new job can resume from them
    (they are retained when the job is cancelled: RETAIN_ON_CANCELLATION).
    savepoint_dir: default target of savepoints (``execution.checkpointing.savepoint-dir``).
    resume_from: a savepoint or retained checkpoint (its ``chk-N`` directory) to start from
    (``execution.state-recovery.path``); any parallelism: keyed state is redistributed.
    python_executable: the workers' interpreter; None = this interpreter when run locally,
    and the cluster's / ``flink run -pyexec`` setting when submitted by ``flink run``.
    """
    if execution_mode not in ("thread", "process"):
        raise ValueError(f"execution_mode must be 'thread' or 'process', not {execution_mode!r}")
    from pyflink.common import Configuration
    from pyflink.datastream import StreamExecutionEnvironment

    c = Configuration()
    if python_executable is None and not submitted_by_flink_cli():
        python_executable = sys.executable
    if python_executable is not None:
        c.set_string("python.executable", python_executable)
    if not submitted_by_flink_cli():
        c.set_string("python.client.executable", sys.executable)
    c.set_string("python.execution-mode", execution_mode)
    c.set_string("restart-strategy.type", "fixed-delay")
    c.set_string("restart-strategy.fixed-delay.attempts", str(int(restart_attempts)))
    c.set_string("restart-strategy.fixed-delay.delay", restart_delay)
    if bundle_size is not None:
        c.set_string("python.fn-execution.bundle.size", str(int(bundle_size)))
    if state_cache_size is not None:
        c.set_string("python.state.cache-size", str(int(state_cache_size)))
    if checkpoint_dir is not None:
        c.set_string("execution.checkpointing.storage", "filesystem")
        c.set_string("execution.checkpointing.dir", _as_uri(checkpoint_dir))
        # a cancelled job keeps its last checkpoint, to resume or rescale from
        c.set_string("execution.checkpointing.externalized-checkpoint-retention", "RETAIN_ON_CANCELLATION")
    if savepoint_dir is not None:
        c.set_string("execution.checkpointing.savepoint-dir", _as_uri(savepoint_dir))
    if resume_from is not None:
        c.set_string("execution.state-recovery.path", _as_uri(resume_from))
    for k, v in (conf or {}).items():
        c.set_string(k, str(v))

    env = StreamExecutionEnvironment.get_execution_environment(c)
    if parallelism is not None:
        env.set_parallelism(parallelism)
    if checkpoint_interval_ms > 0:
        env.enable_checkpointing(int(checkpoint_interval_ms))
    return env


def _is_uri(path: str) -> bool:
    # s3://..., hdfs://..., file:///..., and Flink's own "file:/tmp/..." (the form it prints
    # savepoint paths in); a one-letter scheme would be a Windows drive
    return re.match(r"[A-Za-z][A-Za-z0-9+.-]+:", path) is not None


def _as_path(path) -> str:
    """A URI as given (s3://, hdfs://, file:), a local path made absolute."""
    path = os.fspath(path)
    return path if _is_uri(path) else os.path.abspath(path)


def _as_uri(path) -> str:
    path = os.fspath(path)
    return path if _is_uri(path) else "file://" + os.path.abspath(path)


# --------------------------------------------------------------------------------------
# the keyed function

try:  # the module stays importable without pyflink (docs, the dev venv)
    from pyflink.datastream import KeyedProcessFunction as _KPF
except ImportError:  # pragma: no cover
    _KPF = object


class ModelProcessFunction(_KPF):
    """Per key: the engine's state bytes in a ValueState; per subtask: one engine.

    ``engine_factory(*factory_args)`` runs in ``open()`` and returns an object with
    ``process(state: bytes | None, line: str) -> (new_state: bytes | None, output: str | None)``
    (None: leave the state / emit nothing) and optionally ``close()``. ``state`` is None the
    first time a key is seen (and after the key's state expired, see ``state_ttl_ms``). The
    engine must keep nothing per key that it cannot rebuild from ``state``: only the
    ValueState is checkpointed. The factory must be picklable by reference (a module-level
    function importable in the workers).

    ``state_ttl_ms``: a key whose state was not written for this long (processing time) is
    forgotten and starts again from the zero state (Flink's ``StateTtlConfig``, built by
    :func:`state_ttl_config`); None keeps every key for ever.
    """

    STATE_NAME = "streamlstm-state"

    def __init__(self, engine_factory: Callable, *factory_args, state_ttl_ms: int | None = None):
        self._factory = engine_factory
        self._args = tuple(factory_args)
        self._ttl_ms = None if state_ttl_ms is None else int(state_ttl_ms)
        if self._ttl_ms is not None and self._ttl_ms <= 0:
            raise ValueError(f"state_ttl_ms must be > 0 (None: keys never expire), got {state_ttl_ms!r}")
        self._engine = None
        self._state = None

    def open(self, runtime_context):
        from pyflink.common import Types
        from pyflink.datastream.state import ValueStateDescriptor

        descriptor = ValueStateDescriptor(self.STATE_NAME, Types.PICKLED_BYTE_ARRAY())
        if self._ttl_ms is not None:
            descriptor.enable_time_to_live(state_ttl_config(self._ttl_ms))
        self._state = runtime_context.get_state(descriptor)
        # One engine per subtask: subtasks may share a Python process (thread mode runs them
        # on separate JVM threads), and the core's models have scratch buffers.
        self._engine = self._factory(*self._args)

    def process_element(self, value, ctx):
        if not value or value[0] == "#" or not value.strip():
            return
        new_state, out = self._engine.process(self._state.value(), value)
        if new_state is not None:
            self._state.update(new_state)
        if out is not None:
            yield out

    def close(self):
        engine, self._engine = self._engine, None
        if engine is not None and hasattr(engine, "close"):
            engine.close()


# --------------------------------------------------------------------------------------
# job assembly

ROLLING_POLICIES = ("checkpoint", "size")


def state_ttl_config(ttl_ms: int):
    """Flink's ``StateTtlConfig`` for the per-key state: a key idle for ``ttl_ms``
    milliseconds (processing time) expires and starts again from the zero state.

    The state is written on every event, so "not written for ``ttl_ms``" means "no event
    for ``ttl_ms``". Expired bytes are never handed back (``NeverReturnExpired``), even
    before the state backend has cleaned them up (in the background, Flink's default).

    >>> config = state_ttl_config(3_600_000)            # one hour without events
    >>> config.get_ttl().to_milliseconds(), config.get_update_type().name
    (3600000, 'OnCreateAndWrite')
    """
    from pyflink.common import Time
    from pyflink.datastream.state import StateTtlConfig

    return (StateTtlConfig.new_builder(Time.milliseconds(int(ttl_ms)))
            .update_ttl_on_create_and_write()
            .never_return_expired()
            .use_processing_time()
            .build())


def file_source(input_paths, *, follow_s: float | None = None):
    """A FileSource of text lines from files and directories (paths or URIs).

    ``follow_s``: None reads what is there and ends (bounded); a number of seconds keeps
    watching the directories and reads every new file found, checking that often
    (unbounded: the job runs until it is stopped). The source records the files it has
    read in each checkpoint, so a resumed job does not read them again. Put new files in
    place atomically (write elsewhere or under a name starting with ``.`` or ``_``, which
    the source ignores, then rename): a file is read once, as it is when it is found.
    """
    from pyflink.common import Duration
    from pyflink.datastream.connectors.file_system import FileSource, StreamFormat

    paths = [_as_path(p) for p in ([input_paths] if isinstance(input_paths, (str, os.PathLike))
                                   else input_paths)]
    builder = FileSource.for_record_stream_format(StreamFormat.text_line_format(), *paths)
    if follow_s is not None:
        if not follow_s > 0:
            raise ValueError(f"follow_s must be a positive number of seconds (or None: bounded), got {follow_s!r}")
        builder = builder.monitor_continuously(Duration.of_millis(max(1, round(float(follow_s) * 1000))))
    return builder.build()


def file_sink(output_dir: str, *, rolling: str = "checkpoint"):
    """A FileSink writing ``part-*.csv`` lines into ``output_dir`` (path or URI), exactly once.

    Part files become visible (renamed from a hidden ``.part-*.inprogress.*`` file) only when
    a checkpoint that covers them completes. ``rolling="checkpoint"`` (default) closes the
    open part file at every checkpoint, so each completed checkpoint publishes the rows
    before it: a running job's output is at most one checkpoint interval plus the
    checkpoint's duration behind. ``rolling="size"`` is Flink's default policy (a part file
    is closed at 128 MB, after 60 s, or after 60 s without rows): fewer, larger files, but
    rows become visible only after a file is closed AND a checkpoint completes, i.e. up to
    a minute or more late (and a small bounded job only at its end).
    """
    from pyflink.common import Encoder
    from pyflink.datastream.connectors.file_system import BucketAssigner, FileSink, OutputFileConfig, RollingPolicy

    if rolling not in ROLLING_POLICIES:
        raise ValueError(f"rolling must be one of {ROLLING_POLICIES}, got {rolling!r}")
    builder = (FileSink.for_row_format(_as_path(output_dir), Encoder.simple_string_encoder())
               .with_bucket_assigner(BucketAssigner.base_path_bucket_assigner())
               .with_output_file_config(OutputFileConfig.builder().with_part_prefix("part")
                                        .with_part_suffix(".csv").build()))
    if rolling == "checkpoint":
        builder = builder.with_rolling_policy(RollingPolicy.on_checkpoint_rolling_policy())
    return builder.build()


def _is_data_stream(obj) -> bool:
    from pyflink.datastream import DataStream

    return isinstance(obj, DataStream)


def build_pipeline(env, source, output, engine_factory: Callable, *factory_args, name: str = "streamlstm",
                   follow_s: float | None = None, rolling: str = "checkpoint", state_ttl_ms: int | None = None):
    """Source -> key_by -> ModelProcessFunction -> sink, on ``env``.

    ``source``: file or directory paths (a :func:`file_source`; ``follow_s`` makes it
    unbounded), or any ``DataStream`` of text lines that you built yourself (Kafka, a
    socket, ...). ``output``: a directory for a :func:`file_sink` (``rolling`` chooses when
    part files commit), or None to get the output ``DataStream`` of lines back and attach
    your own sink. Returns the sink (``DataStreamSink``) or that stream.

    The operators carry fixed uids (``<name>-source``, ``<name>-model``, ``<name>-sink``), so
    a savepoint can be resumed by a changed job, at another parallelism."""
    from pyflink.common import Types, WatermarkStrategy

    if _is_data_stream(source):
        lines = source
    else:
        lines = (env.from_source(file_source(source, follow_s=follow_s), WatermarkStrategy.no_watermarks(),
                                 f"{name}-source").uid(f"{name}-source"))
    out = (lines.key_by(_key_of, key_type=Types.STRING())
                .process(ModelProcessFunction(engine_factory, *factory_args, state_ttl_ms=state_ttl_ms),
                         output_type=Types.STRING())
                .name(f"{name}-model").uid(f"{name}-model"))
    if output is None:
        return out
    return out.sink_to(file_sink(output, rolling=rolling)).name(f"{name}-sink").uid(f"{name}-sink")


def build_model_pipeline(env, source, output, model=None, *, learn: bool = False, ahead: int | None = None,
                         interval: Sequence[float] = (), anomaly: bool = False, n_features: int = 0,
                         forecaster_params: dict | None = None, on_bad_row: str = "fail", cache_mb: float = 64.0,
                         name: str = "streamlstm", follow_s: float | None = None, rolling: str = "checkpoint",
                         state_ttl_ms: int | None = None):
    """:func:`build_pipeline` with a streamlstm engine: serving (default), ``learn``, or
    forecasting (``ahead``).

    ``model``: a model file path that the workers can read (loaded in ``open()``, once per
    worker process), or the model's bytes (shipped inside the job). ``source`` and
    ``output`` as in :func:`build_pipeline`: paths and a directory, or your own
    ``DataStream`` of ``key,time,x1..xn[,y]`` lines in and (``output=None``) the stream of
    ``key,time,prediction[,error]`` lines out::

        lines = env.from_source(kafka_source, WatermarkStrategy.no_watermarks(), "events")
        predictions = build_model_pipeline(env, lines, None, "model.slstm")
        predictions.sink_to(kafka_sink)

    ``ahead=H`` runs the :class:`ForecastingEngine` instead (no model file: each key gets its
    own :class:`~streamlstm.Forecaster`): lines ``key,time[,x1..xn],y`` with ``n_features``
    features in, ``key,time,forecast_t+H[,lo_L,hi_L ...][,anomaly_score]`` out
    (``interval`` levels, ``anomaly``; :func:`forecasting_columns`); ``forecaster_params``:
    further ``Forecaster`` settings (``season``, ``lstm``, ``seed`` ...).
    """
    if ahead is not None:
        import json

        if model is not None or learn:
            raise ValueError("ahead runs the forecasting engine (a Forecaster per key, learning from every value): "
                             "give no model and no learn")
        settings = {"ahead": ahead, "interval": [float(v) for v in interval], "anomaly": bool(anomaly),
                    "n_features": int(n_features), "params": dict(forecaster_params or {})}
        ForecastingEngine(**settings, on_bad_row=on_bad_row, cache_mb=0)   # settings checked here, not in a worker
        return build_pipeline(env, source, output, forecasting_engine, json.dumps(settings), on_bad_row,
                              str(cache_mb), name=name, follow_s=follow_s, rolling=rolling, state_ttl_ms=state_ttl_ms)
    if model is None:
        raise ValueError("give a model (file path or bytes), or ahead=H for the forecasting engine")
    factory = learning_engine if learn else serving_engine
    uncertainty = ""
    if interval or anomaly:
        import json

        uncertainty = json.dumps({"interval": [float(v) for v in interval], "anomaly": bool(anomaly)})
        if isinstance(model, (bytes, bytearray, memoryview)) or os.path.exists(os.fspath(model)):
            _KeyUncertainty(*_uncertainty_of(uncertainty), _load_model(model))   # checked here, not in a worker
    return build_pipeline(env, source, output, factory, model, on_bad_row, str(cache_mb), uncertainty, name=name,
                          follow_s=follow_s, rolling=rolling, state_ttl_ms=state_ttl_ms)


def run_csv_job(input_paths, output_dir: str, model=None, *, learn: bool = False, on_bad_row: str = "fail",
                work_dir: str | None = None, job_name: str = "streamlstm", rolling: str = "checkpoint",
                state_ttl_ms: int | None = None, ahead: int | None = None, interval: Sequence[float] = (),
                anomaly: bool = False, n_features: int = 0, forecaster_params: dict | None = None, **env_kwargs):
    """Prepare the environment, build and run the job to completion (bounded input)."""
    prepare_worker_environment(work_dir=work_dir)
    env = make_env(**env_kwargs)
    build_model_pipeline(env, input_paths, output_dir, model, learn=learn, on_bad_row=on_bad_row, name=job_name,
                         rolling=rolling, state_ttl_ms=state_ttl_ms, ahead=ahead, interval=interval,
                         anomaly=anomaly, n_features=n_features, forecaster_params=forecaster_params)
    return env.execute(job_name)


# --------------------------------------------------------------------------------------
# stopping with a savepoint

def _version_tuple(version: str) -> tuple:
    """``"2.3.0"`` -> ``(2, 3, 0)``; ``"2.4.dev0"`` -> ``(2, 4, 0)``."""
    parts = []
    for p in version.split(".")[:3]:
        digits = "".join(ch for ch in p if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


# PyFlink's JobClient.stop_with_savepoint calls the Java JobClient.stopWithSavepoint with two
# arguments, but since Flink 1.15 that method takes three (the SavepointFormatType), so the
# call fails in py4j ("Method stopWithSavepoint([class java.lang.Boolean, class java.lang.String])
# does not exist"). Checked broken in 2.3.0, the newest release; later versions take the public path.
_STOP_WITH_SAVEPOINT_BROKEN_UP_TO = (2, 3, 0)


def stop_with_savepoint(job_client, savepoint_dir: str, *, drain: bool = False, timeout_s: float = 600.0) -> str:
    """Stop a running job with a savepoint in ``savepoint_dir`` (path or URI); returns its path.

    The sources stop, a savepoint is taken, pending output is committed, and the job ends
    (FINISHED). ``drain=True`` also sends MAX_WATERMARK first (event-time windows fire);
    keep it False to resume the job later. Resume (at any parallelism) with the returned path
    in ``execution.state-recovery.path`` (``--resume-from`` on the command line).

    Works around PyFlink <= 2.3.0, whose ``JobClient.stop_with_savepoint`` calls a Java
    method that no longer exists: it calls the Java method with the savepoint format
    (CANONICAL, Flink's default) itself.
    """
    import pyflink.version

    target = _as_uri(savepoint_dir)
    if _version_tuple(pyflink.version.__version__) <= _STOP_WITH_SAVEPOINT_BROKEN_UP_TO:
        from pyflink.java_gateway import get_gateway

        canonical = get_gateway().jvm.org.apache.flink.core.execution.SavepointFormatType.CANONICAL
        future = job_client._j_job_client.stopWithSavepoint(bool(drain), target, canonical)
        return str(future.get(int(timeout_s * 1000), get_gateway().jvm.java.util.concurrent.TimeUnit.MILLISECONDS))
    return str(job_client.stop_with_savepoint(bool(drain), target).result())


def run_until_stopped(env, job_name: str, savepoint_dir: str) -> str | None:
    """Run the job on ``env`` until it ends, or until SIGTERM / SIGINT, which stop it with a
    savepoint in ``savepoint_dir`` (:func:`stop_with_savepoint`). Returns the savepoint's path
    (None if the job ended by itself); raises if the job failed. Call it from the main thread
    (signal handlers can only be set there)."""
    stop_requested = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop_requested.set())
    job_client = env.execute_async(job_name)
    print(f"flink job {job_client.get_job_id()} running; SIGTERM stops it with a savepoint in {savepoint_dir}",
          flush=True)
    savepoint = None
    while True:
        if stop_requested.wait(0.5):
            print("streamlstm: stopping the job with a savepoint ...", flush=True)
            savepoint = stop_with_savepoint(job_client, savepoint_dir)
            print(f"savepoint: {savepoint}", flush=True)
            break
        if job_client.get_job_status().result().is_globally_terminal_state():
            break
    job_client.get_job_execution_result().result()  # raises the job's failure, if any
    return savepoint


def _write_order(path: str):
    # FileSink names part files <prefix>-<writer id>-<counter><suffix>; a writer's files were
    # written one after the other, so (last write, writer id, counter as a number) orders them
    # ("-10" after "-9"), and a later job's files after an earlier job's
    name = os.path.basename(path)
    m = re.match(r"(.*)-(\d+)(\.[^.]*)?$", name)
    writer, counter = (m.group(1), int(m.group(2))) if m else (name, 0)
    return os.stat(path).st_mtime_ns, writer, counter


def read_output(output_dir: str) -> list:
    """Lines of the committed part files, file by file in the order they were written (so
    each key's rows stay in order, also across jobs that resumed one another). In-progress
    files are hidden (``.part-*``) and skipped."""
    paths: list[str] = []
    for root, _dirs, files in os.walk(output_dir):
        paths.extend(os.path.join(root, f) for f in files if not f.startswith("."))
    rows: list[str] = []
    for path in sorted(paths, key=_write_order):
        with open(path) as fh:
            rows.extend(line.rstrip("\n") for line in fh if line.strip())
    return rows


# --------------------------------------------------------------------------------------
# command line

def _resolve(spec: str) -> Callable:
    mod, _, attr = spec.partition(":")
    if not attr:
        raise ValueError(f"--engine wants 'module:function', got {spec!r}")
    obj = importlib.import_module(mod)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


_USAGE = """\
examples:
  python -m streamlstm.adapters.flink --input events.csv --model model.slstm --output out/
  python -m streamlstm.adapters.flink --input events.csv --model model.slstm --output out/ --learn \\
      --checkpoint-interval 5000 --checkpoint-dir /data/ckpt
  python -m streamlstm.adapters.flink --input series.csv --ahead 3 --interval 0.9 --anomaly --output out/
  flink run -pyexec /opt/venv/bin/python -py examples/flink_job.py \\
      --input s3://bucket/ev/ --model model.slstm --embed-model --output s3://bucket/out   (docs/flink.md)
"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m streamlstm.adapters.flink",
                                 description=__doc__.split("\n")[0], epilog=_USAGE,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", action="append", required=True, help="CSV file or directory (repeatable)")
    ap.add_argument("--follow", nargs="?", const=1.0, default=None, type=float, metavar="SECONDS",
                    help="keep watching the input directories for new files, checking every SECONDS "
                         "(default 1): an unbounded job that runs until stopped")
    ap.add_argument("--output", required=True, help="output directory (FileSink)")
    ap.add_argument("--rolling", choices=ROLLING_POLICIES, default="checkpoint",
                    help="when part files close: at every checkpoint (default: output visible after each "
                         "checkpoint) or Flink's size/time policy (128 MB / 60 s: fewer files, later)")
    ap.add_argument("--model", default=None, help="model file written by OnlineLSTM.save")
    ap.add_argument("--learn", action="store_true",
                    help="per-key models that learn from rows with a target (everything in Flink state)")
    ap.add_argument("--ahead", type=int, default=None, metavar="H",
                    help="the forecasting engine instead of --model: per key a streamlstm.Forecaster fed each row's "
                         "target (rows key,time[,x1..xn],y), writing key,time,forecast_t+H (docs/flink.md)")
    ap.add_argument("--interval", action="append", type=float, default=[], metavar="LEVEL",
                    help="lo_LEVEL,hi_LEVEL columns: the key's calibrated interval of the row's prediction "
                         "(--ahead: of forecast_t+H); repeatable, each strictly between 0 and 1")
    ap.add_argument("--anomaly", action="store_true",
                    help="an anomaly_score column in [0, 1] (>= 0.5: an alert): the row's target against its "
                         "prediction (--ahead: the forecast made for it), calibrated per key")
    ap.add_argument("--features", type=int, default=0, metavar="N",
                    help="with --ahead: the rows carry N exogenous features before the target (default 0)")
    ap.add_argument("--season", default="auto", metavar="auto|none|N",
                    help="with --ahead: the Forecaster's season (default auto: found online per key)")
    ap.add_argument("--no-lstm-expert", action="store_true",
                    help="with --ahead: no LSTM expert in the forecasters (cheaper per event)")
    ap.add_argument("--seed", type=int, default=0, help="with --ahead: the Forecaster's seed")
    ap.add_argument("--embed-model", action="store_true",
                    help="read --model here and ship its bytes inside the job (workers need no copy of the file)")
    ap.add_argument("--on-bad-row", choices=("fail", "skip"), default="fail",
                    help="a row that is not key,time + numbers: fail the job (default) or skip it (logged)")
    ap.add_argument("--cache-mb", type=float, default=64.0,
                    help="memory per subtask for the per-key memo of decoded states/models (0: off)")
    ap.add_argument("--engine", default=None, help="module:factory instead of --model (advanced, tests)")
    ap.add_argument("--engine-arg", action="append", default=[], help="factory argument (repeatable)")
    ap.add_argument("--mode", choices=("thread", "process"), default="thread", help="python.execution-mode")
    ap.add_argument("--parallelism", type=int, default=None,
                    help="default: 1 when run locally, the cluster's (flink run -p) when submitted")
    ap.add_argument("--checkpoint-interval", "--checkpoint-ms", dest="checkpoint_ms", type=int, default=1000,
                    metavar="MS", help="checkpoint every MS milliseconds (<= 0: off; output commits on checkpoints)")
    ap.add_argument("--checkpoint-dir", default=None,
                    help="durable checkpoint storage (path or URI); the last one is kept when the job is cancelled")
    ap.add_argument("--savepoint-dir", default=None,
                    help="on SIGTERM (or SIGINT), stop the job with a savepoint here, print 'savepoint: PATH', exit 0")
    ap.add_argument("--resume-from", default=None, metavar="PATH",
                    help="start from this savepoint or retained checkpoint (chk-N directory), at any parallelism "
                         "(execution.state-recovery.path)")
    ap.add_argument("--state-ttl", type=float, default=None, metavar="SECONDS",
                    help="forget a key after SECONDS without events (Flink state TTL, processing time): "
                         "it restarts from the zero state (default: keys are kept for ever)")
    ap.add_argument("--restart-attempts", type=int, default=3)
    ap.add_argument("--restart-delay", default="1 s")
    ap.add_argument("--bundle-size", type=int, default=None, help="python.fn-execution.bundle.size (process mode)")
    ap.add_argument("--state-cache-size", type=int, default=None, help="python.state.cache-size (process mode)")
    ap.add_argument("--python-executable", default=None, help="python.executable of the workers")
    ap.add_argument("--work-dir", default=None, help="tmp/, log/, numba-cache/ go here (local runs)")
    ap.add_argument("--pythonpath", action="append", default=[], help="extra path for workers")
    ap.add_argument("--conf", action="append", default=[], help="extra Flink option key=value (repeatable)")
    ap.add_argument("--job-name", default="streamlstm")
    a = ap.parse_args(argv)
    if sum(v is not None for v in (a.model, a.engine, a.ahead)) != 1:
        ap.error("give exactly one of --model, --ahead and --engine")
    forecaster_params = None
    if a.ahead is not None:
        if a.learn or a.embed_model:
            ap.error("--ahead runs the forecasting engine (a Forecaster per key, learning from every value): "
                     "drop --learn / --embed-model")
        forecaster_params = {"lstm": not a.no_lstm_expert, "seed": a.seed}
        season = a.season.strip().lower()
        if season in ("auto", "none"):
            forecaster_params["season"] = None if season == "none" else "auto"
        elif season.isdigit() and int(season) >= 2:
            forecaster_params["season"] = int(season)
        else:
            ap.error(f"--season takes auto, none or an integer >= 2, got {a.season!r}")
        try:
            ForecastingEngine(a.ahead, a.interval, a.anomaly, a.features, forecaster_params, cache_mb=0)
        except ValueError as exc:
            ap.error(f"--ahead {a.ahead} --features {a.features} --interval {a.interval}: {exc}")
    if a.follow is not None and not a.follow > 0:
        ap.error(f"--follow takes a positive number of seconds, got {a.follow}")
    if a.state_ttl is not None and not a.state_ttl > 0:
        ap.error(f"--state-ttl takes a positive number of seconds, got {a.state_ttl}")
    ttl_ms = None if a.state_ttl is None else max(1, round(a.state_ttl * 1000))

    prepare_worker_environment(work_dir=a.work_dir, extra_pythonpath=a.pythonpath)
    for p in a.pythonpath:
        if p not in sys.path:
            sys.path.insert(0, p)
    parallelism = a.parallelism
    if parallelism is None and not submitted_by_flink_cli():
        parallelism = 1
    env = make_env(execution_mode=a.mode, parallelism=parallelism, checkpoint_interval_ms=a.checkpoint_ms,
                   checkpoint_dir=a.checkpoint_dir, restart_attempts=a.restart_attempts,
                   restart_delay=a.restart_delay, bundle_size=a.bundle_size,
                   state_cache_size=a.state_cache_size, python_executable=a.python_executable,
                   savepoint_dir=a.savepoint_dir, resume_from=a.resume_from,
                   conf=dict(kv.split("=", 1) for kv in a.conf))
    pipeline = {"name": a.job_name, "follow_s": a.follow, "rolling": a.rolling, "state_ttl_ms": ttl_ms}
    if a.engine is not None:
        build_pipeline(env, a.input, a.output, _resolve(a.engine), *a.engine_arg, **pipeline)
    elif a.ahead is not None:
        build_model_pipeline(env, a.input, a.output, None, ahead=a.ahead, interval=a.interval, anomaly=a.anomaly,
                             n_features=a.features, forecaster_params=forecaster_params, on_bad_row=a.on_bad_row,
                             cache_mb=a.cache_mb, **pipeline)
    else:
        model = a.model
        if a.embed_model:
            with open(model, "rb") as f:
                model = f.read()
        elif os.path.exists(model):
            model = os.path.abspath(model)  # else: a path that only the workers resolve (-pyarch)
        build_model_pipeline(env, a.input, a.output, model, learn=a.learn, on_bad_row=a.on_bad_row,
                             cache_mb=a.cache_mb, interval=a.interval, anomaly=a.anomaly, **pipeline)
    t0 = time.time()
    if a.savepoint_dir is None:
        env.execute(a.job_name)
    else:
        run_until_stopped(env, a.job_name, a.savepoint_dir)
    print(f"flink job done in {time.time() - t0:.2f} s", flush=True)
    return 0


if __name__ == "__main__":
    # Re-enter through the package name so that pickled classes reference
    # streamlstm.adapters.flink, which the workers import, not __main__.
    from streamlstm.adapters.flink import main as _main

    sys.exit(_main())
