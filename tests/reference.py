"""Plain float64 NumPy reference for streamlstm, written from the equations.

Independent of the package: it only knows the weight layout of docs/core-api.md.

    LSTM (PyTorch gate order i, f, g, o):
        z  = W_ih x + W_hh h + b
        i  = sigmoid(z_i)   f = sigmoid(z_f)   g = tanh(z_g)   o = sigmoid(z_o)
        c' = f * c + i * g
        h' = o * tanh(c')
    RNN:
        h' = tanh(W_ih x + W_hh h + b)
    Stack: layer k's input is layer k-1's new h.  Readout: out = V h_top + a.

Truncated BPTT (the contract's semantics, see ``schedule``):
    * ``advance`` moves time one step; ``label(y, lag)`` attaches y to step t - lag.
    * An update happens inside ``label`` when >= k1 steps were advanced since the
      last update. Its loss is the MEAN over the pending labelled steps of their
      per-step loss; pending labels whose step left the k2-window are dropped.
    * The window is the k2 newest steps t-k2+1 .. t. The state entering the window
      (the state after step t-k2) is a constant computed with the unperturbed
      weights (``base_weights``).
"""

from collections import namedtuple

import numpy as np

# ----------------------------------------------------------------------------
# weights


def n_layers(weights):
    k = 0
    while f"weight_ih_l{k}" in weights:
        k += 1
    return k


def hidden_size(weights):
    return weights["weight_hh_l0"].shape[1]


def cell_of(weights):
    H = hidden_size(weights)
    rows = weights["weight_hh_l0"].shape[0]
    if rows == 4 * H:
        return "lstm"
    if rows == H:
        return "rnn"
    raise ValueError("cannot infer the cell from weight_hh_l0")


def random_weights(n_inputs, n_outputs, hidden, layers, cell, rng, scale=0.5):
    """A random weight dict in the contract layout (PyTorch layout)."""
    G = 4 * hidden if cell == "lstm" else hidden
    w = {}
    for k in range(layers):
        n_in = n_inputs if k == 0 else hidden
        w[f"weight_ih_l{k}"] = rng.normal(0.0, scale, (G, n_in))
        w[f"weight_hh_l{k}"] = rng.normal(0.0, scale, (G, hidden))
        w[f"bias_l{k}"] = rng.normal(0.0, scale, G)
    w["readout.weight"] = rng.normal(0.0, scale, (n_outputs, hidden))
    w["readout.bias"] = rng.normal(0.0, scale, n_outputs)
    return w


def copy_weights(weights):
    return {k: np.array(v, dtype=np.float64, copy=True) for k, v in weights.items()}


# ----------------------------------------------------------------------------
# forward


def sigmoid(z):
    # numerically stable logistic
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def cell_step(cell, W_ih, W_hh, b, x, h, c):
    """One cell step. Returns (h_new, c_new, cache); c is passed through for the RNN."""
    z = W_ih @ x + W_hh @ h + b
    if cell == "rnn":
        h_new = np.tanh(z)
        return h_new, c, (x, h, c, h_new)
    H = h.shape[0]
    i = sigmoid(z[0:H])
    f = sigmoid(z[H:2 * H])
    g = np.tanh(z[2 * H:3 * H])
    o = sigmoid(z[3 * H:4 * H])
    c_new = f * c + i * g
    tc = np.tanh(c_new)
    h_new = o * tc
    return h_new, c_new, (x, h, c, i, f, g, o, tc)


def step(weights, x, h, c, cell=None):
    """One stacked step. h, c: (layers, hidden). Returns (out, h_new, c_new, caches)."""
    cell = cell or cell_of(weights)
    L = n_layers(weights)
    h_new = np.empty_like(h)
    c_new = np.empty_like(c)
    caches = []
    inp = np.asarray(x, dtype=np.float64)
    for k in range(L):
        h_new[k], c_new[k], cache = cell_step(
            cell, weights[f"weight_ih_l{k}"], weights[f"weight_hh_l{k}"],
            weights[f"bias_l{k}"], inp, h[k], c[k])
        caches.append(cache)
        inp = h_new[k]
    out = weights["readout.weight"] @ inp + weights["readout.bias"]
    return out, h_new, c_new, caches


def zero_state(weights):
    shape = (n_layers(weights), hidden_size(weights))
    return np.zeros(shape), np.zeros(shape)


