"""streamlstm: stateful LSTMs that predict and learn one event at a time.

>>> from streamlstm import OnlineLSTM
>>> model = OnlineLSTM(n_inputs=3, n_outputs=1, hidden=8)
>>> y_hat = model.learn_one([0.1, 0.2, 0.3], 1.0)
"""

import builtins as _builtins
import sys as _sys

# PyFlink's Python worker swaps ``print`` in its main module, and numba's import-time check
# then fails ("module ... has no attribute 'print'"). Restore it before numba is imported.
_main = _sys.modules.get(getattr(_builtins.print, "__module__", "builtins"))
if _main is not None and getattr(_main, "print", None) is not _builtins.print:
    _main.print = _builtins.print  # type: ignore[attr-defined]  # a module attribute PyFlink replaced

from typing import TYPE_CHECKING, Any  # noqa: E402  (after the print fix above, on purpose)

from . import _numba_config  # noqa: E402,F401 - numba's cache directory, before any kernel module

__all__ = ["AnomalyDetector", "AnomalyScorer", "Forecaster", "FormatError", "InputError", "KeyedLSTM", "LSTMState",
           "OnlineCalibrator", "OnlineLSTM", "__version__"]
__version__ = "0.1.0"

# Imported on first use: numba takes a few hundred milliseconds to import, and commands
# such as ``streamlstm --help`` must answer without it.
_LAZY = {"OnlineLSTM": ".model", "LSTMState": ".model", "InputError": ".model",
         "FormatError": ".persistence", "KeyedLSTM": ".keyed", "Forecaster": ".forecasting",
         "OnlineCalibrator": ".calibration", "AnomalyScorer": ".anomaly", "AnomalyDetector": ".anomaly"}

if TYPE_CHECKING:
    from .anomaly import AnomalyDetector, AnomalyScorer
    from .calibration import OnlineCalibrator
    from .forecasting import Forecaster
    from .keyed import KeyedLSTM
    from .model import InputError, LSTMState, OnlineLSTM
    from .persistence import FormatError


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'streamlstm' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_LAZY))
