"""River's own estimator checks (``river.checks.yield_checks``) over the four River adapters
and a pipeline ``preprocessing.StandardScaler() | LSTMRegressor()``.

River's check datasets need scikit-learn (part of the ``dev`` extra). The anomaly checks stream River's
``CreditCard``, a download: without it they run on a local stand-in (TrumpApproval's numeric
features) except the ROC check, which needs the labelled download and is skipped for that
reason only.
"""

from __future__ import annotations

import pytest

river = pytest.importorskip("river")
pytest.importorskip("pandas")
pytest.importorskip("sklearn", reason="river.checks builds its datasets with scikit-learn")

from river import base, checks, datasets, preprocessing  # noqa: E402

from streamlstm.adapters.river import (  # noqa: E402
    LSTMAnomalyDetector,
    LSTMClassifier,
    LSTMForecaster,
    LSTMRegressor,
)

HAVE_CREDITCARD = datasets.CreditCard().is_downloaded


class _LocalAnomalyStream:
    """Stand-in for CreditCard: TrumpApproval's 6 numeric features, label False."""

    def __init__(self, n):
        self.n = n

    def __iter__(self):
        for x, _ in datasets.TrumpApproval().take(self.n):
            yield dict(x), False


def _estimators():
    out = []
    for cls in (LSTMRegressor, LSTMClassifier, LSTMForecaster, LSTMAnomalyDetector):
        for i, params in enumerate(cls._unit_test_params()):
            out.append((f"{cls.__name__}[{i}]", cls(**params)))
    out.append(("StandardScaler|LSTMRegressor",
                preprocessing.StandardScaler() | LSTMRegressor(**next(LSTMRegressor._unit_test_params()))))
    return out


def _cases():
    cases = []
    for name, est in _estimators():
        counts: dict[str, int] = {}
        for check in checks.yield_checks(est):
            cname = check.__name__
            counts[cname] = counts.get(cname, 0) + 1
            cid = f"{name}-{cname}" + (f"-{counts[cname]}" if counts[cname] > 1 else "")
            marks = ()
            dataset_check = hasattr(check, "keywords") and "dataset" in check.keywords
            if isinstance(est, base.AnomalyDetector) and dataset_check and not HAVE_CREDITCARD:
                if cname == "check_roc_auc":
                    marks = (pytest.mark.skip(reason="needs the CreditCard download"),)
                else:
                    n = 1000 if cname == "check_bounded_memory_growth" else 200
                    check = _on_local_stream(check, n)
            cases.append(pytest.param(est, check, id=cid, marks=marks))
    return cases


def _on_local_stream(check, n):
    def run(model):
        return check.func(model, dataset=_LocalAnomalyStream(n))

    run.__name__ = check.__name__
    return run


@pytest.mark.parametrize("estimator, check", _cases())
def test_river_check(estimator, check):
    if check.__name__ in estimator._unit_test_skips():
        pytest.skip("declared in _unit_test_skips")
    check(estimator.clone())


def test_every_estimator_is_checked():
    names = {type(est).__name__ for _, est in _estimators()}
    assert {"LSTMRegressor", "LSTMClassifier", "LSTMForecaster", "LSTMAnomalyDetector", "Pipeline"} <= names
