"""prf.RNN with variable lengths, zero-length sequences and empty batches."""

from __future__ import annotations

import numpy as np
import pytest

import pyrnn_fast as prf
from helpers import BACKEND_PARAMS, SELF_TOL, backend_id, close, rng_arrays, use_backend


# The second: every sample either empty or whole (one row count for all steps).
@pytest.mark.parametrize("lengths", [[0, 5, 2, 5, 6, 3], [0, 6, 6, 0, 6, 6]])
@pytest.mark.parametrize("time_major", [False, True])
def test_lengths_equal_each_sample_alone(time_major, lengths):
    T, N, D, H = 6, 6, 3, 4
    lengths = np.array(lengths)
    x, h0, dout, dh_n = rng_arrays(40, (N, T, D), (4, N, H), (N, T, 2 * H), (4, N, H))
    layer = prf.RNN(D, H, num_layers=2, bidirectional=True, dtype=np.float64, seed=7, time_major=time_major)

    def tm(a):
        return np.ascontiguousarray(a.transpose(1, 0, 2)) if time_major else a

    before = (x.copy(), h0.copy(), lengths.copy())
    out, h_n = layer(tm(x), h0, lengths)
    for a, b in zip((x, h0, lengths), before):  # inputs are never modified
        np.testing.assert_array_equal(a, b)
    out = tm(out)
    dx = tm(layer.backward(tm(dout), dh_n))
    grads = {k: v.copy() for k, v in layer.grads.items()}
    dh0 = layer.dh0.copy()
    summed = {k: np.zeros_like(v) for k, v in grads.items()}
    for n, L in enumerate(lengths):
        o, hn = layer(tm(x[n : n + 1, :L]), h0[:, n : n + 1])
        close(out[n : n + 1, :L], tm(o), SELF_TOL, f"out[{n}]")
        assert not out[n, L:].any()
        close(h_n[:, n : n + 1], hn, SELF_TOL, f"h_n[{n}]")
        d = layer.backward(tm(dout[n : n + 1, :L]), dh_n[:, n : n + 1])
        close(dx[n : n + 1, :L], tm(d), SELF_TOL, f"dx[{n}]")
        assert not dx[n, L:].any()
        close(dh0[:, n : n + 1], layer.dh0, SELF_TOL, f"dh0[{n}]")
        for k in summed:
            summed[k] += layer.grads[k]
    for k in grads:
        close(grads[k], summed[k], SELF_TOL, k)
    np.testing.assert_array_equal(h_n[:, 0], h0[:, 0])


def test_lengths_validation():
    layer = prf.RNN(2, 3)
    x = np.zeros((3, 4, 2), np.float32)
    for bad, err, match in (
        ([1, 2], ValueError, r"\(N,\)"),
        ([1, -1, 2], ValueError, "0 <= lengths"),
        ([1, 5, 2], ValueError, "0 <= lengths"),
        ([1.0, 2.0, 3.0], TypeError, "integer"),
        ([[1, 2, 3]], ValueError, r"\(N,\)"),
    ):
        with pytest.raises(err, match=match):
            layer(x, lengths=bad)
    out, h_n = layer(x, lengths=np.array([0, 4, 2], np.uint8))
    assert out.shape == (3, 4, 3)


def test_zero_length_sequence_and_empty_batch():
    layer = prf.RNN(3, 4, num_layers=2, bidirectional=True, dtype=np.float64, seed=0)
    h0 = np.random.default_rng(0).standard_normal((4, 2, 4))
    out, h_n = layer(np.zeros((2, 0, 3)), h0)
    assert out.shape == (2, 0, 8)
    np.testing.assert_array_equal(h_n, h0)
    dh_n = np.ones((4, 2, 4))
    dx = layer.backward(np.zeros((2, 0, 8)), dh_n)
    assert dx.shape == (2, 0, 3)
    np.testing.assert_array_equal(layer.dh0, dh_n)
    assert not any(g.any() for g in layer.grads.values())
    out, h_n = layer(np.zeros((2, 3, 3)), h0, lengths=[0, 0])
    assert not out.any()
    np.testing.assert_array_equal(h_n, h0)
    out, h_n = layer(np.zeros((0, 3, 3)))
    assert out.shape == (0, 3, 8) and h_n.shape == (4, 0, 4)


