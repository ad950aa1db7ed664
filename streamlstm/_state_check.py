"""Moved to :mod:`streamlstm._kernels.state_check`. This name is kept only for
``streamlstm/forecasting/_loading.py``, which another branch is rewriting: after merging, the lead
points that import at the new home and deletes this file."""

from ._kernels.state_check import MAX_STORED_COUNTER

__all__ = ["MAX_STORED_COUNTER"]