def forward(weights, X, h0=None, c0=None):
    """Run the stack over the rows of X.

    Returns (outs, hs, cs): outs (T, n_outputs) raw readout values (logits for
    cross-entropy), hs/cs (T, layers, hidden) = state AFTER each step.
    """
    X = np.asarray(X, dtype=np.float64)
    cell = cell_of(weights)
    z_h, z_c = zero_state(weights)
    h = z_h if h0 is None else np.array(h0, dtype=np.float64)
    c = z_c if c0 is None else np.array(c0, dtype=np.float64)
    T = X.shape[0]
    n_out = weights["readout.bias"].shape[0]
    outs = np.empty((T, n_out))
    hs = np.empty((T, *h.shape))
    cs = np.empty((T, *c.shape))
    for t in range(T):
        outs[t], h, c, _ = step(weights, X[t], h, c, cell)
        hs[t], cs[t] = h, c
    return outs, hs, cs


def softmax(z):
    e = np.exp(z - np.max(z))
    return e / e.sum()


def prediction(out, loss):
    """What the model returns: probabilities for cross-entropy, the raw value otherwise."""
    return softmax(out) if loss == "cross_entropy" else out


# ----------------------------------------------------------------------------
# per-step losses and their gradients w.r.t. the readout value


def step_loss(out, y, loss="squared", huber_delta=1.0):
    if loss == "squared":
        r = out - np.asarray(y, dtype=np.float64)
        return 0.5 * float(np.sum(r * r))
    if loss == "huber":
        r = out - np.asarray(y, dtype=np.float64)
        a = np.abs(r)
        d = huber_delta
        return float(np.sum(np.where(a <= d, 0.5 * r * r, d * (a - 0.5 * d))))
    if loss == "cross_entropy":
        z = out - np.max(out)
        return float(np.log(np.sum(np.exp(z))) - z[int(y)])
    raise ValueError(loss)


def step_loss_grad(out, y, loss="squared", huber_delta=1.0):
    if loss == "squared":
        return out - np.asarray(y, dtype=np.float64)
    if loss == "huber":
        r = out - np.asarray(y, dtype=np.float64)
        return np.clip(r, -huber_delta, huber_delta)
    if loss == "cross_entropy":
        p = softmax(out)
        p[int(y)] -= 1.0
        return p
    raise ValueError(loss)


# ----------------------------------------------------------------------------
# the event schedule of truncated BPTT

Update = namedtuple("Update", ["t", "items"])  # newest step, [(step, y), ...] kept labels


