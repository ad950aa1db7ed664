"""The numba kernels, by topic.

===============  ===========================================================================
``layout``       every offset into the model's flat buffers (with a map), views
``activations``  σ and tanh from one inlinable exp
``cell``         one layer step forward (one stream or a tile of keys) and backward
``normalise``    Welford statistics, network inputs/targets, outputs in target units
``checks``       refusals of bad inputs, targets and lags
``state_check``  a state from a file or bytes: finite, label flags, class indices, counters
``tbptt``        a stream's step, its labels, the loss gradient, the backward window
``optim``        gradient clipping, SGD, Adam, RMSprop
``entry``        the compiled entry points of a single stream (``OnlineLSTM``)
``keyed``        many keys on one set of weights: tiles, waves, entry points (``KeyedLSTM``)
``hashtable``    the int64 key -> row table searched by compiled code
``calibration``  online conformal calibration and anomaly scores (``OnlineCalibrator``, ``AnomalyScorer``)
``scored``       a prediction with its interval and anomaly score in one call (``predict_scored``)
``_jit``         the numba flags, and the purge of a stale cache
===============  ===========================================================================
"""
