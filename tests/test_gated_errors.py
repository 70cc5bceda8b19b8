"""Bad input to the gated cells' API: a clear ValueError/TypeError naming the argument, on
every backend, before any kernel runs; a workspace that does not belong to the call is
refused by name. And the compiled kernels' own checks (the binding), called directly."""

from __future__ import annotations

import numpy as np
import pytest

import pyrnn_fast as prf
from pyrnn_fast import _backends

T, N, D, H = 4, 3, 5, 6


def lstm_args(dtype=np.float64):
    rng = np.random.default_rng(0)
    return dict(
        x=rng.standard_normal((N, T, D)).astype(dtype),
        Wx=rng.standard_normal((D, 4 * H)).astype(dtype),
        Wh=rng.standard_normal((H, 4 * H)).astype(dtype),
    )


def gru_args(dtype=np.float64):
    a = lstm_args(dtype)
    return dict(x=a["x"], Wx=a["Wx"][:, : 3 * H].copy(), Wh=a["Wh"][:, : 3 * H].copy())


@pytest.mark.parametrize(
    "cell,name,value,match",
    [
        ("lstm", "Wx", np.zeros((D, 3 * H)), r"Wx: expected shape \(D, 4H\)"),
        ("lstm", "Wh", np.zeros((H, H)), r"Wh: expected shape \(H, 4H\)"),
        ("lstm", "b", np.zeros(3 * H), r"b: expected shape \(4H,\) = \(24,\)"),
        ("lstm", "h0", np.zeros((N + 1, H)), r"h0: expected shape \(N, H\)"),
        ("lstm", "c0", np.zeros((N, H + 1)), r"c0: expected shape \(N, H\)"),
        ("lstm", "x", np.zeros((N, T)), r"x: expected a 3-D array"),
        ("gru", "Wx", np.zeros((D, 4 * H)), r"Wx: expected shape \(D, 3H\)"),
        ("gru", "bh", np.zeros(4 * H), r"bh: expected shape \(3H,\)"),
        ("gru", "b", np.zeros((3 * H, 1)), r"b: expected shape \(3H,\)"),
    ],
)
def test_bad_shapes(backend, cell, name, value, match):
    args = lstm_args() if cell == "lstm" else gru_args()
    fwd = prf.lstm_forward if cell == "lstm" else prf.gru_forward
    with pytest.raises(ValueError, match=match):
        fwd(**{**args, name: value}, backend=backend)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_bad_dtypes(cell):
    args = lstm_args() if cell == "lstm" else gru_args()
    fwd = prf.lstm_forward if cell == "lstm" else prf.gru_forward
    with pytest.raises(TypeError, match="x: expected a real numeric array"):
        fwd(**{**args, "x": args["x"].astype(complex)})
    with pytest.raises(TypeError, match="Wh"):
        fwd(**{**args, "Wh": np.array([["a"]])})
    with pytest.raises(TypeError, match="time_major: expected a bool"):
        fwd(**args, time_major="yes")


def run_lstm(dtype=np.float64, time_major=False, n=N):
    a = lstm_args(dtype)
    x = a["x"][:n] if not time_major else np.ascontiguousarray(a["x"][:n].transpose(1, 0, 2))
    return x, a, prf.lstm_forward(x, a["Wx"], a["Wh"], time_major=time_major)


def test_workspace_checked():
    x, a, out = run_lstm()
    dhs = np.ones_like(out.hs)

    def backward(ws, x=x, hs=out.hs, dhs=dhs, **kw):
        return prf.lstm_backward(dhs, x, a["Wx"], a["Wh"], hs, ws, **kw)

    backward(out.workspace)  # the right one is accepted
    with pytest.raises(TypeError, match="workspace: expected the Workspace that lstm_forward"):
        backward(None)
    with pytest.raises(TypeError, match="workspace"):
        backward((out.workspace,))
    g = gru_args()
    gru_ws = prf.gru_forward(g["x"], g["Wx"], g["Wh"]).workspace
    with pytest.raises(ValueError, match="workspace: from gru_forward, expected the one lstm_forward returned"):
        backward(gru_ws)
    _, _, shorter = run_lstm(n=N - 1)  # another batch size
    with pytest.raises(ValueError, match=r"workspace: from a call with \(T, N, H\) = \(4, 2, 6\)"):
        backward(shorter.workspace)
    _, _, single = run_lstm(np.float32)
    with pytest.raises(ValueError, match="workspace: float32, but these inputs compute in float64"):
        backward(single.workspace)
    ws = out.workspace  # the same, said to be byte-swapped (built by hand: the class is public)
    swapped = prf.Workspace(ws.cell, ws.dims, np.dtype(">f8"), ws.time_major, ws._gates, ws._cs, ws._h_last)
    with pytest.raises(ValueError, match="workspace: >f8, but these inputs compute in float64"):
        backward(swapped)
    xt, _, tm = run_lstm(time_major=True)
    with pytest.raises(ValueError, match="workspace: from a call with time_major=True"):
        backward(tm.workspace)
    with pytest.raises(AttributeError, match="read-only"):
        out.workspace.cell = "GRU"  # type: ignore[misc]
    assert "LSTM" in repr(out.workspace)