def events_from_arrays(Y, mask=None):
    """learn_many semantics: per row, advance then (if mask[t]) label(Y[t], lag=0)."""
    T = len(Y)
    mask = np.ones(T, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    ev = []
    for t in range(T):
        ev.append(("advance",))
        if mask[t]:
            ev.append(("label", Y[t], 0))
    return ev


def schedule(events, k1, k2):
    """Replay advance/label events; return the list of updates in order."""
    t = -1
    since = 0
    pending = []
    updates = []
    for ev in events:
        if ev[0] == "advance":
            t += 1
            since += 1
            continue
        _, y, lag = ev
        if not (0 <= lag < k2) or lag > t:
            raise ValueError("invalid lag")
        pending.append((t - lag, y))
        if since >= k1:
            kept = [(s, yy) for (s, yy) in pending if s > t - k2]
            updates.append(Update(t, kept))
            pending = []
            since = 0
    return updates


def _window_start(update, k2):
    return max(0, update.t - k2 + 1)


def _resolve(weights, X, Y, mask, k1, k2, update, events, base_weights, h0, c0):
    if events is None:
        events = events_from_arrays(Y, mask)
    ups = schedule(events, k1, k2)
    upd = ups[update]
    base = weights if base_weights is None else base_weights
    start = _window_start(upd, k2)
    h, c = zero_state(weights)
    if h0 is not None:
        h = np.array(h0, dtype=np.float64)
    if c0 is not None:
        c = np.array(c0, dtype=np.float64)
    if start > 0:  # the constant state entering the window
        _, hs, cs = forward(base, X[:start], h, c)
        h, c = hs[-1].copy(), cs[-1].copy()
    return upd, start, h, c


def tbptt_loss(weights, X, Y=None, mask=None, k1=1, k2=1, *, loss="squared",
               huber_delta=1.0, h0=None, c0=None, update=-1, events=None,
               base_weights=None):
    """Loss of one TBPTT update (default: the last one) as a function of ``weights``.

    The state entering the k2-window is computed with ``base_weights`` (defaults
    to ``weights``): pass the unperturbed weights there when taking finite
    differences. ``events`` (list of ("advance",) / ("label", y, lag)) overrides
    Y/mask for delayed labels; the i-th advance consumes X[i].
    """
    X = np.asarray(X, dtype=np.float64)
    upd, start, h, c = _resolve(weights, X, Y, mask, k1, k2, update, events,
                                base_weights, h0, c0)
    if not upd.items:
        return 0.0
    last = max(s for s, _ in upd.items)
    outs, _, _ = forward(weights, X[start:last + 1], h, c)
    total = sum(step_loss(outs[s - start], y, loss, huber_delta) for s, y in upd.items)
    return total / len(upd.items)


def full_bptt_loss(weights, X, Y, mask=None, *, loss="squared", huber_delta=1.0,
                   h0=None, c0=None):
    """Untruncated: mean over all labelled steps, gradient flows back to h0."""
    outs, _, _ = forward(weights, X, h0, c0)
    T = len(X)
    mask = np.ones(T, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    idx = np.flatnonzero(mask)
    return sum(step_loss(outs[t], Y[t], loss, huber_delta) for t in idx) / len(idx)


# ----------------------------------------------------------------------------
# hand-written backward (BPTT through the window)


def _cell_backward(cell, W_ih, W_hh, cache, dh, dc):
    """Backprop one cell step. Returns (dW_ih, dW_hh, db, dx, dh_prev, dc_prev)."""
    if cell == "rnn":
        x, h, c, h_new = cache
        dz = dh * (1.0 - h_new * h_new)
        dc_prev = dc  # unused state, passes through
    else:
        x, h, c, i, f, g, o, tc = cache
        dc_new = dc + dh * o * (1.0 - tc * tc)
        dz = np.concatenate([
            dc_new * g * i * (1.0 - i),      # i
            dc_new * c * f * (1.0 - f),      # f
            dc_new * i * (1.0 - g * g),      # g
            dh * tc * o * (1.0 - o),         # o
        ])
        dc_prev = dc_new * f
    return (np.outer(dz, x), np.outer(dz, h), dz, W_ih.T @ dz, W_hh.T @ dz, dc_prev)


def tbptt_grad(weights, X, Y=None, mask=None, k1=1, k2=1, *, loss="squared",
               huber_delta=1.0, h0=None, c0=None, update=-1, events=None):
    """Gradient of ``tbptt_loss`` (entering state held constant), by hand."""
    X = np.asarray(X, dtype=np.float64)
    cell = cell_of(weights)
    L = n_layers(weights)
    upd, start, h, c = _resolve(weights, X, Y, mask, k1, k2, update, events,
                                None, h0, c0)
    grads = {k: np.zeros_like(v, dtype=np.float64) for k, v in weights.items()}
    if not upd.items:
        return grads
    last = max(s for s, _ in upd.items)
    # forward through the window, keeping caches
    steps = []
    for s in range(start, last + 1):
        out, h, c, caches = step(weights, X[s], h, c, cell)
        steps.append((out, h.copy(), caches))
    # d loss / d out for each step (mean over kept labels)
    n = len(upd.items)
    douts = {}
    for s, y in upd.items:
        douts[s] = douts.get(s, 0.0) + step_loss_grad(steps[s - start][0], y, loss,
                                                      huber_delta) / n
    V = weights["readout.weight"]
    dh_next = np.zeros_like(h)  # gradient wrt state (layers, hidden) from the future
    dc_next = np.zeros_like(c)
    for s in range(last, start - 1, -1):
        out, h_s, caches = steps[s - start]
        dh = dh_next.copy()
        dc = dc_next.copy()
        if s in douts:
            d = douts[s]
            grads["readout.weight"] += np.outer(d, h_s[L - 1])
            grads["readout.bias"] += d
            dh[L - 1] += V.T @ d
        for k in range(L - 1, -1, -1):
            dWi, dWh, db, dx, dhp, dcp = _cell_backward(
                cell, weights[f"weight_ih_l{k}"], weights[f"weight_hh_l{k}"],
                caches[k], dh[k], dc[k])
            grads[f"weight_ih_l{k}"] += dWi
            grads[f"weight_hh_l{k}"] += dWh
            grads[f"bias_l{k}"] += db
            dh_next[k] = dhp
            dc_next[k] = dcp
            if k > 0:
                dh[k - 1] += dx
    return grads


# ----------------------------------------------------------------------------
# finite differences


def numerical_grad(f, weights, eps=1e-6):
    """Central differences of f(weights) for every entry of every array."""
    w = copy_weights(weights)
    grads = {}
    for key, arr in w.items():
        g = np.zeros_like(arr)
        flat = arr.reshape(-1)
        gflat = g.reshape(-1)
        for j in range(flat.size):
            old = flat[j]
            flat[j] = old + eps
            fp = f(w)
            flat[j] = old - eps
            fm = f(w)
            flat[j] = old
            gflat[j] = (fp - fm) / (2.0 * eps)
        grads[key] = g
    return grads


def rel_error(a, b, floor=1e-8):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(a) + np.linalg.norm(b), floor))
