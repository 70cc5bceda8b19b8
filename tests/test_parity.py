"""Every backend (cpp once per instruction set, numba, numpy) against the NumPy reference."""

import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import (
    BACKEND_PARAMS,
    CPP_PARAMS,
    backend_id,
    check_against_reference,
    flush_subnormals,
    make_problem,
    use_backend,
)

SHAPES = [  # (T, N, D, H): edges, tails of every register block, and a few hundred
    (1, 1, 1, 1),
    (0, 3, 4, 5),
    (4, 0, 3, 5),
    (5, 3, 0, 4),
    (3, 2, 4, 0),
    (7, 5, 6, 37),
    (2, 1, 3, 128),
    (6, 7, 5, 33),
    (3, 17, 9, 100),
    (2, 64, 7, 65),
    (300, 2, 4, 16),
    (4, 9, 3, 257),
    (2, 260, 5, 20),
    (3, 13, 5, 600),  # a thread's panels span several L2-sized groups in every build
    (2, 67, 3, 1030),  # packed rows (N >= kMinPackedRows, AVX2), a partial last sliver, two depth blocks
]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_grid(backend, shape, dtype, activation):
    p = make_problem(*shape, dtype=dtype, seed=sum(shape))
    check_against_reference(p, activation, backend, time_major=False)


@pytest.mark.parametrize("bias,h0,dh_last,time_major", list(itertools.product([False, True], repeat=4)))
@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_options(backend, bias, h0, dh_last, time_major, activation):
    for dtype in (np.float64, np.float32):
        p = make_problem(9, 6, 5, 23, dtype=dtype, bias=bias, h0=h0, dh_last=dh_last, seed=7)
        check_against_reference(p, activation, backend, time_major=time_major)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    backend_param=st.sampled_from(BACKEND_PARAMS),
    T=st.integers(0, 40),
    N=st.integers(0, 20),
    D=st.integers(0, 20),
    H=st.integers(0, 70),
    dtype=st.sampled_from([np.float32, np.float64]),
    activation=st.sampled_from(["tanh", "relu"]),
    bias=st.booleans(),
    h0=st.booleans(),
    dh_last=st.booleans(),
    time_major=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_hypothesis(backend_param, T, N, D, H, dtype, activation, bias, h0, dh_last, time_major, seed):
    p = make_problem(T, N, D, H, dtype=dtype, bias=bias, h0=h0, dh_last=dh_last, seed=seed)
    # IEEE arithmetic, as the reference's: by default the compiled kernels flush subnormals
    # (tests/test_subnormals.py), and a relu state decaying through them (2.9e-38 at most, one
    # value of 8.3e-39 read as 0) is then 29 % off relative to the largest.
    with use_backend(backend_param) as name, flush_subnormals(False):
        check_against_reference(p, activation, name, time_major=time_major)


def test_backend_ids_cover_every_isa():
    # The compiled backend must be tested on every instruction set this machine supports.
    from pyrnn_fast import _backends

    if _backends._core is None:
        pytest.skip("compiled backend not built")
    ids = {backend_id(p) for p in BACKEND_PARAMS}
    assert {f"cpp-{isa}" for isa in _backends._core.available_isas()} <= ids


@pytest.mark.skipif("numba" not in __import__("pyrnn_fast").backends(), reason="numba is not installed")
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_numba_runs_big_steps_on_the_reference(monkeypatch, cell):
    """The numba backend runs a call whose steps have NUMBA_MAX_STEP_WORK multiply-adds or more
    (N times Wh's size) on the NumPy reference kernels, which are faster there; below it, its
    own loops. Each cell's forward and backward kernel on both sides of a bound set to its own
    step's work: at it, the reference's very bits; one above it, the loops' (other bits, the
    same values to the tolerance). No other argument has Wh's size here, so reading the step's
    work from another argument fails one side or the other."""
    from pyrnn_fast import _backends

    T, N, H = 5, 9, 24
    G = {"rnn": 1, "lstm": 4, "gru": 3}[cell]
    rng = np.random.default_rng(1)
    r = lambda *s: rng.standard_normal(s).astype(np.float32) * 0.5  # noqa: E731
    h0, dh_last = r(N, H), r(N, H)
    wh, xw, dhs, hs = r(H, G * H) / 5, r(T, N, G * H), r(T, N, H), r(T, N, H) * 0.9
    gates = rng.uniform(0.1, 0.9, (T, N, 4 * H)).astype(np.float32)
    active = np.array([9, 9, 7, 4, 4], np.int64)

    def calls(kernels):
        o = {k: np.zeros(s, np.float32) for k, s in (("h", (T, N, H)), ("c", (T, N, H)), ("g", (T, N, 4 * H)))}
        o.update(da=np.zeros((T, N, G * H), np.float32), dv=np.zeros((T, N, 3 * H), np.float32))
        o.update(dh0=np.zeros((N, H), np.float32), dc0=np.zeros((N, H), np.float32))
        if cell == "rnn":
            kernels.forward(xw, wh, h0, o["h"], "tanh", active=active)
            kernels.backward(dhs, hs, wh, dh_last, o["da"], o["dh0"], "tanh", active=active)
        elif cell == "lstm":
            kernels.lstm_forward(xw, wh, h0, h0, o["h"], o["c"], o["g"], active=active)
            kernels.lstm_backward(dhs, gates, hs, h0, wh, dh_last, dh_last, o["da"], o["dh0"], o["dc0"], active=active)
        else:
            kernels.gru_forward(xw, wh, None, h0, o["h"], o["g"], active=active)
            kernels.gru_backward(dhs, hs, h0, gates, wh, dh_last, o["da"], o["dv"], o["dh0"], active=active)
        return o

    want = calls(_backends.get_backend("numpy"))
    for bound, same_bits in ((N * wh.size, True), (N * wh.size + 1, False)):
        monkeypatch.setattr(_backends, "NUMBA_MAX_STEP_WORK", bound)
        got = calls(_backends.get_backend("numba"))
        for k in want:
            np.testing.assert_allclose(got[k], want[k], rtol=2e-5, atol=2e-6, err_msg=k)
        for outputs in (("h", "c", "g"), ("da", "dv", "dh0", "dc0")):  # the forward's, the backward's
            differ = [k for k in outputs if not np.array_equal(got[k], want[k])]
            assert not differ if same_bits else differ, f"bound {bound}: {differ or 'the reference'} ({outputs})"


