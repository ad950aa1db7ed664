"""Online forecasting: simple experts, online autoregressions, aggregation, season detection.

>>> from streamlstm.forecasting import Forecaster
>>> Forecaster(horizon=2).horizon
2
"""

from .engine import Forecaster

__all__ = ["Forecaster"]
