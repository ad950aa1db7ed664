"""The model settings are written once, in :class:`streamlstm.settings.ModelSettings`: the River
estimators' signatures and documentation and the CLI's model options are pinned to it here.

The River signatures stay explicit (River's ``clone()`` reads them) and the CLI's options stay a
literal table (``streamlstm --help`` must not import numpy and numba); so these tests, not
generation, keep them equal to the schema: a setting added to the schema and not to them, or a
default or range changed in one place only, fails here and names what differs.
"""

from __future__ import annotations

import ast
import inspect
import math
from pathlib import Path
from typing import Any

import pytest

from streamlstm import OnlineLSTM
from streamlstm.settings import Interval, ModelSettings, SettingInfo, describe, names

SCHEMA = {s.name: s for s in describe()}
DERIVED = {"n_inputs", "n_outputs"}  # taken from the data by every adapter, never an option


# ---------------------------------------------------------------------------- core
def test_online_lstm_signature_and_attributes_are_the_schema():
    params = dict(inspect.signature(OnlineLSTM.__init__).parameters)
    del params["self"]
    assert list(params) == list(names())
    for name, p in params.items():
        default = inspect.Parameter.empty if name == "n_inputs" else SCHEMA[name].default
        assert p.default == default, (name, p.default, default)
    attributes = {n: t for n, t in OnlineLSTM.__annotations__.items() if n in SCHEMA}
    assert attributes == {n: s.type for n, s in SCHEMA.items()}


def test_keyed_lstm_signature_is_keyed_settings():
    """KeyedLSTM's keyword settings are KeyedSettings' fields, with its defaults, each in its
    docstring's parameters (``model`` and ``clock`` are objects, not settings)."""
    from dataclasses import MISSING, fields

    from streamlstm import KeyedLSTM
    from streamlstm.settings import KeyedSettings

    params = dict(inspect.signature(KeyedLSTM.__init__).parameters)
    for name in ("self", "model", "clock"):
        del params[name]
    schema = {f.name: f.default for f in fields(KeyedSettings)}
    assert sorted(params) == sorted(schema)
    for name, p in params.items():
        assert p.kind is inspect.Parameter.KEYWORD_ONLY, name
        assert schema[name] is not MISSING and p.default == schema[name], (name, p.default, schema[name])
    documented = {n for line in _parameter_names(KeyedLSTM.__doc__ or "") for n in [line]}
    assert set(schema) <= documented, set(schema) - documented


def _parameter_names(doc: str) -> list[str]:
    section = doc.split("Parameters\n    ----------\n", 1)[1].split("\n\n", 1)[0]
    return [n.strip() for line in section.splitlines()
            if line.startswith("    ") and not line.startswith("     ") for n in line.split(",")]


def test_every_setting_is_documented_in_online_lstm_and_in_the_core_api():
    assert sorted(_parameter_names(OnlineLSTM.__doc__ or "")) == sorted(names())
    text = (Path(__file__).resolve().parent.parent / "docs" / "core-api.md").read_text()
    block = text.split("```python\n", 1)[1].split("```", 1)[0]
    call = next(node for node in ast.walk(ast.parse(block)) if isinstance(node, ast.Call)
                and getattr(node.func, "id", "") == "OnlineLSTM")
    written = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
    assert list(written) == list(names())
    assert {n: v for n, v in written.items() if n != "n_inputs"} == \
        {n: s.default for n, s in SCHEMA.items() if n != "n_inputs"}


# ---------------------------------------------------------------------------- River
river = pytest.importorskip("river")

from streamlstm.adapters.river import (  # noqa: E402  (after the skip: River is an extra)
    LSTMAnomalyDetector,
    LSTMClassifier,
    LSTMForecaster,
    LSTMRegressor,
)
from streamlstm.adapters.river.base import LSTMEstimator  # noqa: E402
from streamlstm.adapters.river.params import (  # noqa: E402
    _CORE,
    _CORE_OPTIONAL,
    RIVER_DEFAULTS,
    params_doc,
)

# The estimators over one OnlineLSTM: the shared base passes them the core settings (a
# forecaster over the core's forecasting engine takes the engine's settings instead).
ESTIMATORS = [c for c in (LSTMRegressor, LSTMClassifier, LSTMForecaster, LSTMAnomalyDetector)
              if issubclass(c, LSTMEstimator)]
assert {LSTMRegressor, LSTMClassifier, LSTMAnomalyDetector} <= set(ESTIMATORS)


def _core_parameters(cls: type) -> dict[str, inspect.Parameter]:
    return {n: p for n, p in inspect.signature(cls.__init__).parameters.items() if n in SCHEMA}


def test_the_river_settings_lists_are_the_schema():
    assert set(_CORE) | set(_CORE_OPTIONAL) | DERIVED == set(names())
    assert not set(_CORE) & set(_CORE_OPTIONAL)
    assert list(_CORE) == [n for n in names() if n in _CORE]


