"""The model settings: one frozen dataclass, one check per setting, one place that says what is allowed.

``OnlineLSTM.__init__``, its saved configuration (``get_params``, the ``config`` of a model
file) and the file loader all go through :class:`ModelSettings`. :func:`describe` tells
adapters each setting's type, default, description, choices and range: the River estimators'
documentation is generated from it, and ``tests/test_settings_schema.py`` pins their
signatures and the CLI's options to it. A refused value raises ``ValueError``
naming the setting, the allowed range and the value given.

>>> ModelSettings(n_inputs=3, lr=0.01).lr
0.01
>>> ModelSettings(n_inputs=3, eps=0.0)
Traceback (most recent call last):
...
ValueError: eps must be a finite number in (0, inf), got 0.0
>>> [s.name for s in describe()][:4]
['n_inputs', 'n_outputs', 'hidden', 'layers']
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any, NamedTuple

import numpy as np

__all__ = ["Interval", "KeyedSettings", "ModelSettings", "SettingInfo", "describe"]

Check = Callable[[str, Any], Any]  # (name, value) -> normalised value, or ValueError


def _is_bool(value: Any) -> bool:
    return isinstance(value, (bool, np.bool_))


def _finite(value: Any) -> bool:
    """``math.isfinite`` that answers False, not OverflowError, for an integer beyond any float."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


MAX_SIZE = 2 ** 31 - 1  # sizes multiply in int64 offsets: keep every product far from overflow


def positive_int(name: str, value: Any) -> int:
    """An integer in [1, 2**31) (``True`` is not a number of units)."""
    if _is_bool(value) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if value > MAX_SIZE:
        raise ValueError(f"{name} must be an integer >= 1 and <= {MAX_SIZE}, got {value!r}")
    return int(value)


class Interval(NamedTuple):
    """The numbers a setting allows (each end closed or open), written as its messages write it.

    >>> str(Interval(0.0, 1.0, high_open=True)), Interval(0.0, 1.0, high_open=True).holds(1.0)
    ('[0, 1)', False)
    """

    low: float
    high: float
    low_open: bool = False
    high_open: bool = False

    def __str__(self) -> str:
        return f"{'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"

    def holds(self, v: float) -> bool:
        return (v > self.low if self.low_open else v >= self.low) and (v < self.high if self.high_open else v <= self.high)


def _real(interval: Interval) -> Check:
    """A finite real number in the interval."""

    def check(name: str, value: Any) -> float:
        if _is_bool(value) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise ValueError(f"{name} must be a finite number in {interval}, got {value!r}")
        v = float(value) if _finite(value) else math.inf
        if not (math.isfinite(v) and interval.holds(v)):
            raise ValueError(f"{name} must be a finite number in {interval}, got {value!r}")
        return v

    return check


def _choice(*allowed: str) -> Check:
    def check(name: str, value: Any) -> str:
        if not isinstance(value, str) or value not in allowed:
            raise ValueError(f"{name} must be one of {sorted(allowed)}, got {value!r}")
        return value

    return check


def _flag(name: str, value: Any) -> bool:
    if _is_bool(value) or (isinstance(value, (int, np.integer)) and value in (0, 1)):
        return bool(value)
    raise ValueError(f"{name} must be True or False, got {value!r}")


_UNIT_OPEN = Interval(0.0, 1.0, high_open=True)  # a decay that still forgets
_unit_open = _real(_UNIT_OPEN)
_SIZES = Interval(1, MAX_SIZE)
_NON_NEGATIVE = Interval(0.0, math.inf, high_open=True)
_POSITIVE = Interval(0.0, math.inf, low_open=True, high_open=True)


def _betas(name: str, value: Any) -> tuple[float, float]:
    try:
        b1, b2 = value
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair of finite numbers in [0, 1), got {value!r}") from None
    return _unit_open(f"{name}[0]", b1), _unit_open(f"{name}[1]", b2)


def _clip(name: str, value: Any) -> float | None:
    if value is None:
        return None
    if _is_bool(value) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not (value > 0 and _finite(value)):
        raise ValueError(f"{name} must be a positive number or None (allowed: (0, inf) or None), got {value!r}")
    return float(value)


def _optional_int(low: int) -> Check:
    """An integer >= low, or None."""

    def check(name: str, value: Any) -> int | None:
        if value is None:
            return None
        if _is_bool(value) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} must be an integer >= {low} or None, got {value!r}")
        return int(value)

    return check


def _setting(default: Any, doc: str, check: Check, choices: tuple[str, ...] | None = None,
             bounds: Interval | None = None) -> Any:
    return field(default=default, metadata={"doc": doc, "check": check, "choices": choices, "bounds": bounds})


def _size(default: int, doc: str) -> Any:
    return _setting(default, doc, positive_int, bounds=_SIZES)


def _number(default: float, doc: str, interval: Interval) -> Any:
    return _setting(default, doc, _real(interval), bounds=interval)


def _choose(default: str, doc: str, *choices: str) -> Any:
    return _setting(default, doc, _choice(*choices), choices)


