"""The validated loader behind :meth:`Forecaster.from_bytes` (issue 13: hostile input).

A saved forecaster is trusted for nothing: every setting is checked with the constructor's
own rules plus types (a JSON float is no order, a string no count); every array's name,
dtype and shape is compared with what the settings imply *before* anything is allocated
from them (so that sizes are bounded by the byte string's own length); every number that
compiled code or numpy indexing uses as a position, a count or a divisor is checked for
range, every float for finiteness; and the per-stream allocation a new key would cost is
bounded (:data:`MAX_STREAM_BYTES`). The embedded LSTM goes through
:meth:`OnlineLSTM.from_bytes`, the validated loader of the core, and each stream's saved
LSTM state through :meth:`OnlineLSTM.check_states`.

Every refusal is a ``ValueError`` naming the field; ``Forecaster.from_bytes`` turns it into
:class:`persistence.FormatError`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .._kernels.state_check import MAX_STORED_COUNTER
from ..model import LSTMState, OnlineLSTM
from .engine import LSTM_LAGS, MAX_SEASON_LIMIT, SIMPLE, Forecaster, _Stream
from .intervals import ISSUED_ARRAY, STATE_ARRAY
from .lstm_expert import _NOBODY

MAX_STREAM_BYTES = 1 << 30   # what one new stream (key) may allocate: its history, forecasts, features
_PARAMS = ("horizon", "season", "max_season", "ar_orders", "ar_units", "multi_step", "forgetting", "ridge",
           "aggregation", "discount", "experts", "n_features", "lstm", "lstm_hidden", "lstm_lr", "seed",
           "interval_levels")
_OPTIONAL = ("interval_levels",)   # absent from files without intervals (and from those before them)


def _int(value: Any, what: str, low: int, high: int) -> int:
    if type(value) is not int or not low <= value <= high:
        raise ValueError(f"{what} must be an integer in [{low}, {high}], got {value!r}")
    return value


def _float(value: Any, what: str) -> float:
    if type(value) not in (int, float) or not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number, got {value!r}")
    return float(value)


def _bool(value: Any, what: str) -> bool:
    if type(value) is not bool:
        raise ValueError(f"{what} must be true or false, got {value!r}")
    return value


def _array(arrays: dict[str, np.ndarray], name: str, dtype: str, shape: tuple[int, ...],
           finite: bool = True, low: float | None = None) -> np.ndarray:
    """``arrays[name]`` if it has this dtype and shape (and is finite, >= ``low``)."""
    a = arrays.get(name)
    if a is None:
        raise ValueError(f"array {name!r} is missing")
    if a.dtype != np.dtype(dtype) or a.shape != shape:
        raise ValueError(f"array {name!r} is {a.dtype} {a.shape}, expected {dtype} {shape}")
    if finite and a.dtype.kind == "f" and a.size:
        bad = np.flatnonzero(~np.isfinite(a.reshape(-1)))
        if bad.size:
            raise ValueError(f"array {name!r} holds a non-finite value at position {int(bad[0])}: "
                             f"{float(a.reshape(-1)[bad[0]])!r}")
    if low is not None and a.size and not (a >= low).all():
        k = int(np.flatnonzero(~(a.reshape(-1) >= low))[0])
        raise ValueError(f"array {name!r} holds {a.reshape(-1)[k].item()!r} at position {k}, below {low}")
    return a


def _params(raw: Any) -> dict[str, Any]:
    """The constructor's arguments, with the types JSON gives them (the constructor checks
    the ranges; sizes are checked against the arrays afterwards)."""
    if not isinstance(raw, dict):
        raise ValueError(f"'params' must be an object of settings, got {type(raw).__name__}")
    missing, extra = [p for p in _PARAMS if p not in raw], [p for p in raw if p not in _PARAMS]
    missing = [m for m in missing if m not in _OPTIONAL]
    if missing or extra:
        raise ValueError(f"'params' must hold exactly the settings {list(_PARAMS)}; missing {missing}, "
                         f"unknown {extra}")
    p = dict(raw)
    _int(p["horizon"], "setting 'horizon'", 1, 1 << 31)
    if not (p["season"] in (None, "auto") or type(p["season"]) is int):
        raise ValueError(f"setting 'season' must be an integer >= 2, null or 'auto', got {p['season']!r}")
    if type(p["season"]) is int:
        _int(p["season"], "setting 'season'", 2, 1 << 31)
    _int(p["max_season"], "setting 'max_season'", 2, MAX_SEASON_LIMIT)
    for name in ("ar_orders", "ar_units", "experts"):
        if not isinstance(p[name], list):
            raise ValueError(f"setting {name!r} must be a list, got {p[name]!r}")
    for k in p["ar_orders"]:
        _int(k, "setting 'ar_orders' entry", 1, 1 << 31)
    if any(not isinstance(e, str) or e not in SIMPLE for e in p["experts"]):
        raise ValueError(f"setting 'experts' must name experts among {SIMPLE}, got {p['experts']!r}")
    _int(p["n_features"], "setting 'n_features'", 0, 1 << 31)
    for name in ("forgetting", "ridge", "discount", "lstm_lr"):
        _float(p[name], f"setting {name!r}")
    _bool(p["lstm"], "setting 'lstm'")
    _int(p["lstm_hidden"], "setting 'lstm_hidden'", 1, 1 << 31)
    if p["seed"] is not None:
        _int(p["seed"], "setting 'seed'", 0, (1 << 63) - 1)
    if "interval_levels" in p:
        levels = p["interval_levels"]
        if not isinstance(levels, list) or not levels or len(levels) > 64:
            raise ValueError(f"setting 'interval_levels' must be a list of 1 to 64 levels, got {levels!r}")
        for v in levels:
            _float(v, "setting 'interval_levels' entry")
    return p


def _shared_shapes(p: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """Shapes of the arrays the constructor allocates, from the settings alone (nothing is
    allocated: a setting that would ask for terabytes is refused when the file's array
    of that shape is not there)."""
    H, nf = p["horizon"], p["n_features"]
    o = 2 + 2 * nf
    G = len(p["ar_units"])
    n_experts = len(p["experts"]) + G * len(p["ar_orders"]) + (1 if p["lstm"] else 0)
    shapes: dict[str, tuple[int, ...]] = {"agg/weights": (H, n_experts), "moments": (1 + nf, 3)}
    for j, k in enumerate(k for _ in range(G) for k in p["ar_orders"]):
        shapes[f"ar/{j}/W"] = (H, o + k)
        shapes[f"ar/{j}/P"] = (H, o + k, o + k)
    return shapes


def _embedded_lstm(p: dict[str, Any], arrays: dict[str, np.ndarray]) -> OnlineLSTM | None:
    if not p["lstm"]:
        return None
    blob = arrays.get("lstm/model")
    if blob is None or blob.dtype != np.uint8 or blob.ndim != 1:
        raise ValueError("array 'lstm/model' (the LSTM expert's bytes) must be a 1-D uint8 array")
    try:
        net = OnlineLSTM.from_bytes(blob.tobytes())
    except ValueError as exc:
        raise ValueError(f"array 'lstm/model' (the LSTM expert): {exc}") from None
    want = LSTM_LAGS + 2 * p["n_features"]
    if net.n_inputs != want or net.n_outputs != 1 or net.hidden != p["lstm_hidden"] or net.loss == "cross_entropy":
        raise ValueError(f"array 'lstm/model' (the LSTM expert) has n_inputs={net.n_inputs}, "
                         f"n_outputs={net.n_outputs}, hidden={net.hidden}, loss={net.loss!r}; the settings want "
                         f"n_inputs={want}, n_outputs=1, hidden={p['lstm_hidden']} and a regression loss")
    return net


def _indices_length(arrays: dict[str, np.ndarray], name: str, ready: bool, season: int, cap: int) -> int:
    """How many seasonal indices array ``name`` must hold: one per phase of the season once
    ready, else what it holds (left over from an earlier season), 1 to ``cap``."""
    a = arrays.get(name)
    length = season if ready else (a.shape[0] if a is not None and a.ndim == 1 else 1)
    if not 1 <= length <= cap:
        raise ValueError(f"array {name!r} must hold 1 to {cap} values, got {length}")
    return length


def _stream_bytes(model: Forecaster) -> int:
    H, E = model.horizon, len(model.expert_names)
    G, nf = len(model.ar_units), model.n_features
    return 8 * (model._capacity + H * H * E + G * H * (model._d + 1) + 2 * nf + 8)


def checked_forecaster(cls: type[Forecaster], meta: Any, arrays: dict[str, np.ndarray]) -> Forecaster:
    """The forecaster that ``meta`` and ``arrays`` describe, every field checked first."""
    if not isinstance(meta, dict):
        raise ValueError(f"the header must be an object, got {type(meta).__name__}")
    p = _params(meta.get("params"))
    for name, shape in _shared_shapes(p).items():
        _array(arrays, name, "float64", shape)
    net = _embedded_lstm(p, arrays)
    try:
        model = cls(**p)
    except ValueError as exc:
        raise ValueError(f"setting {exc}") from None
    if _stream_bytes(model) > MAX_STREAM_BYTES:
        raise ValueError(f"settings horizon={model.horizon}, season={model.season!r}, ar_orders={list(model.ar_orders)} "
                         f"would make every stream allocate {_stream_bytes(model):,} bytes (at most "
                         f"{MAX_STREAM_BYTES:,})")
    H, G, E = model.horizon, len(model.ar_units), len(model.expert_names)
    model._scale[:] = _array(arrays, "scale", "float64", (1,), low=0.0)
    model._scale_u[:] = _array(arrays, "scale_u", "float64", (G,), low=0.0)
    model._positive[:] = _array(arrays, "positive", "bool", (1,))
    moments = _array(arrays, "moments", "float64", (1 + model.n_features, 3))
    if not (moments[:, 0] >= 0).all() or not (moments[:, 2] >= 0).all():
        raise ValueError("array 'moments' holds a negative count or sum of squares")
    model._moments[:] = moments
    model._P_ready[:] = _array(arrays, "ar/ready", "bool", (G,))
    model._updates[:] = _array(arrays, "ar/updates", "int64", (G,), low=0)
    if not (model._updates <= MAX_STORED_COUNTER).all():
        raise ValueError(f"array 'ar/updates' holds a count above {MAX_STORED_COUNTER}")
    model._agg.weights[:] = _array(arrays, "agg/weights", "float64", (H, E), low=0.0)
    model._agg.regret[:] = _array(arrays, "agg/regret", "float64", (H, E))
    model._agg.squares[:] = _array(arrays, "agg/squares", "float64", (H, E), low=0.0)
    model._agg.scale[:] = _array(arrays, "agg/scale", "float64", (H,), low=0.0)
    if "agg/meta" in arrays:   # absent from files saved before the far horizons' second level: it starts afresh
        far = _array(arrays, "agg/meta", "float64", (2, 2))
        if not (far[1] >= 0).all():
            raise ValueError("array 'agg/meta' holds a negative sum of squared regrets")
        model._agg.meta[:] = far
    for j in range(len(model._ar)):
        model._P[j][:] = arrays[f"ar/{j}/P"]
        model._W[j][:] = arrays[f"ar/{j}/W"]
    known = set(_shared_shapes(p)) | {"scale", "scale_u", "positive", "ar/ready", "ar/updates", "agg/regret",
                                      "agg/squares", "agg/scale", "agg/meta"} | ({"lstm/model"} if net is not None else set())
    streams = meta.get("streams")
    if not isinstance(streams, list):
        raise ValueError(f"'streams' must be a list, got {type(streams).__name__}")
    for i, entry in enumerate(streams):
        known |= _load_stream(model, i, entry, arrays, net)
    model._aggregator_updates()   # not saved: they follow from the streams' counts
    if model._calibration is not None:
        model._calibration.load(model.keys, arrays)
        known |= {STATE_ARRAY, ISSUED_ARRAY}
    extra = sorted(set(arrays) - known)
    if extra:
        raise ValueError(f"unexpected arrays {extra[:5]} (not part of a forecaster with these settings)")
    if net is not None:
        assert model._lstm is not None
        model._lstm.model = net
        owner = _int(meta.get("lstm_owner"), "'lstm_owner' (the stream whose state the LSTM holds)", -1,
                     len(streams) - 1)
        model._lstm.owner = model.keys[owner] if owner >= 0 else _NOBODY
    return model


def _load_stream(model: Forecaster, i: int, entry: Any, arrays: dict[str, np.ndarray],
                 net: OnlineLSTM | None) -> set[str]:
    """Check and install stream ``i``; returns the names of the arrays it used."""
    what = f"stream {i}"
    if not isinstance(entry, dict):
        raise ValueError(f"{what} must be an object, got {type(entry).__name__}")
    key = entry.get("key")
    if not (key is None or type(key) in (str, int)):
        raise ValueError(f"{what}: key must be a string, an integer or null, got {key!r}")
    if key in model._streams:
        raise ValueError(f"{what}: key {key!r} appears twice")
    n = _int(entry.get("n"), f"{what}: 'n' (values seen)", 0, MAX_STORED_COUNTER)
    # absent from files saved before the aggregation weights were replayed: never replayed then
    replayed = _int(entry.get("weights_replayed_at", -1), f"{what}: 'weights_replayed_at' (values seen then)", -1, n)
    positive = _bool(entry.get("positive"), f"{what}: 'positive'")
    hw_ready = _bool(entry.get("hw_ready"), f"{what}: 'hw_ready'")
    name = f"stream/{i}/"
    newer = [a for a in _Stream.LOG_HW_STATE if (a in entry if a.endswith("_ready") else name + a in arrays)]
    if newer and len(newer) < len(_Stream.LOG_HW_STATE):
        raise ValueError(f"{what} holds {newer} but not {[a for a in _Stream.LOG_HW_STATE if a not in newer]} "
                         "(the log Holt-Winters state comes whole or not at all)")
    hwl_ready = _bool(entry["hwl_ready"], f"{what}: 'hwl_ready'") if newer else False
    level, anchor = _float(entry.get("level"), f"{what}: 'level'"), _float(entry.get("anchor"), f"{what}: 'anchor'")
    cap, H, E = model._capacity, model.horizon, len(model.expert_names)
    G, nf = len(model.ar_units), model.n_features
    season: Any = entry.get("season")
    if model.season == "auto":
        high = min(model.max_season, cap)
        ok, allowed = type(season) is int and (season == 0 or 2 <= season <= high), f"0 or in [2, {high}]"
    elif model.season is None:
        ok, allowed = type(season) is int and season == 0, "0"
    else:  # a given season is in use from the first value on
        ok, allowed = type(season) is int and season == (model.season if n else 0), f"{model.season if n else 0}"
    if not ok:
        raise ValueError(f"{what}: 'season' is {season!r}; with season={model.season!r} and n={n} it must be {allowed}")
    season = int(season)
    if hw_ready and not season:
        raise ValueError(f"{what}: 'hw_ready' is true without a season")
    if hwl_ready and not (season and positive):
        raise ValueError(f"{what}: 'hwl_ready' is true without a season or with a value <= 0")
    got = {a: name + a for a in _Stream.ARRAYS if newer or a not in _Stream.LOG_HW_STATE}
    history = _array(arrays, got["history"], "float64", (cap,))
    valid = history[cap - min(n, cap):]
    if n and (positive or model._positive[0]) and not ((valid > 0.0).all() and anchor > 0.0):
        raise ValueError(f"{what}: 'positive' is true but a value or the anchor {anchor!r} is <= 0")
    if n and model._positive[0] and not positive:
        raise ValueError(f"{what}: the forecaster's 'positive' is true but the stream's is false")
    shapes: dict[str, tuple[str, tuple[int, ...]]] = {
        "exog": ("float64", (nf,)), "x": ("float64", (nf,)), "holt": ("float64", (2,)), "hw": ("float64", (2,)),
        "hw_indices": ("float64", (_indices_length(arrays, got["hw_indices"], hw_ready, season, cap),)),
        "profile": ("float64", (max(season, 1),)),
        "known": ("bool", (max(season, 1),)), "forecasts": ("float64", (H, H, E)),
        "features": ("float64", (G, H, model._d)), "origin": ("float64", (G, H))}
    if newer:
        shapes["hwl"] = ("float64", (2,))
        shapes["hwl_indices"] = ("float64", (_indices_length(arrays, got["hwl_indices"], hwl_ready, season, cap),))
    checked = {a: _array(arrays, got[a], dtype, shape, finite=a != "forecasts")  # NaN: an asleep expert
               for a, (dtype, shape) in shapes.items()}
    s = model._stream(key)
    s.n, s.season, s.positive, s.hw_ready, s.level, s.anchor = n, season, positive, hw_ready, level, anchor
    s.hwl_ready = hwl_ready
    s.weights_replayed_at = replayed
    s.history = history
    for a, arr in checked.items():
        setattr(s, a, arr)
    used = set(got.values())
    buf_name, count_name = name + "lstm_buffer", name + "lstm_counters"
    if buf_name in arrays or count_name in arrays:
        if net is None:
            raise ValueError(f"{what} holds an LSTM state but the settings have no LSTM expert")
        buf = _array(arrays, buf_name, str(net._R.dtype), (net._state_end,))
        counters = _array(arrays, count_name, "int64", (2,))
        net.check_states(buf.reshape(1, -1), counters.reshape(1, 2), f"{what}: its LSTM state")
        s.lstm_state = LSTMState(buf, counters, net.layers, net.hidden)
        used |= {buf_name, count_name}
    return used
