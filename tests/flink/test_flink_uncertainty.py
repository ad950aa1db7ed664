"""``--interval`` / ``--anomaly`` with the serving and learning engines, driven in process
(no pyflink, no flink marker: part of the default run): every cell equals the core's
``ForecastCalibration`` and ``AnomalyScorer`` fed each key's residuals in Python
(``flink_helpers.ReferenceUncertainty``), with and without the memo, after a rewind of
Flink state, and the predictions and model states stay those of the plain engines."""

from __future__ import annotations

import pytest
from flink_helpers import make_model, reference_learning, reference_serving, write_events

from streamlstm import OnlineLSTM
from streamlstm.adapters.flink import LearningEngine, ServingEngine, state_digest

UNCERTAINTY = [{"interval": [0.9], "anomaly": True}, {"interval": [0.5, 0.95]}, {"anomaly": True}]


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("model") / "model.slstm")


def drive(engine, lines, rewind_at=None):
    """Per key the state bytes returned last; ``rewind_at=(a, b)``: at row b, Flink's state
    goes back to what it was at row a and rows a.. are replayed through the same engine."""
    state, out, saved = {}, [], None
    i = 0
    while i < len(lines):
        if rewind_at and i == rewind_at[0] and saved is None:
            saved = dict(state)
        if rewind_at and i == rewind_at[1] and saved is not None:
            state, out, i = saved, out[:rewind_at[0]], rewind_at[0]
            rewind_at = None
            continue
        key = lines[i].split(",", 1)[0]
        new, o = engine.process(state.get(key), lines[i])
        if new is not None:
            state[key] = new
        out.append(o)
        i += 1
    return out, state


@pytest.mark.parametrize("uncertainty", UNCERTAINTY)
@pytest.mark.parametrize("cls", [ServingEngine, LearningEngine])
def test_intervals_and_scores_equal_the_core_per_key(tmp_path, model_path, cls, uncertainty):
    rows = write_events(tmp_path / "ev.csv", 500, 5, seed=12)
    lines = (tmp_path / "ev.csv").read_text().splitlines()
    reference = reference_serving if cls is ServingEngine else reference_learning
    want = reference(model_path, rows, uncertainty=uncertainty)
    n_cells = 4 + 2 * len(uncertainty.get("interval", ())) + uncertainty.get("anomaly", False)
    assert all(len(w.split(",")) == n_cells for w in want)
    assert sum(1 for w in want if w.split(",")[-1]) > 300          # numbers, not only empty cells
    for cache_mb in (64.0, 0.0):
        assert drive(cls(model_path, cache_mb=cache_mb, uncertainty=uncertainty), lines)[0] == want
    assert drive(cls(model_path, uncertainty=uncertainty), lines, rewind_at=(200, 330))[0] == want
    # the predictions are the plain engine's, and so is the model's state inside the key state
    plain = [r.split(",")[:3] for r in reference(model_path, rows)]
    assert [w.split(",")[:3] for w in want] == plain


def test_uncertainty_state_is_checked_and_options_must_match(tmp_path, model_path):
    state_plain, _ = ServingEngine(model_path).process(None, "a,1,0.5,0.5,1.0")
    with_unc = ServingEngine(model_path, uncertainty={"interval": [0.9]})
    state, out = with_unc.process(None, "a,1,0.5,0.5,1.0")
    assert out.endswith(",,")                                      # no residual yet: empty bounds
    with pytest.raises(RuntimeError, match=r"state .none.*other options"):
        with_unc.process(state_plain, "a,2,0.5,0.5")               # resumed from a job without --interval
    damaged = bytearray(state)
    damaged[16:24] = bytes.fromhex("000000000000f0ff")             # the first count: -inf
    with pytest.raises(RuntimeError, match="non-finite"):
        with_unc.process(bytes(damaged), "a,2,0.5,0.5")
    with pytest.raises(RuntimeError, match="another layout"):
        ServingEngine(model_path, uncertainty={"interval": [0.9], "anomaly": True}).process(state, "a,2,0.5,0.5")
    with pytest.raises(ValueError, match="one numeric output"):
        LearningEngine(OnlineLSTM(n_inputs=1, n_outputs=3, hidden=4, loss="cross_entropy").to_bytes(),
                       uncertainty={"anomaly": True})
    with pytest.raises(ValueError, match="interval level"):
        ServingEngine(model_path, uncertainty={"interval": [1.2]})
    # without the options the key state is byte for byte the plain engine's (old savepoints resume)
    assert ServingEngine(model_path, uncertainty={}).process(None, "a,1,0.5,0.5,1.0")[0] == state_plain
    assert state_digest(state_plain) != state_digest(state)


@pytest.mark.parametrize("uncertainty", [{"interval": [0.9]}, {"interval": [0.5, 0.95], "anomaly": True}])
def test_a_key_state_written_before_the_candidate_scale_rates_resumes(tmp_path, model_path, uncertainty):
    """A key's floats as the version before the calibrator's candidate scale rates wrote them
    (each calibrator row 2 floats per rate shorter) load, widened: the next row's bounds are
    those that version's state gives, and the key's state is written back in this layout."""
    import numpy as np

    from streamlstm.adapters.flink import _KEY_STATE_HEADER, _KEY_STATE_MAGIC

    write_events(tmp_path / "ev.csv", 120, 1, seed=3)
    lines = (tmp_path / "ev.csv").read_text().splitlines()
    engine = ServingEngine(model_path, uncertainty=uncertainty)
    _, states = drive(engine, lines[:100])
    (key, state), = states.items()
    unc = engine._unc
    head = _KEY_STATE_HEADER.size
    n_bytes = _KEY_STATE_HEADER.unpack_from(state)[2]
    flat = np.frombuffer(state, dtype="<f8", count=n_bytes // 8, offset=head)
    cal = unc.cal.calibrator
    R = len(cal.scale_rates)
    calib = flat[:unc._sizes[0]].reshape(cal.state.shape)
    # the old layout: no candidates, the key's running scale as it was
    old_cal = calib[..., :cal.width - 2 * R]
    old_flat = np.concatenate([old_cal.reshape(-1), flat[unc._sizes[0]:]])
    old_state = b"".join((_KEY_STATE_HEADER.pack(_KEY_STATE_MAGIC, 1, old_flat.nbytes), old_flat.tobytes(),
                          state[head + n_bytes:]))
    widened = np.concatenate([old_cal, np.repeat(old_cal[..., 1:2], R, axis=2), np.zeros((*old_cal.shape[:2], R))], axis=2)
    same_scale = np.concatenate([widened.reshape(-1), flat[unc._sizes[0]:]])
    same_state = b"".join((_KEY_STATE_HEADER.pack(_KEY_STATE_MAGIC, 1, same_scale.nbytes), same_scale.tobytes(),
                           state[head + n_bytes:]))
    new_state, out = ServingEngine(model_path, uncertainty=uncertainty).process(old_state, lines[100])
    assert out == ServingEngine(model_path, uncertainty=uncertainty).process(same_state, lines[100])[1]
    assert _KEY_STATE_HEADER.unpack_from(new_state)[2] == n_bytes         # written back in this layout
    assert out.split(",")[3:5] != ["", ""] and key == lines[100].split(",")[0]