@pytest.mark.parametrize("cell", ["RNN", "LSTM", "GRU"])
@pytest.mark.parametrize("filler", [np.nan, np.inf, 1e30])
def test_what_fills_the_padding_changes_nothing(cell, filler):
    """Past a sample's length, x may hold anything (NaN, inf, huge values as a filler): the
    outputs, the state and every gradient are those of the batch padded with zeros. (The
    backward computes the weight gradients over the whole batch at once, from gradients that
    are zero on the padding: a NaN there times zero was NaN in dWx; found by a review.)"""
    T, N, D, H = 7, 5, 3, 4
    lengths = np.array([7, 2, 0, 5, 2])
    x, dout = rng_arrays(41, (N, T, D), (N, T, 2 * H))
    for n, L in enumerate(lengths):
        x[n, L:] = 0
    filled = x.copy()
    for n, L in enumerate(lengths):
        filled[n, L:] = filler
    results = []
    for inputs in (x, filled):
        layer = getattr(prf, cell)(D, H, num_layers=2, bidirectional=True, dropout=0.3, dtype=np.float64, seed=3)
        out, state = layer(inputs, lengths=lengths)
        dx = layer.backward(dout)
        results.append((out, state, dx, layer.grads))
    (out0, state0, dx0, grads0), (out1, state1, dx1, grads1) = results
    np.testing.assert_array_equal(out1, out0)
    for a, b in zip(*(s if isinstance(s, tuple) else (s,) for s in (state1, state0))):  # (h_n, c_n) or h_n
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(dx1, dx0)
    for k in grads0:
        np.testing.assert_array_equal(grads1[k], grads0[k], err_msg=k)


CELL_CLASSES = {"RNN": prf.RNN, "LSTM": prf.LSTM, "GRU": prf.GRU}


def _states(state):
    return state if isinstance(state, tuple) else (state,)


@pytest.mark.parametrize("backend", BACKEND_PARAMS, ids=backend_id)
@pytest.mark.parametrize("cell", ["RNN", "LSTM", "GRU"])
@pytest.mark.parametrize("record", [True, False])
def test_lengths_on_every_backend_equal_each_sample_alone(cell, backend, record, monkeypatch):
    """Every cell on every backend (and instruction set) with unsorted lengths (a tie, 0, the
    whole T, ones already in order): each sample's outputs, final state (h_n, c_n), dx, initial
    state gradients and its share of the weight gradients are those of the sample run alone on
    the NumPy backend. The batch runs sorted longest first, the kernels given the rows each step
    runs (``_reference.rows_per_step``); record=False (inference) also cuts the steps into
    calls of 2 (a small INFERENCE_SCRATCH_BYTES), so that the calls cut the runs of one row
    count and carry the final states of rows that end inside a call."""
    from pyrnn_fast import _api_gated

    T, N, D, H = 7, 6, 3, 4
    lengths = np.array([5, 0, 7, 2, 5, 3])
    make = CELL_CLASSES[cell]
    parts = 2 if cell == "LSTM" else 1
    x, dout, *s = rng_arrays(42, (N, T, D), (N, T, 2 * H), *[(4, N, H)] * (2 * parts))
    state0, dstate_n = s[:parts], s[parts:]
    if not record:
        monkeypatch.setattr(_api_gated, "INFERENCE_SCRATCH_BYTES", 2 * N * 7 * H * 8)
    with use_backend(backend) as name:
        layer = make(D, H, num_layers=2, bidirectional=True, dtype=np.float64, seed=5, backend=name)
        given = tuple(state0) if cell == "LSTM" else state0[0]
        out, final = layer(x, given, lengths, record=record)
        if record:
            dx = layer.backward(dout, *dstate_n)
            grads = {k: v.copy() for k, v in layer.grads.items()}
            d0 = [layer.dh0.copy()] + ([layer.dc0.copy()] if cell == "LSTM" else [])
    alone = make(D, H, num_layers=2, bidirectional=True, dtype=np.float64, seed=5, backend="numpy")
    summed = {k: np.zeros_like(v) for k, v in alone.grads.items()}
    for n, L in enumerate(lengths):
        rows = slice(n, n + 1)
        given = tuple(p[:, rows] for p in state0) if cell == "LSTM" else state0[0][:, rows]
        o, f = alone(x[rows, :L], given)
        close(out[rows, :L], o, SELF_TOL, f"out[{n}]")
        assert not out[n, L:].any()
        for a, b in zip(_states(final), _states(f)):
            close(a[:, rows], b, SELF_TOL, f"final state[{n}]")
        if not record:
            continue
        d = alone.backward(dout[rows, :L], *(p[:, rows] for p in dstate_n))
        close(dx[rows, :L], d, SELF_TOL, f"dx[{n}]")
        assert not dx[n, L:].any()
        for a, b in zip(d0, [alone.dh0] + ([alone.dc0] if cell == "LSTM" else [])):
            close(a[:, rows], b, SELF_TOL, f"initial state gradient[{n}]")
        for k in summed:
            summed[k] += alone.grads[k]
    if record:
        for k in grads:
            close(grads[k], summed[k], SELF_TOL, k)


