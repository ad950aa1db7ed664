"""Helpers for the Flink tests: a small trained model, event files, in-process references,
and a wrapper engine that injects one failure and appends each event's state digest.

The references run the core in this process, independently of the adapter's engines:
* serving: one ``KeyedLSTM(update_input_stats=False)`` holding every key (real per-key rows,
  not the engine's swapped scratch key), events in file order;
* learning: one ``OnlineLSTM.load(model)`` per key (zero state), ``learn_one`` / ``advance``;
* forecasting: one ``Forecaster`` and one ``AnomalyScorer`` per key, fed the key's rows.
"""

import glob
import math
import os
import random
import time

import numpy as np

from streamlstm import AnomalyScorer, Forecaster, KeyedLSTM, OnlineLSTM, persistence
from streamlstm.adapters.flink import (
    _KEY_STATE_HEADER,
    FORECASTING_KIND,
    ForecastingEngine,
    forecasting_columns,
    forecasting_engine,
    format_output,
    learning_engine,
    serving_engine,
    state_digest,
)

N_INPUTS = 2


def make_model(path, hidden=8, seed=1):
    """A model whose readout has learned something (so predictions depend on the state)."""
    rng = random.Random(seed)
    m = OnlineLSTM(n_inputs=N_INPUTS, hidden=hidden, lr=1e-2, seed=seed)
    prev = 0.0
    for _i in range(400):
        x1 = rng.uniform(-1, 1)
        x2 = 0.5 * prev + rng.uniform(-0.2, 0.2)
        m.learn_one([x1, x2], 0.7 * prev + 0.3 * x1)
        prev = x1
    m.save(path)
    return str(path)


def write_events(path, n, n_keys, seed=0, labelled=0.7, bad_lines=()):
    """CSV "key,time,x1,x2[,y]" lines: a share ``labelled`` of rows carry the target, some
    have an empty target field, the rest none. Returns the parsed good rows
    (key, time, x: list, y: float | None) in file order. ``bad_lines`` are inserted
    (before rows n//3, 2n//3, ...) and not returned."""
    rng = random.Random(seed)
    rows = []
    bad = list(bad_lines)
    every = n // (len(bad) + 1) if bad else n + 1
    with open(path, "w") as f:
        for i in range(n):
            if bad and i and i % every == 0:
                f.write(bad.pop(0) + "\n")
            key = f"k{rng.randrange(n_keys)}"
            x = [round(rng.uniform(-1, 1), 6), round(rng.uniform(-1, 1), 6)]
            u = rng.random()
            y = round(rng.uniform(-1, 1), 6) if u < labelled else None
            tail = f",{y!r}" if y is not None else ("," if u < labelled + 0.1 else "")
            f.write(f"{key},{i},{x[0]!r},{x[1]!r}{tail}\n")
            rows.append((key, str(i), x, y))
    return rows


class ReferenceUncertainty:
    """``--interval`` / ``--anomaly`` cells of a regression row, per key, from the core alone:
    for each key a ``ForecastCalibration(levels, 1)`` of its own (bounds of the prediction
    first, then the residual folded in) and an ``AnomalyScorer`` (the value against the
    prediction)."""

    def __init__(self, levels=(), anomaly=False):
        self.levels, self.anomaly = tuple(levels), anomaly
        self.cals, self.scorers = {}, {}

    def cells(self, key, pred, y):
        from streamlstm.forecasting.intervals import ForecastCalibration

        out = []
        if self.levels:
            cal = self.cals.setdefault(key, ForecastCalibration(self.levels, 1))
            lo, hi = cal.bounds(key, np.array([pred]))     # NaN before the key's first residual
            for j in range(len(self.levels)):
                out += [cell(lo[j, 0]), cell(hi[j, 0])]
            if y is not None:
                cal.observe(key, np.array([y - pred]))
        if self.anomaly:
            scorer = self.scorers.setdefault(key, AnomalyScorer())
            out.append(cell(scorer.score(y, pred) if y is not None else math.nan))
        return out


def _line(key, t, pred, y, digest, unc=None):
    if unc is not None:
        s = ",".join([key, t, cell(pred), "" if y is None else cell(y - pred), *unc.cells(key, float(pred), y)])
    else:
        s = format_output(key, t, pred, None if y is None else y - pred)
    return s if digest is None else f"{s},{digest}"


def reference_serving(model_path, rows, digests=False, uncertainty=None):
    """Expected output lines (file order) of the serving job (``uncertainty``: its
    ``{"interval": [...], "anomaly": bool}``)."""
    model = OnlineLSTM.load(model_path)
    model.reset_state()
    keyed = KeyedLSTM(model, update_input_stats=False)
    unc = None if uncertainty is None else ReferenceUncertainty(uncertainty.get("interval", ()),
                                                                uncertainty.get("anomaly", False))
    out = []
    for key, t, x, y in rows:
        pred = keyed.step_one(key, x)
        out.append(_line(key, t, pred, y, state_digest(keyed.state_bytes(key)) if digests else None, unc))
    return out


def reference_learning(model_path, rows, digests=False, uncertainty=None):
    """Expected output lines (file order) of the --learn job: one model per key."""
    models = {}
    unc = None if uncertainty is None else ReferenceUncertainty(uncertainty.get("interval", ()),
                                                                uncertainty.get("anomaly", False))
    out = []
    for key, t, x, y in rows:
        m = models.get(key)
        if m is None:
            m = models[key] = OnlineLSTM.load(model_path)
            m.reset_state()
        pred = m.advance(x) if y is None else m.learn_one(x, y)
        out.append(_line(key, t, pred, y, state_digest(m.to_bytes()) if digests else None, unc))
    return out


