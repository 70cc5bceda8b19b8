"""LSTM and GRU through the public API, on every backend (the compiled one per instruction
set), against the whole-model NumPy reference (_reference_gated.*_model_*), which shares no
code with the orchestration or the kernels."""

from __future__ import annotations

import numpy as np
import pytest

import pyrnn_fast as prf
from helpers import assert_close, to_layout, weight_term_magnitudes
from pyrnn_fast import _reference_gated as R

CELLS = {"lstm": 4, "gru": 3}


def gated_problem(cell, T, N, D, H, dtype=np.float64, *, optional=True, seed=0):
    """Random inputs with O(1) pre-activations; `optional` gives every optional argument."""
    G = CELLS[cell]
    rng = np.random.default_rng(seed)
    p = {
        "x": rng.standard_normal((T, N, D)),
        "Wx": rng.standard_normal((D, G * H)) / np.sqrt(max(D, 1)),
        "Wh": rng.standard_normal((H, G * H)) / np.sqrt(max(H, 1)),
        "b": rng.standard_normal(G * H) * 0.3 if optional else None,
        "bh": rng.standard_normal(G * H) * 0.3 if optional and cell == "gru" else None,
        "h0": rng.standard_normal((N, H)) * 0.5 if optional else None,
        "c0": rng.standard_normal((N, H)) * 0.5 if optional and cell == "lstm" else None,
        "dhs": rng.standard_normal((T, N, H)),
        "dh_last": rng.standard_normal((N, H)) if optional else None,
        "dc_last": rng.standard_normal((N, H)) if optional and cell == "lstm" else None,
    }
    return {k: None if v is None else v.astype(dtype) for k, v in p.items()}


def f64(a):
    return None if a is None else a.astype(np.float64)


def gated_reduction_magnitudes(cell, q, hs, cs, gates):
    """``helpers.weight_term_magnitudes`` of a gated cell, from the float64 reference's
    gradients of the pre-activations (da for the LSTM; du, dv for the GRU)."""
    T, N, H = hs.shape
    zeros = np.zeros((N, H))
    h0 = zeros if q["h0"] is None else q["h0"]
    if cell == "lstm":
        du = np.empty((T, N, 4 * H))
        R.lstm_backward_kernel(
            q["dhs"], gates, cs, q["c0"], q["Wh"], q["dh_last"], q["dc_last"], du, zeros.copy(), zeros.copy()
        )
        dv = du
    else:
        du, dv = np.empty((T, N, 3 * H)), np.empty((T, N, 3 * H))
        R.gru_backward_kernel(q["dhs"], hs, h0, gates, q["Wh"], q["dh_last"], du, dv, zeros.copy())
    return weight_term_magnitudes(q["x"], h0, hs, du, dv)