def _assert_same_bits(got, want, what):
    assert got.dtype == want.dtype, what
    np.testing.assert_array_equal(got.view(np.uint8), want.view(np.uint8), err_msg=what)


# N = 1 with 2, 3, 4 and 7 panels of every ISA (AVX2 float32: 7 leaves a tile of two and one
# of one after a tile of four), N = 9 (more than one sliver of 8 rows), N = 70 (AVX2 packs its
# slivers of A from 64 rows).
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("N,H", [(1, 64), (1, 96), (1, 112), (1, 200), (9, 40), (70, 24)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("backend", CPP_PARAMS, ids=backend_id)
def test_every_other_step_run_from_the_last_weights_gives_the_same_bits(cell, N, H, dtype, backend):
    """The compiled recurrence runs every other step's products from the last panel and gate
    block to the first where a thread's weights are small (recurrence.hpp, kAlternateStepBytes:
    the weights the step before ended on are still in L1), each tile's sums in the same order,
    so a step's bits do not depend on which way it ran. Forward: T calls of one step each (each
    runs its step first to last) give the states of one call of T steps. Backward: one more
    step at the end whose gradient is zero shifts which way every step runs, and must give dx
    and the gradient carried to the initial state bit for bit (its zero products add exact
    zeros)."""
    import pyrnn_fast as prf

    T, D = 5, 6
    G = {"rnn": 1, "lstm": 4, "gru": 3}[cell]
    rng = np.random.default_rng(7)
    x = rng.standard_normal((T + 1, N, D)).astype(dtype)
    Wx = (rng.standard_normal((D, G * H)) * 0.4).astype(dtype)
    Wh = (rng.standard_normal((H, G * H)) * 1.6 / np.sqrt(H)).astype(dtype)
    b = (rng.standard_normal(G * H) * 0.1).astype(dtype)
    dhs = rng.standard_normal((T + 1, N, H)).astype(dtype)
    dhs[T] = 0
    zeros = (None, None) if cell == "lstm" else None

    with use_backend(backend) as name:
        kw = dict(time_major=True, backend=name)

        def forward(xs, state=zeros):
            """hs and the last state (h, or (h, c)) of steps xs from `state` (None: zeros), and
            backward(dhs) of that call: (dx, the gradients carried to the initial state)."""
            h0, c0 = state if cell == "lstm" else (state, None)
            if cell == "rnn":
                hs, h_last = prf.rnn_forward(xs, Wx, Wh, b, h0, **kw)
                return hs, h_last, lambda d: prf.rnn_backward(d, xs, Wx, Wh, hs, h0, **kw)[::4]
            if cell == "lstm":
                o = prf.lstm_forward(xs, Wx, Wh, b, h0, c0, **kw)
                grads = lambda g: (g.dx, g.dh0, g.dc0)  # noqa: E731
                return (
                    o.hs,
                    (o.h_last, o.c_last),
                    lambda d: grads(prf.lstm_backward(d, xs, Wx, Wh, o.hs, o.workspace, h0, c0, **kw)),
                )
            o = prf.gru_forward(xs, Wx, Wh, b, None, h0, **kw)
            return o.hs, o.h_last, lambda d: prf.gru_backward(d, xs, Wx, Wh, o.hs, o.workspace, h0, **kw)[::5]

        hs, _, backward = forward(x[:T])
        state = zeros
        for t in range(T):
            hs_t, state, _ = forward(x[t : t + 1], state)
            _assert_same_bits(hs_t[0], hs[t], f"h at step {t}")
        grads = backward(dhs[:T])
        hs_longer, _, backward_longer = forward(x)
        _assert_same_bits(hs_longer[:T], hs, "hs of the longer call")
        for what, got, want in zip(["dx", "dh0", "dc0"], backward_longer(dhs), grads):
            _assert_same_bits(got[: len(want)], want, what)
    assert np.abs(hs).max() > 0.1 and np.abs(grads[0]).max() > 0.1
