"""Framework adapters over the streamlstm core: River estimators, a CLI, Flink keyed state.

Import them as ``streamlstm.adapters.<name>``; each needs its extra (``river``, ``cli``,
``flink``).
"""

if __name__ == "adapters":  # the folder is installed as streamlstm.adapters only
    raise ImportError("import streamlstm.adapters, not adapters (that name belongs to another package)")