@pytest.mark.parametrize("backend", prf.backends())
def test_a_workspace_built_by_hand_is_checked_array_by_array(backend):
    """Workspace is public: one built with the right (T, N, H) but arrays of another shape,
    dtype or layout is refused by name on every backend (the Numba backend had read past a
    (1, 1, 4) array of gates, the compiled one named its own internal argument)."""
    x, a, out = run_lstm()
    gates, cs = out.workspace._gates, out.workspace._cs

    def backward(*arrays):
        ws = prf.Workspace("LSTM", (T, N, H), np.float64, False, *arrays)
        return prf.lstm_backward(np.ones_like(out.hs), x, a["Wx"], a["Wh"], out.hs, ws, backend=backend)

    expected = backward(gates.copy(), cs.copy())  # the right arrays, copied: the same answer
    np.testing.assert_array_equal(expected.dx, backward(gates, cs).dx)
    gates_msg = r"^workspace: its gates must be a C-contiguous float64 array of shape \(4, 3, 24\)"
    for bad in (gates[:1, :1, :4], gates.astype(np.float32), np.asfortranarray(gates), gates.tolist()):
        with pytest.raises(ValueError, match=gates_msg):
            backward(bad, cs)
    with pytest.raises(ValueError, match=r"^workspace: its cell states must be a C-contiguous float64 array"):
        backward(gates, None)
    # The last step of hs it keeps: an array of (N, H) in the call's dtype (a review found a
    # flattened copy passing the bytes' comparison, and a list raising AttributeError).
    h_last = out.workspace._h_last
    np.testing.assert_array_equal(expected.dx, backward(gates, cs, np.asfortranarray(h_last)).dx)
    for bad in (h_last.ravel(), h_last.reshape(H, N), h_last.astype(np.float32), h_last.tolist()):
        with pytest.raises(
            ValueError, match=r"^workspace: its last step of hs must be None or a float64 array of shape \(3, 6\)"
        ):
            backward(gates, cs, bad)
    g = gru_args()
    gru = prf.gru_forward(g["x"], g["Wx"], g["Wh"])
    ws = prf.Workspace("GRU", (T, N, H), np.float64, False, gru.workspace._gates, cs)
    with pytest.raises(ValueError, match=r"^workspace: its cell states must be None"):
        prf.gru_backward(np.ones_like(gru.hs), g["x"], g["Wx"], g["Wh"], gru.hs, ws, backend=backend)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_a_workspace_from_another_call_of_the_same_shapes_is_refused(cell, backend):
    """Found by a review: the workspace of another forward call with the same cell, shapes,
    dtype and layout was taken, and the gradients were off by 50-160 %. A copy of the right hs
    (and NaN in it) is still accepted, with the same answer."""
    a = lstm_args() if cell == "lstm" else gru_args()
    forward, backward = getattr(prf, f"{cell}_forward"), getattr(prf, f"{cell}_backward")
    first = forward(a["x"], a["Wx"], a["Wh"], backend=backend)
    second = forward(a["x"] * 0.5, a["Wx"], a["Wh"], backend=backend)
    dhs = np.ones_like(first.hs)
    with pytest.raises(
        ValueError, match=rf"^workspace: from another {cell}_forward call than the one that computed hs"
    ):
        backward(dhs, a["x"] * 0.5, a["Wx"], a["Wh"], second.hs, first.workspace, backend=backend)
    right = backward(dhs, a["x"] * 0.5, a["Wx"], a["Wh"], second.hs, second.workspace, backend=backend)
    again = backward(dhs, a["x"] * 0.5, a["Wx"], a["Wh"], second.hs.copy(), second.workspace, backend=backend)
    np.testing.assert_array_equal(right.dWh, again.dWh)
    x = a["x"].copy()
    x[0, -1, 0] = np.nan  # NaN in hs's last step: the check takes NaN as equal to NaN
    nan = forward(x, a["Wx"], a["Wh"], backend=backend)
    assert np.isnan(nan.hs[0, -1]).any()
    backward(dhs, x, a["Wx"], a["Wh"], nan.hs, nan.workspace, backend=backend)


