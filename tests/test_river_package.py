"""The River adapter's package: its modules' doctests, the estimators' public home, and their
settings pinned to the one list of core settings and documented."""

from __future__ import annotations

import doctest
import importlib
import inspect
import pickle
import pickletools
import pkgutil
from pathlib import Path

import pytest

pytest.importorskip("river")

import streamlstm.adapters.river as river_adapter
from streamlstm import OnlineLSTM
from streamlstm.adapters.river import (
    LSTMAnomalyDetector,
    LSTMClassifier,
    LSTMForecaster,
    LSTMRegressor,
)
from streamlstm.adapters.river.base import LSTMEstimator
from streamlstm.adapters.river.params import _CORE, _CORE_OPTIONAL, params_doc

ESTIMATORS = [LSTMRegressor, LSTMClassifier, LSTMForecaster, LSTMAnomalyDetector]
MODULES = sorted(m.name for m in pkgutil.iter_modules(river_adapter.__path__))


def test_one_module_per_estimator():
    assert {"regressor", "classifier", "forecaster", "anomaly", "features", "base"} <= set(MODULES)
    homes = {cls.__name__: cls.__init__.__code__.co_filename.rsplit("/", 1)[-1] for cls in ESTIMATORS}
    assert homes == {"LSTMRegressor": "regressor.py", "LSTMClassifier": "classifier.py",
                     "LSTMForecaster": "forecaster.py", "LSTMAnomalyDetector": "anomaly.py"}


@pytest.mark.parametrize("name", MODULES)
def test_module_doctests(name):
    """The package's own doctests run in tests/test_doctests.py; these are its modules'."""
    module = importlib.import_module(f"{river_adapter.__name__}.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} doctest(s) failed in {name}"


def test_estimators_live_at_the_public_path():
    """Pickles name ``streamlstm.adapters.river`` (as 0.1.0's did), and the estimators'
    docstring examples are found by the package's doctest run."""
    found = {t.name.rsplit(".", 1)[-1] for t in doctest.DocTestFinder().find(river_adapter) if t.examples}
    for cls in ESTIMATORS:
        assert cls.__module__ == "streamlstm.adapters.river"
        assert cls.__name__ in found
        blob = pickle.dumps(cls(**next(cls._unit_test_params())))
        names = [arg for op, arg, _ in pickletools.genops(blob) if op.name == "SHORT_BINUNICODE"]
        assert names[:2] == ["streamlstm.adapters.river", cls.__name__]
        assert type(pickle.loads(blob)) is cls


def _documented_names(doc: str) -> set[str]:
    """Names of the entries of a numpydoc "Parameters" section (``a, b`` lines at 4 spaces)."""
    section = doc.split("Parameters\n    ----------\n", 1)[1].split("\n\n", 1)[0]
    names: set[str] = set()
    for line in section.splitlines():
        if line.startswith("    ") and not line.startswith("     ") and not line.strip().startswith("Defaults"):
            names.update(n.strip() for n in line.split(","))
    return names


@pytest.mark.parametrize("cls", [LSTMRegressor, LSTMClassifier, LSTMAnomalyDetector])
def test_signature_holds_the_core_settings_and_each_is_documented(cls):
    params = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    assert set(_CORE) <= set(params)
    core = set(inspect.signature(OnlineLSTM.__init__).parameters)
    assert set(params) & core <= set(_CORE) | set(_CORE_OPTIONAL)  # else not passed to the core
    assert set(params) <= _documented_names(cls.__doc__)
    est = cls()
    assert {name: getattr(est, name) for name in params} == est._get_params()


def test_forecaster_takes_the_engines_settings_by_name_and_documents_each():
    """LSTMForecaster is a shell over the core engine: its settings are the engine's (same
    names, same defaults; ``n_features`` comes from the data), plus its own two."""
    from streamlstm import Forecaster

    # interval_levels: River's intervals are at one level (``interval_level``), as its regressors'
    engine = {n: p.default for n, p in inspect.signature(Forecaster.__init__).parameters.items()
              if n not in ("self", "n_features", "interval_levels")}
    params = {n: p.default for n, p in inspect.signature(LSTMForecaster.__init__).parameters.items() if n != "self"}
    assert {n: params[n] for n in engine} == engine
    assert set(params) - set(engine) == {"exogenous", "interval_level"}
    assert set(params) <= _documented_names(LSTMForecaster.__doc__)
    est = LSTMForecaster()
    assert {name: getattr(est, name) for name in params} == est._get_params()


def test_core_settings_are_documented_once():
    entries = [line.strip() for line in params_doc().splitlines() if not line.startswith("     ")]
    assert sorted(entries) == sorted(_CORE)
    for cls in (c for c in ESTIMATORS if issubclass(c, LSTMEstimator)):  # once each: none documents its own
        names = [n.strip() for line in cls.__doc__.splitlines()
                 if line.startswith("    ") and not line.startswith("     ") for n in line.split(",")]
        assert all(names.count(name) == 1 for name in _CORE), cls.__name__


def test_every_package_is_in_the_install_list():
    """A non-editable install ships only the packages pyproject.toml lists (a subpackage left
    out imports in the editable development install and fails after ``pip install .``)."""
    tomllib = pytest.importorskip("tomllib")
    root = Path(__file__).resolve().parent.parent
    config = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    dirs = {name: root / path for name, path in config["package-dir"].items()}
    found = set()
    for top, folder in dirs.items():
        for init in folder.rglob("__init__.py"):
            rel = init.parent.relative_to(folder).parts
            found.add(".".join((top, *rel)))
    assert found <= listed, f"packages missing from pyproject.toml: {sorted(found - listed)}"


def test_pickles_of_version_0_1_0_load_and_continue():
    """tests/data/river_estimators_0.1.0.pkl: the four estimators pickled mid-stream by 0.1.0's
    single-file adapter, each with a probe and what 0.1.0 answered to it."""
    fixtures = pickle.loads((Path(__file__).parent / "data" / "river_estimators_0.1.0.pkl").read_bytes())
    reg, probe, want = fixtures["regressor"]
    assert isinstance(reg, LSTMRegressor) and reg.predict_one(probe) == want
    clf, probe, want = fixtures["classifier"]
    assert clf.predict_proba_one(probe) == want
    fc, xs, want = fixtures["forecaster"]
    assert fc.forecast(3, xs) == want
    ad, probe, want = fixtures["anomaly"]
    assert ad.score_one(probe) == want
    assert all(not hasattr(est._features, "m2") for est, _, _ in fixtures.values())  # 0.1.0's variance
    x = {"a": 0.5, "b": 0.0}
    reg.learn_one(x, 1.0)  # and they go on learning
    clf.learn_one(x, True)
    fc.learn_one(1.0, x)
    ad.learn_one(x)
    again = pickle.loads(pickle.dumps(reg))
    assert again.predict_one(x) == reg.predict_one(x)
