"""More of the gated cells: hypothesis-drawn problems on every backend against the reference,
results independent of the thread count (bit for bit), and three stacked layers against torch."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pyrnn_fast as prf
from helpers import BACKEND_PARAMS, D_, H_, N_, T_, TOL, close, flush_subnormals, rng_arrays, use_backend
from test_gated_api import check_cell, gated_problem
from test_gated_layers import CELLS, LENGTHS, torch_run


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    backend_param=st.sampled_from(BACKEND_PARAMS),
    cell=st.sampled_from(["lstm", "gru"]),
    T=st.integers(0, 12),
    N=st.integers(0, 30),
    D=st.integers(0, 9),
    H=st.integers(0, 40),
    dtype=st.sampled_from([np.float32, np.float64]),
    optional=st.booleans(),
    time_major=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_hypothesis(backend_param, cell, T, N, D, H, dtype, optional, time_major, seed):
    p = gated_problem(cell, T, N, D, H, dtype, optional=optional, seed=seed)
    with use_backend(backend_param) as name, flush_subnormals(False):  # IEEE, as test_parity's
        check_cell(cell, p, name, time_major)


def _run(cell, p):
    if cell == "lstm":
        out = prf.lstm_forward(p["x"], p["Wx"], p["Wh"], p["b"], p["h0"], p["c0"], time_major=True, backend="cpp")
        g = prf.lstm_backward(
            p["dhs"], p["x"], p["Wx"], p["Wh"], out.hs, out.workspace, p["h0"], p["c0"],
            dh_last=p["dh_last"], dc_last=p["dc_last"], time_major=True, backend="cpp",
        )  # fmt: skip
    else:
        out = prf.gru_forward(p["x"], p["Wx"], p["Wh"], p["b"], p["bh"], p["h0"], time_major=True, backend="cpp")
        g = prf.gru_backward(
            p["dhs"], p["x"], p["Wx"], p["Wh"], out.hs, out.workspace, p["h0"], dh_last=p["dh_last"],
            time_major=True, backend="cpp",
        )  # fmt: skip
    return [out.hs, out.h_last, *g]


@pytest.mark.skipif("cpp" not in prf.backends(), reason="the compiled backend is not built")
@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize(
    "shape",
    [(60, 32, 8, 64), (200, 8, 8, 64), (3, 24, 8, 512), (2, 64, 8, 512), (40, 1, 8, 160)],
    ids=["rows", "rows-few", "columns", "columns-64rows", "stream"],
)
def test_thread_counts_are_bitwise_identical(cell, shape):
    """The recurrence splits the batch (rows: 64 KB of gated float32 weights fit every core's
    cache) or the hidden units (every gate of a unit on one thread; 3-4 MB of weights fit no
    core's L2 seen), as test_threads.THREAD_SPLIT_SHAPES explains, and the GEMMs their rows or
    columns; every output element is computed by the same arithmetic whatever the split."""
    p = gated_problem(cell, *shape, np.float32, seed=4)
    old = prf.get_num_threads()
    try:
        prf.set_num_threads(2)
        first = _run(cell, p)
        for n in (1, 3, 2):
            prf.set_num_threads(n)
            for a, e in zip(_run(cell, p), first):
                np.testing.assert_array_equal(a, e)
    finally:
        prf.set_num_threads(old)


@pytest.mark.parametrize("cell", sorted(CELLS))
@pytest.mark.parametrize(
    "bidirectional,use_lengths,dtype",
    [(True, True, np.float64), (False, False, np.float32), (True, False, np.float32), (False, True, np.float64)],
)
def test_three_layers_against_torch(cell, bidirectional, use_lengths, dtype):
    torch = pytest.importorskip("torch")
    torch.manual_seed(2)
    module = getattr(torch.nn, cell)(
        D_, H_, num_layers=3, bidirectional=bidirectional, batch_first=True,
        dtype={np.float32: torch.float32, np.float64: torch.float64}[dtype],
    )  # fmt: skip
    layer = CELLS[cell].from_torch(module)
    dirs, parts = (2 if bidirectional else 1), (2 if cell == "LSTM" else 1)
    sshape = (3 * dirs, N_, H_)
    x, dout, *rest = rng_arrays(14, (N_, T_, D_), (N_, T_, dirs * H_), *[sshape] * (2 * parts), dtype=dtype)
    state, dstate = rest[:parts], rest[parts:]
    lengths = LENGTHS if use_lengths else None
    t_out, t_final, t_dx, t_d0, t_grads = torch_run(module, x, state, lengths, dout, dstate)
    out, final = layer(x, tuple(state) if cell == "LSTM" else state[0], lengths=lengths)
    final = list(final) if cell == "LSTM" else [final]
    dx = layer.backward(dout, *dstate)
    tol = TOL[np.dtype(dtype)]
    close(out, t_out, tol, "out")
    close(dx, t_dx, tol, "dx")
    for ours, theirs in zip(final, t_final):
        close(ours, theirs, tol, "final state")
    for name, theirs in zip(("dh0", "dc0"), t_d0):
        close(getattr(layer, name), theirs, tol, name)
    for k in (f"l{l}{s}" for l in range(3) for s in layer._suffixes):
        close(layer.grads[f"Wx_{k}"], t_grads[f"weight_ih_{k}"].T, tol, f"dWx_{k}")
        close(layer.grads[f"Wh_{k}"], t_grads[f"weight_hh_{k}"].T, tol, f"dWh_{k}")
        close(layer.grads[f"b_{k}"], t_grads[f"bias_ih_{k}"], tol, f"db_{k}")