@pytest.mark.parametrize("nbytes", ["small", "1 MiB"])
def test_the_workspace_check_compares_hs_last_step_bit_for_bit(nbytes):
    """hs's last step against the one the workspace kept: compared as bytes below 1 MiB and
    through unsigned views from there (two code paths). The very hs, or a copy of it in
    another layout, passes with the same gradients; a last step changed in one element, or
    from 0.0 to -0.0 (equal as numbers, not as bits), is refused."""
    rows, width = (3, 6) if nbytes == "small" else (128, 1024)  # float64: 1 MiB at 128 x 1024
    rng = np.random.default_rng(1)
    x = rng.standard_normal((rows, 1, 2))
    Wx, Wh = rng.standard_normal((2, 4 * width)) * 0.1, rng.standard_normal((width, 4 * width)) * 0.01
    out = prf.lstm_forward(x, Wx, Wh)
    assert (out.hs[:, -1].nbytes >= 1 << 20) == (nbytes == "1 MiB")
    dhs = np.ones_like(out.hs)
    right = prf.lstm_backward(dhs, x, Wx, Wh, out.hs, out.workspace)
    moved = prf.lstm_backward(dhs, x, Wx, Wh, np.asfortranarray(out.hs), out.workspace)
    np.testing.assert_array_equal(right.dWh, moved.dWh)
    for change in ("value", "sign of zero"):
        hs = out.hs.copy()
        if change == "value":
            hs[-1, -1, -1] = np.nextafter(hs[-1, -1, -1], np.inf)
        else:
            hs[-1, -1, -1] = 0.0
            out.workspace._h_last[-1, -1] = -0.0  # (the test reaches in: no forward ends at -0.0 here)
        with pytest.raises(ValueError, match="workspace: from another lstm_forward call"):
            prf.lstm_backward(dhs, x, Wx, Wh, hs, out.workspace)


def test_gru_refuses_lstm_workspace():
    g = gru_args()
    out = prf.gru_forward(g["x"], g["Wx"], g["Wh"])
    _, _, lstm = run_lstm()
    with pytest.raises(ValueError, match="workspace: from lstm_forward, expected the one gru_forward returned"):
        prf.gru_backward(np.ones_like(out.hs), g["x"], g["Wx"], g["Wh"], out.hs, lstm.workspace)


@pytest.mark.skipif("cpp" not in prf.backends(), reason="the compiled backend is not built")
def test_binding_checks_every_array():
    """The binding refuses what would make the kernel address memory out of bounds, even when
    called directly (the API never passes such arrays)."""
    core = _backends._core
    xw, wh = np.zeros((T, N, 4 * H)), np.zeros((H, 4 * H))
    hs, cs, gates = np.zeros((T, N, H)), np.zeros((T, N, H)), np.zeros((T, N, 4 * H))
    core.lstm_forward(xw, wh, None, None, hs, cs, gates, 1)
    with pytest.raises(ValueError, match=r"_core.lstm_forward: xw \(x @ Wx \+ b\): expected shape \(4, 3, 24\)"):
        core.lstm_forward(xw[:, :, :-1], wh, None, None, hs, cs, gates, 1)
    with pytest.raises(ValueError, match=r"_core.lstm_forward: wh \(Wh\): expected shape \(6, 24\)"):
        core.lstm_forward(xw, wh[:-1], None, None, hs, cs, gates, 1)
    with pytest.raises(ValueError, match=r"_core.lstm_forward: c0: expected shape \(3, 6\)"):
        core.lstm_forward(xw, wh, None, np.zeros((2, H)), hs, cs, gates, 1)
    with pytest.raises(ValueError, match="cs .cell states.: expected shape"):
        core.lstm_forward(xw, wh, None, None, hs, cs[:-1], gates, 1)
    with pytest.raises(TypeError, match="float64"):
        core.lstm_forward(xw.astype(np.float32), wh, None, None, hs, cs, gates, 1)
    with pytest.raises(ValueError, match="read-only"):
        ro = gates.copy()
        ro.flags.writeable = False
        core.lstm_forward(xw, wh, None, None, hs, cs, ro, 1)
    du, dv, dh0 = np.zeros((T, N, 3 * H)), np.zeros((T, N, 3 * H)), np.zeros((N, H))
    with pytest.raises(ValueError, match=r"_core.gru_backward: dv \(recurrent-side gradient\): expected shape"):
        core.gru_backward(hs, hs, None, gates, wh[:, : 3 * H], None, du, dv[:-1], dh0, 1)
    with pytest.raises(ValueError, match="_core.gru_backward: dhs: expected a 3-D"):
        core.gru_backward(hs[0], hs, None, gates, wh[:, : 3 * H], None, du, dv, dh0, 1)
    with pytest.raises(ValueError, match="gates must not be the same array as xw"):
        g = np.zeros((T, N, 4 * H))
        core.gru_forward(g[:, :, : 3 * H], wh[:, : 3 * H], None, None, hs, g, 1)
