"""Moved to :mod:`streamlstm._kernels.state_check`. This name stays only for the modules that
other branches were editing when it moved (``streamlstm/forecasting/_loading.py``; main's
``streamlstm/_kernels/entry.py`` since ``k_set_state``): after merging, the lead points their
imports at the new home and deletes this file."""

from ._kernels.state_check import MAX_STORED_COUNTER, first_fault

__all__ = ["MAX_STORED_COUNTER", "first_fault"]
