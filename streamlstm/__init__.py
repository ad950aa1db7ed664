"""streamlstm: stateful LSTMs that predict and learn one event at a time.

>>> from streamlstm import OnlineLSTM
>>> model = OnlineLSTM(n_inputs=3, n_outputs=1, hidden=8)
>>> y_hat = model.learn_one([0.1, 0.2, 0.3], 1.0)
"""

from .model import InputError, LSTMState, OnlineLSTM
from .persistence import FormatError

__all__ = ["OnlineLSTM", "LSTMState", "InputError", "FormatError", "__version__"]
__version__ = "0.1.0"
