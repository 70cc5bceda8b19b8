"""Calls for inference over a step or a few (``layer(x, record=False)`` with T = 1, or N·T <= 4,
unidirectional, no lengths, no dropout between layers) run as T steps of ``step()``'s kernel on
the compiled backend (layers/_stack.py, ``_by_steps_suits``): the same bits as those steps, the
recording call's results to rounding, and everything else of a call (the carried state,
``h0``, layouts, rebound parameters) as before. Other backends and other calls never take it."""

import numpy as np
import pytest

import pyrnn_fast as prf
from helpers import assert_close
from pyrnn_fast.layers import _stack

CELLS = {"RNN": prf.RNN, "LSTM": prf.LSTM, "GRU": prf.GRU}


@pytest.fixture
def routed(monkeypatch):
    """A list that gets one entry per call run by steps."""
    calls = []
    real = _stack._forward_by_steps

    def counting(*args):
        calls.append(args[1].shape[:2])
        return real(*args)

    monkeypatch.setattr(_stack, "_forward_by_steps", counting)
    return calls


def _parts(state):
    return state if isinstance(state, tuple) else (state,)


def _twins(cell, dtype, backend, **kw):
    """Two layers with the same weights (and a third for the steps)."""
    make = CELLS[cell]
    return [make(5, 9, seed=4, dtype=dtype, backend=backend, **kw) for _ in range(3)]


@pytest.mark.parametrize("cell", sorted(CELLS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("num_layers", [1, 2])
def test_short_inference_calls_are_steps(cell, dtype, num_layers, backend, routed):
    """A stateful layer fed chunks (N, T) = (1, 1), (1, 4), (2, 2), (8, 1): its outputs and carried
    state equal a recording layer's to rounding (the float64 reference's tolerance) and, on
    the compiled backend, bit for bit what step() gives over the same steps."""
    kw = dict(num_layers=num_layers, stateful=True, dropout=0.5)  # training mode: dropout between layers...
    recording, inference, stepping = _twins(cell, dtype, backend, **kw)
    for layer in (recording, inference, stepping):
        layer.eval()  # ... which eval() turns off: then calls may run by steps
    rng = np.random.default_rng(0)
    for N, T in [(1, 1), (1, 4), (2, 2), (8, 1), (8, 1)]:
        for layer in (recording, inference, stepping):
            if layer.state is not None and _parts(layer.state)[0].shape[1] != N:
                layer.reset_state()
        x = rng.standard_normal((N, T, 5)).astype(dtype)
        want, want_state = recording(x)
        got, got_state = inference(x, record=False)
        assert inference._cache is None
        for what, a, b in [("out", got, want), *zip(("h_n", "c_n"), _parts(got_state), _parts(want_state))]:
            assert_close(a, b.astype(np.float64), dtype, what=f"{what} N={N} T={T}")
        if backend == "cpp":
            tops = np.stack([stepping.step(x[:, t]) for t in range(T)], axis=1)
            np.testing.assert_array_equal(got, tops)
            for a, b in zip(_parts(inference.state), _parts(stepping.state)):
                np.testing.assert_array_equal(a, b)
    assert len(routed) == (5 if backend == "cpp" else 0)


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_short_inference_calls_keep_the_call_semantics(cell, backend, routed):
    """Run by steps, a call still starts from the state given (zeros for an LSTM's (None,
    None)), leaves that argument and the parameters unchanged, reads rebound parameters of
    another dtype and layout, takes time-major input, and returns arrays of its own."""
    make = CELLS[cell]
    rng = np.random.default_rng(1)
    extra = {"activation": "relu"} if cell == "RNN" else {}
    a, b = (make(5, 9, num_layers=2, bias=False, time_major=True, seed=6, backend=backend, **extra) for _ in range(2))
    for layer in (a, b):  # float64 in Fortran order: not what the kernels read in place
        layer.params["Wh_l1"] = np.asfortranarray(layer.params["Wh_l1"].astype(np.float64))
    x = rng.standard_normal((1, 3, 5)).astype(np.float32)  # (T, N, D): T = 1
    h0 = rng.standard_normal((2, 3, 9)).astype(np.float32)
    state = (h0, h0 * 0.5) if cell == "LSTM" else h0
    given = [p.copy() for p in _parts(state)]
    before = {k: v.copy() for k, v in a.params.items()}
    got, got_state = a(x, state, record=False)
    want, want_state = b(x, state)
    for what, u, v in [("out", got, want), *zip(("h_n", "c_n"), _parts(got_state), _parts(want_state))]:
        assert_close(u, v.astype(np.float64), np.float32, what=what)
    for p, g in zip(_parts(state), given):
        np.testing.assert_array_equal(p, g)
    for k, v in a.params.items():
        np.testing.assert_array_equal(v, before[k])
    got[...] = 7  # the outputs are the caller's own
    assert not any(np.shares_memory(got, p) for p in _parts(got_state))
    if cell == "LSTM":
        out0, (h, c) = a(x, (None, None), record=False)
        want0, (wh, wc) = b(x, (None, None))
        assert_close(c, wc.astype(np.float64), np.float32, what="c_n from zeros")
    assert len(routed) == ((2 if cell == "LSTM" else 1) if backend == "cpp" else 0)


@pytest.mark.parametrize(
    "case",
    ["record", "bidirectional", "lengths", "dropout in training", "N*T > 4", "T = 0", "N = 0"],
)
def test_other_calls_are_not_steps(case, routed):
    """Only short calls for inference of a unidirectional layer without lengths or dropout run
    by steps; the others give the same bits as the recording call, as every call did before."""
    kw = dict(bidirectional=case == "bidirectional", num_layers=2, dropout=0.5 if case == "dropout in training" else 0)
    a, b = prf.GRU(5, 9, seed=2, **kw), prf.GRU(5, 9, seed=2, **kw)
    N, T = {"N*T > 4": (3, 2), "T = 0": (2, 0), "N = 0": (0, 1)}.get(case, (1, 1))
    x = np.random.default_rng(2).standard_normal((N, T, 5)).astype(np.float32)
    lengths = np.ones(N, np.int64) if case == "lengths" else None
    if case == "dropout in training":  # the same masks in both
        b._dropout_rng = np.random.default_rng(9)
        a._dropout_rng = np.random.default_rng(9)
    got, got_h = a(x, None, lengths, record=case == "record")
    want, want_h = b(x, None, lengths)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got_h, want_h)
    assert routed == []