def check_cell(cell, p, backend, time_major):
    """Forward and backward through the API against the reference, in the inputs' dtype."""
    dtype = p["x"].dtype
    q = {k: f64(v) for k, v in p.items()}
    x = to_layout(p["x"], time_major)
    if cell == "lstm":
        out = prf.lstm_forward(x, p["Wx"], p["Wh"], p["b"], p["h0"], p["c0"], time_major=time_major, backend=backend)
        assert isinstance(out, prf.LSTMOutput)
        hs_r, hl_r, cl_r, cs_r, gates_r = R.lstm_model_forward(q["x"], q["Wx"], q["Wh"], q["b"], q["h0"], q["c0"])
        magnitudes = gated_reduction_magnitudes(cell, q, hs_r, cs_r, gates_r)
        g = prf.lstm_backward(
            to_layout(p["dhs"], time_major), x, p["Wx"], p["Wh"], out.hs, out.workspace, p["h0"], p["c0"],
            dh_last=p["dh_last"], dc_last=p["dc_last"], time_major=time_major, backend=backend,
        )  # fmt: skip
        assert isinstance(g, prf.LSTMGrads)
        expected = R.lstm_model_backward(
            q["dhs"], q["x"], q["Wx"], q["Wh"], hs_r, cs_r, gates_r, q["h0"], q["c0"], q["dh_last"], q["dc_last"]
        )
        # The plain reference in the inputs' own dtype: the yardstick of what it allows (helpers.assert_close)
        hs_p, hl_p, cl_p, cs_p, gates_p = R.lstm_model_forward(p["x"], p["Wx"], p["Wh"], p["b"], p["h0"], p["c0"])
        plain = R.lstm_model_backward(
            p["dhs"], p["x"], p["Wx"], p["Wh"], hs_p, cs_p, gates_p, p["h0"], p["c0"], p["dh_last"], p["dc_last"]
        )
        assert_close(out.c_last, cl_r, dtype, "c_last", cl_p)
    else:
        out = prf.gru_forward(x, p["Wx"], p["Wh"], p["b"], p["bh"], p["h0"], time_major=time_major, backend=backend)
        assert isinstance(out, prf.GRUOutput)
        hs_r, hl_r, gates_r = R.gru_model_forward(q["x"], q["Wx"], q["Wh"], q["b"], q["bh"], q["h0"])
        magnitudes = gated_reduction_magnitudes(cell, q, hs_r, None, gates_r)
        g = prf.gru_backward(
            to_layout(p["dhs"], time_major), x, p["Wx"], p["Wh"], out.hs, out.workspace, p["h0"],
            dh_last=p["dh_last"], time_major=time_major, backend=backend,
        )  # fmt: skip
        assert isinstance(g, prf.GRUGrads)
        expected = R.gru_model_backward(q["dhs"], q["x"], q["Wx"], q["Wh"], hs_r, gates_r, q["h0"], q["dh_last"])
        hs_p, hl_p, gates_p = R.gru_model_forward(p["x"], p["Wx"], p["Wh"], p["b"], p["bh"], p["h0"])
        plain = R.gru_model_backward(p["dhs"], p["x"], p["Wx"], p["Wh"], hs_p, gates_p, p["h0"], p["dh_last"])
    assert_close(out.hs, to_layout(hs_r, time_major), dtype, "hs", to_layout(hs_p, time_major))
    assert_close(out.h_last, hl_r, dtype, "h_last", hl_p, scale=float(np.max(np.abs(hs_r), initial=0.0)))
    for name, got, ref, yardstick in zip(g._fields, g, expected, plain):
        if name == "dx":
            ref, yardstick = to_layout(ref, time_major), to_layout(yardstick, time_major)
        assert_close(got, ref, dtype, name, yardstick, *magnitudes.get(name, (None, 0)))
    return out


@pytest.mark.parametrize("cell", sorted(CELLS))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("time_major", [True, False])
@pytest.mark.parametrize("optional", [True, False])
def test_matches_reference(backend, cell, dtype, time_major, optional):
    check_cell(cell, gated_problem(cell, 7, 3, 5, 6, dtype, optional=optional), backend, time_major)


@pytest.mark.parametrize("cell", sorted(CELLS))
@pytest.mark.parametrize(
    "T,N,D,H",
    [
        (1, 1, 1, 1),
        (5, 1, 3, 17),
        (4, 7, 2, 33),
        (3, 25, 4, 40),
        (2, 30, 8, 130),
        (2, 67, 3, 40),
        (0, 3, 4, 5),
        (3, 0, 2, 4),
    ],
)
def test_shapes(backend, cell, T, N, D, H):
    """Odd H (partial vectors and panels), N = 1 (the streaming tile), N >= 64 (packed rows in the
    AVX2 build, the last sliver partial: kMinPackedRows in config.hpp),
    H >= 128 (two threads where two CPUs are free), and the empty cases."""
    check_cell(cell, gated_problem(cell, T, N, D, H, seed=T + H), backend, time_major=False)