@pytest.mark.parametrize("cls", ESTIMATORS, ids=lambda c: c.__name__)
def test_river_signature_is_pinned_to_the_schema(cls):
    """Names in the schema's order, the schema's types, its defaults but for the River
    adapter's declared ones; and every default passes the schema's check."""
    params = _core_parameters(cls)
    assert set(_CORE) <= set(params) <= set(_CORE) | set(_CORE_OPTIONAL), set(params) ^ set(_CORE)
    assert list(params) == [n for n in names() if n in params], "not in the schema's order"
    for name, p in params.items():
        assert p.annotation == SCHEMA[name].type, (name, p.annotation, SCHEMA[name].type)
        assert p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
    expected = {n: SCHEMA[n].default for n in params} | RIVER_DEFAULTS | cls._own_defaults
    got = {n: p.default for n, p in params.items()}
    assert got == {n: expected[n] for n in params}
    for name, value in cls._own_defaults.items():  # a declared departure really departs
        assert value != RIVER_DEFAULTS.get(name, SCHEMA[name].default), name
    n_outputs = 2 if cls._loss_kind == "cross_entropy" else 1
    checked = ModelSettings(n_inputs=1, n_outputs=n_outputs, **got).as_config()
    assert {n: checked[n] for n in got if n != "betas"} == {n: v for n, v in got.items() if n != "betas"}


def _entries(block: str) -> dict[str, str]:
    """The entries of a numpydoc "Parameters" block: name line at 4 spaces -> its text."""
    entries: dict[str, str] = {}
    name = ""
    for line in block.splitlines():
        if line.startswith("     "):
            entries[name] += " " + line.strip()
        elif line.strip():
            name = line.strip()
            entries[name] = ""
    return {n: t.strip() for n, t in entries.items()}


@pytest.mark.parametrize("cls", ESTIMATORS, ids=lambda c: c.__name__)
def test_river_parameter_docs_are_generated_from_the_schema(cls):
    """Each ``_CORE`` entry of the docstring is the schema's description, what it allows and
    the estimator's own default, written by ``params_doc``."""
    defaults = {n: p.default for n, p in _core_parameters(cls).items()}
    block = params_doc(defaults)
    assert block in cls.__doc__
    entries = _entries(block)
    assert list(entries) == list(_CORE)
    for name, text in entries.items():
        assert text.startswith(SCHEMA[name].doc + ";"), (name, text)
        assert f"default ``{defaults[name]!r}``." in text, (name, text)


def test_params_doc_states_what_each_setting_allows():
    block = " ".join(_entries(params_doc({})).values())
    assert 'one of ``"adam"``, ``"sgd"``, ``"rmsprop"``' in block
    assert "in [0, 1)" in block and "two numbers, each in [0, 1)" in block
    assert "in (0, inf) or ``None``" in block  # clip
    assert "an integer >= 0 or ``None``" in block  # seed


# ------------------------------------------------------------------------------ CLI
# The CLI's own spellings of settings: option name -> (setting, element of a pair or None)
CLI_SPELLING = {
    "beta1": ("betas", 0), "beta2": ("betas", 1),
    "standardize": ("standardize_inputs", None), "standardize_target": ("standardize_targets", None),
}
# The CLI regresses or forecasts a numeric column: class indices (cross_entropy) have no column
CLI_LOSSES = ("squared", "huber")



cli = pytest.importorskip("streamlstm.adapters.cli")  # click is the CLI's extra


def _cli_options() -> dict[str, Any]:
    run = cli.main.commands["run"]
    by_name = {p.name: p for p in run.params}
    return {name: by_name[name] for name in cli._MODEL_NAMES}


def _setting_of(option: str) -> tuple[SettingInfo, int | None]:
    name, element = CLI_SPELLING.get(option, (option, None))
    return SCHEMA[name], element


def test_cli_model_options_are_exactly_the_schema():
    options = _cli_options()
    covered = {_setting_of(o)[0].name for o in options}
    assert covered == set(names()) - DERIVED, covered ^ (set(names()) - DERIVED)
    assert list(options) == sorted(options, key=lambda o: list(names()).index(_setting_of(o)[0].name))


@pytest.mark.parametrize("option", list(_cli_options()))
def test_cli_option_default_is_the_schema_default(option):
    opt = _cli_options()[option]
    info, element = _setting_of(option)
    default = info.default if element is None else info.default[element]
    if option == "bptt":  # None: the schema's 16, or H + 15 with --ahead H (a label H rows late)
        assert opt.default is None and f"Default {default}" in opt.help
        return
    assert opt.default == default, (option, opt.default, default)


def _click_interval(opt: Any) -> Interval | None:
    t = opt.type
    if not hasattr(t, "min"):
        return None
    low = -math.inf if t.min is None else t.min
    high = math.inf if t.max is None else t.max
    return Interval(low, high, bool(t.min_open), bool(t.max_open) or t.max is None)


def _schema_interval(info: SettingInfo) -> Interval | None:
    b = info.bounds
    if b is None:
        return None
    if info.type.startswith("int") and b.high >= 2 ** 31 - 1:  # the overflow guard: the core's alone
        return Interval(b.low, math.inf, b.low_open, True)
    return b


@pytest.mark.parametrize("option", list(_cli_options()))
def test_cli_option_allows_what_the_schema_allows(option):
    opt = _cli_options()[option]
    info, _ = _setting_of(option)
    if info.choices is not None:
        allowed = CLI_LOSSES if option == "loss" else info.choices
        assert tuple(opt.type.choices) == allowed
        return
    if info.type == "bool":
        assert opt.is_flag and opt.secondary_opts, option
        return
    schema = _schema_interval(info)
    cli = _click_interval(opt)
    if option == "clip":  # the CLI spells None as 0: [0, inf) is (0, inf) or None
        assert cli == Interval(0.0, math.inf, False, True) and schema == Interval(0.0, math.inf, True, True)
        return
    assert cli == schema, (option, cli, schema)
