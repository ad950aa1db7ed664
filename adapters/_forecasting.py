"""The job behind ``streamlstm run --ahead H`` by default: the core's forecasting engine.

Imported lazily by :mod:`streamlstm.adapters.cli`. Every number is the core
:class:`streamlstm.Forecaster`'s: each row's target value is fed with
``learn_one(y, x, key)`` and the row's output is ``forecast(key)[H - 1]``, the forecast for
the row H rows (of the same key) later. The row's features are those of its time in
``learn_one`` and, as the latest known, stand for the features of the times forecast
(``forecast(key, xs=[x] * H)``): a row's forecast uses everything the row says. This module only routes rows and keeps, per key,
the forecasts of the last H rows so that each row can be written beside the forecast made
for it H rows earlier (the CLI's column convention, shared with the bare-LSTM path of
:mod:`._runner`).

A row without a target value does not step the engine (it has no value to learn from or
to forecast from): its ``forecast_t+H`` repeats the key's latest forecast.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from streamlstm import Forecaster, persistence

from ._csvio import Block, CliError
from ._runner import FORMAT, KIND, Imputer
from ._uncertainty import RowUncertainty, block_keys

NO_LEARN = ("--no-learn: the forecasting engine (the default of --ahead) learns from every value it forecasts "
            "from, and its experts cannot be frozen; drop --no-learn, or give --model lstm for inference with "
            "fixed weights")


class ForecastEngine:
    """The ``run`` job over a :class:`Forecaster`: the same interface as ``_runner.Engine``.

    ``job``: target, features, key, ahead (>= 1), ...; ``params``: :class:`Forecaster`
    keyword arguments other than ``horizon`` and ``n_features`` (derived from the job).

    >>> job = {"target": "y", "features": [], "key": None, "ahead": 1}
    >>> eng = ForecastEngine(job, {"lstm": False})
    >>> eng.model.horizon, eng.model.lstm
    (1, False)
    """

    def __init__(self, job: dict[str, Any], params: dict[str, Any], learn: bool = True,
                 model: Forecaster | None = None):
        if not learn:
            raise CliError(NO_LEARN)
        self.job = dict(job)
        self.params = dict(params)
        self.learn = True
        self.H = int(job["ahead"])
        self.keyed = job.get("key") is not None
        features = job["features"]
        self.n_features = len(features)
        self.imputer = Imputer(len(features)) if features and job.get("missing", "impute") == "impute" else None
        self.ring: dict[Any, np.ndarray] = {}     # per key: the forecasts of its last H rows, oldest first
        self.learned = 0
        self.unreal = np.zeros(0, dtype=bool)     # every forecast is made after a value: all are real
        # --interval: the engine calibrates its own forecasts (per key and step); --anomaly here
        levels = [float(v) for v in job.get("interval") or []]
        self.uncertainty = RowUncertainty(levels, bool(job.get("anomaly")), self.H, own_intervals=False)
        self.bounds = (np.zeros((0, len(levels))), np.zeros((0, len(levels))))
        if model is None:
            try:
                model = Forecaster(horizon=self.H, n_features=self.n_features, interval_levels=levels, **self.params)
            except (ValueError, TypeError) as exc:
                raise CliError(f"bad forecasting engine settings: {exc}") from None
        elif model.horizon != self.H or model.n_features != self.n_features or list(model.interval_levels) != levels:
            raise CliError(f"the saved engine forecasts {model.horizon} step(s) ahead from {model.n_features} "
                           f"feature(s) with intervals at {list(model.interval_levels)}; this job: --ahead {self.H}, "
                           f"{self.n_features} feature(s), --interval {levels}")
        self.model = model

    @property
    def n_keys(self) -> int:
        return len(self.ring) if self.keyed else 1

    def warm_up(self) -> None:
        """Load the compiled kernels the engine calls (numba's cache) on a throwaway engine
        with the same settings, so that the first rows do not pay for it."""
        twin = Forecaster(**self.model.get_params())
        x = np.zeros(self.n_features) if self.n_features else None
        for t in range(40):
            twin.learn_one(1.0 + 0.1 * (t % 5), x)
        twin.forecast()
        if twin.interval_levels:
            twin.forecast_interval()
        if self.uncertainty.active:
            RowUncertainty(twin.interval_levels, self.uncertainty.anomaly, self.H).columns(
                [None] * 3, np.ones(3), np.ones(3, dtype=bool), np.ones(3), np.ones(3))

    # --------------------------------------------------------------- rows
    def process(self, blk: Block) -> tuple[np.ndarray, np.ndarray]:
        """The forecast for t+H made at each row (NaN before the key's first value) and the
        forecast made H rows earlier for each row."""
        n = len(blk)
        pred = np.full(n, np.nan)
        prev = np.full(n, np.nan)
        self.unreal = np.zeros(n, dtype=bool)
        if self.imputer is not None and n:
            self.imputer.fill(blk.X)
        model, H = self.model, self.H
        keys = blk.keys
        y, known = blk.y.tolist(), blk.known.tolist()
        J = len(model.interval_levels)
        lower, upper = np.full((n, J), np.nan), np.full((n, J), np.nan)
        self.bounds = (lower, upper)
        for i in range(n):
            key = keys[i] if keys is not None else None
            ring = self.ring.get(key)
            x = blk.X[i] if self.n_features else None
            if known[i]:
                try:
                    model.learn_one(y[i], x, key)
                except (ValueError, TypeError) as exc:  # the parser lets only finite numbers through
                    raise CliError(f"internal error: the engine refused a row that passed the CSV checks: {exc}",
                                   1) from None
                self.learned += 1
            elif ring is None:  # nothing known yet for this key: wait (no step, no output)
                continue
            xs = None if x is None else [x] * H
            if J:
                point, lo, hi = model.forecast_interval(key, xs)
                lower[i], upper[i] = lo[:, H - 1], hi[:, H - 1]
                f = float(point[H - 1])
            else:
                f = float(model.forecast(key, xs)[H - 1])
            pred[i] = f
            if ring is None:
                ring = self.ring[key] = np.full(H, np.nan)
            prev[i] = ring[0]
            ring[:-1] = ring[1:]
            ring[-1] = f
        return pred, prev

    def extra_columns(self, blk: Block, pred: np.ndarray, prev: np.ndarray | None) -> list[np.ndarray]:
        """The --interval columns (the engine's bounds of step H, taken in :meth:`process`)
        and the --anomaly column of the rows just processed."""
        if not self.uncertainty.active:
            return []
        return self.uncertainty.columns(block_keys(blk), blk.y, blk.known, pred, prev, self.bounds)

    # --------------------------------------------------------- what was found
    def season_line(self) -> str:
        """Which season the engine uses, on one line (per key: how many keys have which).

        >>> eng = ForecastEngine({"target": "y", "features": [], "key": None, "ahead": 1}, {"season": 7})
        >>> eng.season_line()
        'season: 7 steps (given with --season)'
        """
        model = self.model
        given = model.season != "auto"
        how = " (given with --season)" if given else " (found online in the recent values; --season N to set it)"
        if not self.keyed:
            s = model.season_of(None)
            return (f"season: {s} steps{how}" if s else
                    "season: none" + (" (--season none)" if given else " found (--season N to set one)"))
        counts = Counter(model.season_of(k) for k in model.keys)
        if not counts:
            return "season: no key has had a value yet"
        parts = [f"{s if s else 'none'} ({c:,} key{'s' if c != 1 else ''})"
                 for s, c in sorted(counts.items(), key=lambda sc: (-sc[1], sc[0] or 0))]
        return f"season per key: {', '.join(parts)}{how}"

    # --------------------------------------------------------- persistence
    def snapshot(self, extra: dict[str, Any]) -> bytes:
        keys = list(self.ring)
        arrays: dict[str, np.ndarray] = {"forecaster": np.frombuffer(self.model.to_bytes(), dtype=np.uint8),
                  "ring": np.array([self.ring[k] for k in keys], dtype=np.float64).reshape(len(keys), self.H)}
        meta = {"format": FORMAT, "job": self.job, "params": self.params, "keys": keys, "learned": self.learned,
                **extra}
        if self.imputer is not None:
            meta["imputer"] = self.imputer.to_meta()
        if self.uncertainty.active:
            meta["uncertainty"], more = self.uncertainty.export()
            arrays.update(more)
        return persistence.dumps(KIND, meta, arrays)

    @classmethod
    def restore(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray], learn: bool,
                source: str = "the checkpoint") -> ForecastEngine:
        """The engine a checkpoint holds; one that does not fit together raises
        :class:`CliError` (exit 2) naming ``source`` and what is wrong."""
        if meta.get("format", 0) > FORMAT:
            raise CliError("this file was written by a newer streamlstm CLI: upgrade streamlstm")
        try:
            model = Forecaster.from_bytes(arrays["forecaster"].tobytes())
        except persistence.FormatError as exc:
            raise CliError(f"{source}: the saved forecasting engine cannot be read: {exc}") from None
        eng = cls(meta["job"], meta["params"], learn, model=model)
        learned = meta.get("learned", 0)
        if type(learned) is not int or not 0 <= learned <= 1 << 62:
            raise CliError(f"{source}: corrupt checkpoint: 'learned' must be a count >= 0, got {learned!r}")
        eng.learned = learned
        keys = meta["keys"]
        # a ring is made for a key right after its first value: the rings' keys are the engine's streams
        if not all(k is None or type(k) in (str, int) for k in keys) or len(set(keys)) != len(keys) \
                or set(keys) != set(model.keys) or (not eng.keyed and keys not in ([], [None])):
            raise CliError(f"{source}: corrupt checkpoint: 'keys' {keys[:5]!r} (of {len(keys)}) must be the distinct keys of "
                           f"the saved engine's streams {model.keys[:5]!r} (of {len(model.keys)})")
        for k, ring in zip(keys, arrays["ring"]):
            eng.ring[k] = ring.copy()
        if eng.imputer is not None and "imputer" in meta:
            eng.imputer = Imputer.from_meta(meta["imputer"], eng.n_features)
        if eng.uncertainty.active:
            eng.uncertainty.restore(meta.get("uncertainty"), arrays, source)
        return eng


def describe(meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """What ``streamlstm info`` says of a saved engine: settings, experts, values, season."""
    model = Forecaster.from_bytes(arrays["forecaster"].tobytes())
    seasons = Counter(model.season_of(k) for k in model.keys)
    d: dict[str, Any] = {"settings": model.get_params(), "experts": model.expert_names,
                         "values_learned": int(meta.get("learned", 0))}
    if len(seasons) == 1 and not meta["job"].get("key"):
        s = next(iter(seasons))
        d["season"] = s if s else "none"
    elif seasons:
        d["season_per_key"] = {str(s) if s else "none": c for s, c in seasons.items()}
    d["season_source"] = "auto (found online)" if model.season == "auto" else "given"
    return d