@pytest.mark.parametrize("N", [26, 67])  # rows read in place, and packed
@pytest.mark.parametrize("cell", sorted(CELLS))
def test_deep_product_blocks(backend, cell, N):
    """H = 350: the backward step product is 4H (3H) deep, more than one depth block of the
    compiled recurrence (kStepKC = 1024), whose partial sums must add up exactly."""
    check_cell(cell, gated_problem(cell, 3, N, 3, 350, seed=5), backend, time_major=True)


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_T0_gives_initial_state_and_final_gradients(backend, cell):
    p = gated_problem(cell, 0, 2, 3, 4)
    check_cell(cell, p, backend, time_major=True)
    if cell == "lstm":
        out = prf.lstm_forward(p["x"], p["Wx"], p["Wh"], None, p["h0"], p["c0"], time_major=True, backend=backend)
        np.testing.assert_array_equal(out.h_last, p["h0"])
        np.testing.assert_array_equal(out.c_last, p["c0"])
        g = prf.lstm_backward(
            p["dhs"], p["x"], p["Wx"], p["Wh"], out.hs, out.workspace, dh_last=p["dh_last"],
            dc_last=p["dc_last"], time_major=True, backend=backend,
        )  # fmt: skip
        np.testing.assert_array_equal(g.dh0, p["dh_last"])
        np.testing.assert_array_equal(g.dc0, p["dc_last"])


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_nan_propagates(backend, cell):
    p = gated_problem(cell, 4, 2, 3, 5)
    p["x"][1, 0, 0] = np.nan
    fwd = prf.lstm_forward if cell == "lstm" else prf.gru_forward
    hs = fwd(p["x"], p["Wx"], p["Wh"], time_major=True, backend=backend).hs
    assert np.isnan(hs[1:, 0]).all() and not np.isnan(hs[:, 1]).any() and not np.isnan(hs[0]).any()


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_workspace_false_same_outputs(backend, cell):
    p = gated_problem(cell, 5, 3, 4, 6)
    fwd = prf.lstm_forward if cell == "lstm" else prf.gru_forward
    a = fwd(p["x"], p["Wx"], p["Wh"], p["b"], time_major=True, backend=backend)
    b = fwd(p["x"], p["Wx"], p["Wh"], p["b"], time_major=True, workspace=False, backend=backend)
    assert b.workspace is None and a.workspace is not None
    np.testing.assert_array_equal(a.hs, b.hs)
    np.testing.assert_array_equal(a.h_last, b.h_last)
    T, N, H = 5, 3, 6
    per_step = 5 if cell == "lstm" else 4
    assert a.workspace.nbytes == (T * per_step + 1) * N * H * 8  # and the last step of hs
    assert a.workspace.cell == cell.upper() and a.workspace.dims == (T, N, H)


@pytest.mark.parametrize("cell", sorted(CELLS))
@pytest.mark.parametrize("time_major", [True, False])
@pytest.mark.parametrize("scratch_steps", [1, 3])
def test_inference_in_bounded_scratch(backend, cell, time_major, scratch_steps, monkeypatch):
    """workspace=False runs the sequence in calls of as many steps as the inference scratch
    holds, each carrying the state on: the same bits as one call over all steps (with h0, c0,
    a bias, both layouts, T not a multiple of the steps per call)."""
    from pyrnn_fast import _api_gated

    T, N, H = 7, 3, 6
    p = gated_problem(cell, T, N, 4, H, np.float32)
    x = to_layout(p["x"], time_major)
    step_bytes = N * (5 if cell == "lstm" else 7) * H * 4  # what the forward keeps per step
    fwd = prf.lstm_forward if cell == "lstm" else prf.gru_forward
    args = (
        (x, p["Wx"], p["Wh"], p["b"], p["h0"], p["c0"])
        if cell == "lstm"
        else (x, p["Wx"], p["Wh"], p["b"], p["bh"], p["h0"])
    )

    def run():
        return fwd(*args, time_major=time_major, workspace=False, backend=backend)

    whole = run()
    monkeypatch.setattr(_api_gated, "INFERENCE_SCRATCH_BYTES", scratch_steps * step_bytes)
    assert _api_gated._steps_per_call(T, step_bytes, False) == scratch_steps
    chunked = run()
    for got, want in zip(chunked, whole):
        if want is not None:
            np.testing.assert_array_equal(got, want)
    expected = check_cell(cell, p, backend, time_major)  # and one call against the reference
    np.testing.assert_array_equal(chunked.hs, expected.hs)


def test_inputs_not_modified_and_float32_stays_float32():
    p = gated_problem("lstm", 4, 3, 2, 5, np.float32)
    before = {k: None if v is None else v.copy() for k, v in p.items()}
    out = prf.lstm_forward(p["x"], p["Wx"], p["Wh"], p["b"], p["h0"], p["c0"], time_major=True)
    g = prf.lstm_backward(p["dhs"], p["x"], p["Wx"], p["Wh"], out.hs, out.workspace, p["h0"], p["c0"], time_major=True)
    for k, v in p.items():
        if v is not None:
            np.testing.assert_array_equal(v, before[k], err_msg=k)
    assert out.hs.dtype == np.float32 and all(a.dtype == np.float32 for a in g)