FAST = {"lstm": False}   # Forecaster settings without the LSTM expert: many settings, quickly


def write_series(n, n_keys, n_features=0, seed=0, missing=0.1):
    """Lines ``key,time[,x..],y`` of keyed seasonal series (some targets empty)."""
    rng = random.Random(seed)
    lines = []
    steps = [0] * n_keys
    for i in range(n):
        k = rng.randrange(n_keys)
        t = steps[k]
        steps[k] += 1
        xs = [round(rng.uniform(-1, 1), 4) for _ in range(n_features)]
        y = 10 * (k + 1) + 3 * math.sin(2 * math.pi * t / 6) + 0.5 * sum(xs) + rng.gauss(0, 0.3)
        cells = [f"k{k}", str(i), *(repr(v) for v in xs), "" if rng.random() < missing else repr(round(y, 3))]
        lines.append(",".join(cells))
    return lines


def cell(v):
    return "" if v != v else repr(float(v))


def reference_forecasting(lines, ahead, levels=(), anomaly=False, n_features=0, params=FAST, digests=False):
    """Per key: a Forecaster fed learn_one(y, x), forecast(xs=[x]*H)[H-1], its bounds of
    step H, and an AnomalyScorer scoring y against the forecast made H rows earlier.
    ``digests``: each row ends with the digest of the key's ``Forecaster.to_bytes()``
    after it (``-`` before the key's first value)."""
    models, scorers, made = {}, {}, {}
    out = []
    for line in lines:
        parts = line.split(",")
        key, t = parts[0], parts[1]
        x = np.array([float(v) for v in parts[2:2 + n_features]]) if n_features else None
        y = float(parts[-1]) if parts[-1] else None
        if key not in models:
            if y is None:
                empty = [key, t] + [""] * (len(forecasting_columns(ahead, levels, anomaly)) - 2)
                out.append(",".join(empty + ([state_digest(None)] if digests else [])))
                continue
            models[key] = Forecaster(horizon=ahead, n_features=n_features, interval_levels=levels, **params)
            scorers[key] = AnomalyScorer()
            made[key] = [math.nan] * ahead
        m = models[key]
        if y is not None:
            m.learn_one(y, x)
        xs = None if x is None else [x] * ahead
        row = [key, t]
        if levels:
            point, lo, hi = m.forecast_interval(None, xs)
            row.append(cell(point[ahead - 1]))
            for j in range(len(levels)):
                row += [cell(lo[j, ahead - 1]), cell(hi[j, ahead - 1])]
        else:
            point = m.forecast(None, xs)
            row.append(cell(point[ahead - 1]))
        if anomaly:
            prev = made[key][0]
            row.append(cell(scorers[key].score(y, prev) if y is not None and prev == prev else math.nan))
        made[key] = [*made[key][1:], float(point[ahead - 1])]
        if digests:
            row.append(state_digest(m.to_bytes()))
        out.append(",".join(row))
    return out


class Checked:
    """Wraps a real engine: appends ",<state digest>" to each output line and, if
    ``marker`` is given, fails once after ``fail_at`` events, as soon as a checkpoint is
    complete (``*/chk-*/_metadata`` under ``checkpoint_dir``), creating ``marker``."""

    def __init__(self, inner, fail_at=0, marker="", checkpoint_dir=""):
        self.inner = inner
        self.fail_at = int(fail_at)
        self.marker = marker
        self.checkpoint_dir = checkpoint_dir
        self.seen = 0

    def _maybe_fail(self):
        self.seen += 1
        if not self.marker or self.seen < self.fail_at or os.path.exists(self.marker):
            return
        if not glob.glob(os.path.join(self.checkpoint_dir, "*", "chk-*", "_metadata")):
            time.sleep(0.002)  # let a checkpoint complete first (barriers pass between events)
            return
        open(self.marker, "w").close()
        raise RuntimeError("injected failure (flink_helpers.Checked)")

    def process(self, state, line):
        self._maybe_fail()
        new, out = self.inner.process(state, line)
        if out is None:
            return new, out
        if isinstance(self.inner, ForecastingEngine):
            return new, f"{out},{forecaster_digest(new)}"
        if getattr(self.inner, "_unc", None) is not None:
            return new, f"{out},{model_digest(new)}"
        return new, f"{out},{state_digest(new)}"


def model_digest(state):
    """The digest of the model's part of a serving / learning key state with --interval / --anomaly."""
    _magic, _version, n_bytes = _KEY_STATE_HEADER.unpack_from(state)
    return state_digest(state[_KEY_STATE_HEADER.size + n_bytes:])


def forecaster_digest(state):
    """The digest of the forecaster's own bytes inside a forecasting engine's key state."""
    if state is None:
        return state_digest(None)
    return state_digest(persistence.loads(state, expect_kind=FORECASTING_KIND)[2]["forecaster"].tobytes())


def checked_engine(kind, model_path, fail_at="0", marker="", checkpoint_dir=""):
    """--engine flink_helpers:checked_engine --engine-arg serve|learn|forecast|serve+uncertainty
    --engine-arg MODEL ... (forecast: MODEL is the forecasting engine's settings, JSON;
    serve+uncertainty: serving with --interval 0.9 --anomaly)."""
    if kind == "serve+uncertainty":
        inner = serving_engine(model_path, "fail", "64", '{"interval": [0.9], "anomaly": true}')
    else:
        inner = {"serve": serving_engine, "learn": learning_engine, "forecast": forecasting_engine}[kind](model_path)
    return Checked(inner, fail_at, marker, checkpoint_dir)
