"""River estimators over the streamlstm core: a regressor, a classifier and an anomaly detector,
each a stateful LSTM that predicts and learns one event at a time, and a forecaster over the
core's forecasting engine (:class:`streamlstm.Forecaster`, whose LSTM is one of its experts).

    pip install "streamlstm[river]"

>>> from streamlstm.adapters.river import LSTMRegressor, LSTMClassifier, LSTMForecaster, LSTMAnomalyDetector

Conventions shared by the four estimators
-----------------------------------------
* **State.** Every ``learn_one`` advances the recurrent state by one event; ``predict_one`` /
  ``predict_proba_one`` / ``score_one`` / ``forecast`` are pure (state, weights and statistics
  unchanged). ``reset_state()`` starts a new stream with the learned weights. The wrapped
  :class:`streamlstm.OnlineLSTM` is ``estimator.lstm`` (``None`` until the first event); the
  forecaster's is its core :class:`streamlstm.Forecaster`, ``estimator.engine``, whose settings
  it takes under their own names (``lstm`` is one of them).
* **Events without a label.** ``advance_one(x)`` moves the state (and the input statistics)
  without learning; ``learn_one(x, None)`` does the same for the regressor and the classifier.
  The forecaster's ``learn_one(None, x)`` learns nothing and steps nothing (as the command
  line does with a row without a value).
* **Features** are mapped to input columns by order of first arrival (features new in the same
  event are ordered by type and name), so dict order never matters. A feature that emerges
  mid-stream grows the input weights (``OnlineLSTM.add_inputs``: zero weights, so predictions
  do not jump). A missing feature (absent, ``None`` or NaN) counts as its running mean, i.e. it
  standardises to about 0 (with ``inputs="changes"``: as no change). A value that is not a real number raises a ``TypeError`` naming the
  feature and the value; an infinite value raises a ``ValueError``. Features seen only by
  ``predict_one`` are ignored (their weights would be zero).
* **Hyper-parameters** are the core's (see ``docs/core-api.md``), each stored under its own
  name; the network is built at the first event with features (the forecaster's engine at its
  first value), with ``seed`` drawing its weights
  (two estimators with one seed are identical). ``clone()`` gives a fresh estimator with the same
  parameters; ``clone(include_attributes=True)``, ``copy.deepcopy`` and pickling keep the weights,
  the optimizer moments, the statistics and the state.
* **Mini-batches** (regressor, classifier): ``learn_many(X, y)`` runs the core's compiled block
  call and gives exactly the results of the ``learn_one`` loop over the rows (missing values are
  NaN). ``predict_many`` / ``predict_proba_many`` follow River's meaning: one independent
  look-ahead per row from the current state, i.e. ``predict_one`` of each row.

The files: one estimator each in ``regressor``, ``classifier``, ``forecaster`` and ``anomaly``
(``_forecaster_0_1``: 0.1.0's forecaster, which its pickles load into);
``base`` (what they share), ``features`` (value checks and input encodings), ``params`` (the
core settings they pass through and their documentation), ``running_median``.
"""

from __future__ import annotations

from .anomaly import LSTMAnomalyDetector
from .classifier import LSTMClassifier
from .features import Features as _Features  # noqa: F401  (0.1.0 pickles, see below)
from .forecaster import LSTMForecaster
from .regressor import LSTMRegressor
from .running_median import RunningMedianAbs as _RunningMedianAbs  # noqa: F401  (likewise)

__all__ = ["LSTMAnomalyDetector", "LSTMClassifier", "LSTMForecaster", "LSTMRegressor"]

# The estimators' public home: pickles name this module (so they survive moves between the
# files of this package), and the doctests of their docstrings run under it.
for _cls in (LSTMRegressor, LSTMClassifier, LSTMForecaster, LSTMAnomalyDetector):
    _cls.__module__ = __name__
del _cls
# _Features and _RunningMedianAbs: 0.1.0 kept these in this module under these names, and its
# pickles name them so (tests/test_river_package.py loads such pickles).