@dataclass(frozen=True)
class ModelSettings:
    """Every setting of an :class:`~streamlstm.OnlineLSTM`, checked when built.

    >>> s = ModelSettings(n_inputs=2, betas=[0.9, 0.99])
    >>> s.betas, s.as_config()["hidden"]
    ((0.9, 0.99), 32)
    """

    n_inputs: int = field(metadata={"doc": "features per event", "check": positive_int, "choices": None,
                                    "bounds": _SIZES})
    n_outputs: int = _size(1, "values predicted per event (classes for cross_entropy)")
    hidden: int = _size(32, "units per layer")
    layers: int = _size(1, "stacked layers")
    cell: str = _choose("lstm", "lstm (gates i, f, g, o in PyTorch's order) or rnn (vanilla tanh)", "lstm", "rnn")
    bptt: int = _size(16, "steps a label's gradient flows back (TBPTT k2)")
    update_every: int = _size(1, "events between updates (TBPTT k1), at most bptt")
    optimizer: str = _choose("adam", "adam, sgd (with momentum) or rmsprop (with rho)", "adam", "sgd", "rmsprop")
    lr: float = _number(1e-3, "learning rate (0 freezes the weights)", _NON_NEGATIVE)
    momentum: float = _number(0.9, "sgd momentum", _UNIT_OPEN)
    betas: tuple[float, float] = _setting((0.9, 0.999), "adam's decay rates of the two moments", _betas,
                                          bounds=_UNIT_OPEN)
    rho: float = _number(0.99, "rmsprop's decay rate of the squared gradient", _UNIT_OPEN)
    eps: float = _number(1e-8, "adam's and rmsprop's denominator guard", _POSITIVE)
    clip: float | None = _setting(1.0, "clip the gradient to this global norm (None: no clipping)", _clip,
                                  bounds=_POSITIVE)
    l2: float = _number(0.0, "L2 penalty added to the gradient (l2 * theta)", _NON_NEGATIVE)
    loss: str = _choose("squared", "squared (0.5 r^2), huber or cross_entropy (softmax over the outputs)",
                        "squared", "huber", "cross_entropy")
    huber_delta: float = _number(1.0, "where huber turns from quadratic to linear (standardised units)", _POSITIVE)
    standardize_inputs: bool = _setting(True, "feed the network running-standardised inputs", _flag)
    standardize_targets: bool = _setting(True, "learn standardised targets (never for cross_entropy)", _flag)
    dtype: str = _choose("float64", "float64 (exact resumes) or float32 (faster)", "float64", "float32")
    seed: int | None = _setting(0, "seeds the weight initialisation (None: from the OS)", _optional_int(0),
                                bounds=Interval(0, math.inf, high_open=True))

    def __post_init__(self) -> None:
        for f in fields(self):
            object.__setattr__(self, f.name, f.metadata["check"](f.name, getattr(self, f.name)))
        if self.update_every > self.bptt:
            raise ValueError(f"update_every ({self.update_every}) must not exceed bptt ({self.bptt}): "
                             "labels would leave the window before an update uses them")
        if self.loss == "cross_entropy":
            if self.n_outputs < 2:
                raise ValueError(f"loss='cross_entropy' needs n_outputs >= 2 classes, got n_outputs={self.n_outputs}")
            object.__setattr__(self, "standardize_targets", False)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ModelSettings:
        """Settings from a saved configuration; ``ValueError`` names an unknown or missing one.

        >>> ModelSettings.from_config({"n_inputs": 1, "hidden": 4}).hidden
        4
        """
        if not isinstance(config, Mapping):
            raise ValueError(f"the settings must be a mapping, got {type(config).__name__}")
        unknown = sorted(set(config) - set(names()), key=str)
        if unknown:
            raise ValueError(f"unknown setting(s) {unknown}; known: {list(names())}")
        if "n_inputs" not in config:
            raise ValueError("setting n_inputs is missing")
        return cls(**config)

    def as_config(self) -> dict[str, Any]:
        """Every setting by name (the constructor's keyword arguments), JSON-able but ``betas``."""
        return asdict(self)


class SettingInfo(NamedTuple):
    """What an adapter needs to document a setting or offer it as an option."""

    name: str
    type: str
    default: Any
    doc: str
    choices: tuple[str, ...] | None
    bounds: Interval | None  # the numbers allowed (for betas: each of the two; None and True/False aside)


def names() -> tuple[str, ...]:
    """The settings' names, in the constructor's order."""
    return tuple(f.name for f in fields(ModelSettings))


def describe() -> Iterator[SettingInfo]:
    """One :class:`SettingInfo` per setting, in the constructor's order.

    >>> info = {s.name: s for s in describe()}
    >>> info["optimizer"].choices, info["lr"].default
    (('adam', 'sgd', 'rmsprop'), 0.001)
    """
    for f in fields(ModelSettings):
        default = None if f.default is MISSING else f.default
        yield SettingInfo(f.name, str(f.type), default, f.metadata["doc"], f.metadata["choices"], f.metadata["bounds"])


def _ttl(name: str, value: Any) -> float | None:
    if value is None:
        return None
    return _real(_NON_NEGATIVE)(name, value)


@dataclass(frozen=True)
class KeyedSettings:
    """The settings of a :class:`~streamlstm.KeyedLSTM` beyond its model, checked when built.

    >>> KeyedSettings(ttl=10, ttl_unit="events").ttl
    10.0
    """

    learn: bool = _setting(False, "keep each key's TBPTT history and learn", _flag)
    capacity: int = _setting(1024, "initial key rows (grows by doubling)", positive_int)
    ttl: float | None = _setting(None, "forget keys idle for longer than this (None: never)", _ttl)
    ttl_unit: str = _choose("calls", "what ttl counts: calls, events or seconds", "calls", "events", "seconds")
    max_keys: int | None = _setting(None, "keep at most this many keys (least recently used go)",
                                    _optional_int(1))
    update_input_stats: bool = _setting(True, "events update the running input statistics", _flag)
    threads: int | None = _setting(None, "threads for learning many keys at once (None: the usable CPUs)",
                                   _optional_int(1))

    def __post_init__(self) -> None:
        for f in fields(self):
            object.__setattr__(self, f.name, f.metadata["check"](f.name, getattr(self, f.name)))