@pytest.mark.parametrize("cell", ["RNN", "LSTM", "GRU"])
def test_a_samples_dropout_mask_does_not_depend_on_the_others_lengths(cell):
    """A batch with lengths runs sorted longest first, but the dropout masks are drawn in the
    caller's order of samples: with the same seed, a sample of the whole length T gets the same
    outputs (the same masks) with lengths as without."""
    T, N, D, H = 6, 5, 3, 4
    x = rng_arrays(43, (N, T, D))[0]
    lengths = np.array([2, T, 4, T, 1])  # sorted, the samples move: [1, 3, 2, 0, 4]
    outs = []
    for lens in (lengths, None):
        layer = CELL_CLASSES[cell](D, H, num_layers=3, dropout=0.5, dtype=np.float64, seed=11)
        outs.append(layer(x, lengths=lens)[0])
    for n in np.flatnonzero(lengths == T):
        close(outs[0][n], outs[1][n], SELF_TOL, f"out[{n}]")


@pytest.mark.parametrize("cell", ["RNN", "LSTM", "GRU"])
@pytest.mark.parametrize("given_state", [True, False])
def test_every_length_zero(cell, given_state):
    """No sample has a step: zero outputs, the final state is the initial one, and backward
    passes the final state's gradient to the initial state with zero parameter gradients."""
    T, N, D, H = 4, 3, 2, 5
    parts = 2 if cell == "LSTM" else 1
    x, *s = rng_arrays(44, (N, T, D), *[(2, N, H)] * (2 * parts))
    state0, dstate_n = s[:parts], s[parts:]
    layer = CELL_CLASSES[cell](D, H, bidirectional=True, dtype=np.float64, seed=1)
    given = (tuple(state0) if cell == "LSTM" else state0[0]) if given_state else None
    out, final = layer(x, given, np.zeros(N, int))
    assert out.shape == (N, T, 2 * H) and not out.any()
    for a, b in zip(_states(final), state0):
        np.testing.assert_array_equal(a, b if given_state else 0)
    dx = layer.backward(np.ones_like(out), *dstate_n)
    assert not dx.any() and not any(g.any() for g in layer.grads.values())
    for a, b in zip([layer.dh0] + ([layer.dc0] if cell == "LSTM" else []), dstate_n):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("cell", ["RNN", "LSTM", "GRU"])
def test_the_state_of_a_sample_of_length_zero_reaches_only_its_final_state(cell):
    """A sample of length 0 passes its initial state through as its final state; whatever that
    state holds (NaN, inf) changes no output, dx or parameter gradient (the weight gradient's
    product h0ᵀ·dV_0 met it: NaN times the sample's zero gradient was NaN; found by a review)."""
    T, N, D, H = 5, 3, 3, 4
    lengths = np.array([5, 0, 2])
    x, dout, *s = rng_arrays(45, (N, T, D), (N, T, H), (1, N, H), (1, N, H))
    results = []
    for filler in (0.0, np.nan, np.inf):
        state = [p.copy() for p in s]
        for p in state:
            p[0, 1] = filler
        layer = CELL_CLASSES[cell](D, H, dtype=np.float64, seed=2)
        out, final = layer(x, tuple(state) if cell == "LSTM" else state[0], lengths)
        for a, b in zip(_states(final), state):
            np.testing.assert_array_equal(a[:, 1], b[:, 1])  # NaN == NaN here
        dx = layer.backward(dout)
        results.append((out, dx, {k: v.copy() for k, v in layer.grads.items()}))
    (out0, dx0, grads0), *others = results
    for out, dx, grads in others:
        np.testing.assert_array_equal(out, out0)
        np.testing.assert_array_equal(dx, dx0)
        for k in grads0:
            np.testing.assert_array_equal(grads[k], grads0[k], err_msg=k)


@pytest.mark.parametrize("cell", ["RNN", "LSTM", "GRU"])
def test_lengths_of_an_empty_batch_as_an_empty_list(cell):
    """lengths=[] for N = 0 is an empty batch's lengths (NumPy makes [] float64, which had been
    refused as "expected an integer array"); a float array is still refused."""
    layer = getattr(prf, cell)(3, 4, seed=0)
    x = np.zeros((0, 5, 3), np.float32)
    out = layer(x, lengths=[])[0]
    assert out.shape == (0, 5, 4)
    with pytest.raises(TypeError, match="^lengths: expected an integer array"):
        layer(x, lengths=np.zeros(0))
    with pytest.raises(TypeError, match="^lengths: expected an integer array"):
        layer(np.zeros((1, 5, 3), np.float32), lengths=[2.0])
