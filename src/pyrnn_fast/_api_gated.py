"""The functional API of the gated cells, LSTM and GRU, on the vanilla cell's orchestration
(``_orchestration``): one input GEMM, one recurrence call into a backend's kernel, then the
backward's GEMMs, with the same validation, layouts, dtypes and threads as ``rnn_forward``.

    forward:  XW = X·Wx + b, then the kernel: hs, and what backward needs (the Workspace)
    backward: the kernel gives dU (w.r.t. X·Wx + b) and dV (w.r.t. h_{t-1}·Wh + bh; the same
              array for the LSTM), then dx = dU·Wxᵀ, dWx = Xᵀ·dU, dWh = H_prevᵀ·dV, db = Σ dU,
              dbh = Σ dV
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ._backends import get_backend
from ._orchestration import (
    BackwardSteps,
    _check_flag,
    _copy,
    _empty,
    _final_rows,
    _final_state,
    _first_state_read,
    _forward_inputs,
    _input_projection,
    _kernel_matrix,
    _kernel_seq,
    _kernel_weights,
    _last_step_view,
    _prepare,
    _tm,
    _weight_grads,
    _zero_padding,
)

Array = NDArray[np.floating[Any]]


class Workspace:
    """What a gated cell's backward needs from its forward besides hs: the activated gates
    (T, N, 4H) and, for the LSTM, the cell states (T, N, H) — (T·N·5H) values for the LSTM,
    (T·N·4H) for the GRU (r, z, n and the recurrent part of n's pre-activation), in the call's
    dtype. Returned by ``lstm_forward`` / ``gru_forward``; pass it to the matching backward,
    which checks that it comes from a call with the same cell, (T, N, H), dtype and layout,
    and the very call whose hs it is given (by hs's last step, bit for bit, which it keeps:
    N·H values; not checked when T = 0): a ValueError otherwise, and anything not a Workspace
    (None from ``workspace=False``) is a TypeError. Read-only. Its arrays of 1 MiB or more are
    views of the calling thread's buffer pool, kept while it is held (see ``release_buffers``)."""

    __slots__ = ("_cell", "_dims", "_dtype", "_time_major", "_gates", "_cs", "_h_last")
    _cell: str
    _dims: tuple[int, int, int]
    _dtype: np.dtype
    _time_major: bool
    _gates: np.ndarray
    _cs: np.ndarray | None
    _h_last: np.ndarray | None

    def __init__(self, cell, dims, dtype, time_major, gates, cs, h_last=None):
        values = (cell, dims, np.dtype(dtype), bool(time_major), gates, cs, h_last)
        for name, value in zip(self.__slots__, values):
            object.__setattr__(self, name, value)

    def __setattr__(self, name, value):
        raise AttributeError("a Workspace is read-only")

    def __reduce__(self):
        # Rebuilt through __init__: pickle's and copy's default would set the slots one by
        # one through __setattr__, which refuses (a layer holding one could not be unpickled).
        return (Workspace, tuple(getattr(self, name) for name in self.__slots__))

    cell = property(lambda self: self._cell, doc="'LSTM' or 'GRU'")
    dims = property(lambda self: self._dims, doc="(T, N, H) of the forward call")
    dtype = property(lambda self: self._dtype, doc="the forward call's dtype")
    time_major = property(lambda self: self._time_major, doc="the forward call's layout")

    @property
    def nbytes(self) -> int:
        """Bytes of the arrays it holds: the gates, an LSTM's cell states and hs's last step."""
        return int(sum(a.nbytes for a in (self._gates, self._cs, self._h_last) if a is not None))

    def __repr__(self):
        return (
            f"Workspace(cell={self._cell!r}, (T, N, H)={self._dims}, dtype={self._dtype.name}, "
            f"time_major={self._time_major}, nbytes={self.nbytes})"
        )

    def _check(self, cell, dims, dtype, time_major, forward, hs_tm):
        """This workspace's arrays for a backward of `cell` over (T, N, H) `dims` given the
        time-major `hs_tm`."""
        if self._cell != cell:
            raise ValueError(f"workspace: from {self._cell.lower()}_forward, expected the one {forward} returned")
        if self._dims != dims:
            raise ValueError(f"workspace: from a call with (T, N, H) = {self._dims}, these inputs have {dims}")
        if self._dtype != dtype:
            # (a byte-swapped dtype by its code: '>f8' is not float64 here, though named so)
            theirs = self._dtype.name if self._dtype.isnative else self._dtype.str
            raise ValueError(f"workspace: {theirs}, but these inputs compute in {np.dtype(dtype).name}")
        if self._time_major != time_major:
            raise ValueError(
                f"workspace: from a call with time_major={self._time_major}, this one has time_major={time_major}"
            )
        # The arrays too, not only what the workspace says of them: one built by hand (the class
        # is public) must not send a backend reading past them (Numba's kernels index freely).
        T, N, H = dims
        cs_shape = (T, N, H) if cell == "LSTM" else None
        for what, a, shape in (("gates", self._gates, (T, N, 4 * H)), ("cell states", self._cs, cs_shape)):
            if shape is None or a is None:
                ok = shape is None and a is None
            else:
                ok = type(a) is np.ndarray and a.shape == shape and a.dtype == dtype
                ok = ok and a.flags.c_contiguous and a.flags.aligned and a.dtype.isnative
            if not ok:
                expected = "None" if shape is None else f"a C-contiguous {np.dtype(dtype).name} array of shape {shape}"
                raise ValueError(f"workspace: its {what} must be {expected} ({forward} makes them so)")
        # hs must end as the call that made this workspace ended: a workspace of another call with
        # the same shapes gave gradients off by 50-160 % (found by a review). (One built by hand
        # may lack it; one that has it, of another shape or dtype, or not an array, is refused:
        # compared as bytes, a flattened copy had passed, a list raised AttributeError.)
        h_last = self._h_last
        if h_last is not None:
            if not (type(h_last) is np.ndarray and h_last.shape == (N, H) and h_last.dtype == dtype):
                raise ValueError(
                    f"workspace: its last step of hs must be None or a {np.dtype(dtype).name} array of shape "
                    f"{(N, H)} ({forward} makes it so)"
                )
            if T and not _same_bits(hs_tm[-1], h_last):
                raise ValueError(
                    f"workspace: from another {forward} call than the one that computed hs (hs's last step "
                    "differs from that call's); pass the workspace returned with this hs"
                )
        return self._gates, self._cs


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two arrays of one shape and dtype hold the same bits (a NaN equals itself). As
    bytes below 1 MiB (0.5 µs at N·H = 512, where np.array_equal(equal_nan=True) took 18 µs:
    a `tiny` backward's tenth), else through unsigned views (no copies of large states)."""
    if a.nbytes < (1 << 20):
        return a.tobytes() == b.tobytes()
    unsigned = np.dtype(f"u{a.itemsize}")
    return bool(np.array_equal(a.view(unsigned), b.view(unsigned)))


def _workspace_arrays(workspace, cell, dims, dtype, time_major, hs_tm):
    forward = f"{cell.lower()}_forward"
    if not isinstance(workspace, Workspace):
        raise TypeError(
            f"workspace: expected the Workspace that {forward}(..., workspace=True) returned, "
            f"got {type(workspace).__name__}"
        )
    return workspace._check(cell, dims, dtype, time_major, forward, hs_tm)


# Inference (workspace=False) keeps at most this many bytes of per-step scratch (the input
# projection, the gates, an LSTM's cell states) whatever T: the forward then runs in calls of
# that many steps, each carrying the state on. A call more costs packing Wh again and starting
# the team: (T, N, D, H) = (2000, 64, 128, 512), 5 calls against one, 1.005x (LSTM) and
# 0.995x (GRU) the time (docs/DESIGN.md, "Workspace").
INFERENCE_SCRATCH_BYTES = 256 << 20


def _steps_per_call(T: int, step_bytes: int, workspace: bool) -> int:
    """Steps per kernel call of a forward: all T with a workspace (backward needs all steps'
    gates), else as many as INFERENCE_SCRATCH_BYTES holds (at least 1, at most T)."""
    if workspace or step_bytes == 0:
        return T
    return min(T, max(1, INFERENCE_SCRATCH_BYTES // step_bytes))


def _backward_inputs(
    named, time_major, gates, workspace, cell
) -> tuple[dict, np.dtype, tuple, tuple, np.ndarray, np.ndarray, np.ndarray]:
    """Validated inputs of a backward: (arrays, dtype, (T, N, D, H), the workspace's arrays,
    x, hs, dhs as the kernels take them)."""
    arrays, dtype, (T, N, D, H) = _prepare(named, ("dhs", "x", "Wx", "Wh", "hs"), time_major, gates)
    x, hs, dhs = (_kernel_seq(arrays[k], dtype) for k in ("x", "hs", "dhs"))
    saved = _workspace_arrays(workspace, cell, (T, N, H), dtype, bool(time_major), _tm(hs, time_major))
    return arrays, dtype, (T, N, D, H), saved, x, hs, dhs


class LSTMOutput(NamedTuple):
    """``lstm_forward``'s result."""

    hs: Array
    h_last: Array
    c_last: Array
    workspace: Workspace | None


class LSTMGrads(NamedTuple):
    """``lstm_backward``'s result; each has the shape of what it is the gradient of."""

    dx: Array
    dWx: Array
    dWh: Array
    db: Array
    dh0: Array
    dc0: Array


class GRUOutput(NamedTuple):
    """``gru_forward``'s result."""

    hs: Array
    h_last: Array
    workspace: Workspace | None


class GRUGrads(NamedTuple):
    """``gru_backward``'s result; each has the shape of what it is the gradient of."""

    dx: Array
    dWx: Array
    dWh: Array
    db: Array
    dbh: Array
    dh0: Array


def lstm_forward(
    x: ArrayLike,
    Wx: ArrayLike,
    Wh: ArrayLike,
    b: ArrayLike | None = None,
    h0: ArrayLike | None = None,
    c0: ArrayLike | None = None,
    *,
    time_major: bool = False,
    workspace: bool = True,
    backend: str | None = None,
) -> LSTMOutput:
    """Run an LSTM over a whole sequence (PyTorch's cell; gate blocks [i | f | g | o]).

    a_t = x_t·Wx + h_{t-1}·Wh + b;  i, f, o = σ(a_i, a_f, a_o), g = tanh(a_g);
    c_t = f ⊙ c_{t-1} + i ⊙ g;  h_t = o ⊙ tanh(c_t);  h_{-1} = h0, c_{-1} = c0 (zeros if None).

    x (N, T, D) (or (T, N, D) with time_major), Wx (D, 4H), Wh (H, 4H), b (4H,), h0, c0 (N, H).
    Returns LSTMOutput(hs, h_last, c_last, workspace): hs in x's layout; workspace is what
    ``lstm_backward`` needs (T·N·5H values, and N·H of hs's last step), None with
    ``workspace=False`` (inference, which then keeps at most INFERENCE_SCRATCH_BYTES of
    scratch besides hs, or one step's if that is more, whatever T).
    dtype, layouts, backends and threads as for ``rnn_forward``.
    """
    kernel = get_backend(backend)
    workspace = _check_flag("workspace", workspace)
    named = dict(x=x, Wx=Wx, Wh=Wh, b=b, h0=h0, c0=c0)
    arrays, dtype, dims = _forward_inputs(named, time_major, 4)
    return _lstm_forward_checked(kernel, arrays, dtype, dims, time_major, workspace)


def _lstm_forward_checked(
    kernel, arrays: dict, dtype, dims: tuple, time_major: bool, workspace: bool, active=None, final_view=False
) -> LSTMOutput:
    """``lstm_forward`` past its checks (the layers call it with what they checked themselves):
    `arrays` the named arguments, of `dtype` (None where not given) with shapes that agree with
    `dims` = (T, N, D, H), x in the caller's layout, as ``_kernel_seq`` makes it; flags bools.
    `active`: the rows each step runs (``_reference.rows_per_step``; None: all). `final_view`:
    h_last may be a view of hs (``_last_step_view``)."""
    T, N, D, H = dims
    x = arrays["x"]
    hs = _empty(x.shape[:2] + (H,), dtype)
    hs_tm = _tm(hs, time_major)
    # Converted once, not per chunk (_input_projection's conversions of them are then no-ops).
    wx = _kernel_weights(arrays["Wx"], dtype)
    bias, wh, h, c = (_kernel_matrix(arrays[k], dtype) for k in ("b", "Wh", "h0", "c0"))
    view = _last_step_view(hs_tm, active) if final_view else None
    h_last = _final_state(h, dtype, N, H, T, active) if view is None else view
    c_last = _final_state(c, dtype, N, H, T, active)
    x_tm, steps = _tm(x, time_major), _steps_per_call(T, N * 5 * H * dtype.itemsize, workspace)
    gates = _empty((steps, N, 4 * H), dtype)  # x·Wx + b, then (in place) the activated gates
    cs = _empty((steps, N, H), dtype)
    for t0 in range(0, T, max(steps, 1)):
        t1 = min(T, t0 + steps)
        g, c_seq = gates[: t1 - t0], cs[: t1 - t0]
        _input_projection(kernel, x_tm[t0:t1], wx, bias, g, dtype)
        run = None if active is None else active[t0:t1]
        kernel.lstm_forward(g, wh, h, c, hs_tm[t0:t1], c_seq, g, active=run)
        if view is None:
            _final_rows((h_last, c_last), (hs_tm[t0:t1], c_seq), t0, T, active)
        else:
            _final_rows((c_last,), (c_seq,), t0, T, active)
        if t1 < T:  # the state the next chunk starts from (c_seq is reused by it)
            h, c = _kernel_matrix(hs_tm[t1 - 1], dtype), _copy(c_seq[t1 - 1 - t0])
    _zero_padding(hs_tm, active)
    ws = None
    if workspace:
        ws = Workspace("LSTM", (T, N, H), dtype, time_major, gates, cs, _copy(hs_tm[-1] if T else h_last))
    return LSTMOutput(hs, h_last, c_last, ws)


def lstm_backward(
    dhs: ArrayLike,
    x: ArrayLike,
    Wx: ArrayLike,
    Wh: ArrayLike,
    hs: ArrayLike,
    workspace: Workspace | None,
    h0: ArrayLike | None = None,
    c0: ArrayLike | None = None,
    *,
    dh_last: ArrayLike | None = None,
    dc_last: ArrayLike | None = None,
    time_major: bool = False,
    backend: str | None = None,
) -> LSTMGrads:
    """Backpropagation through time for ``lstm_forward``.

    dhs like hs; x, Wx, Wh, h0, c0 as given to ``lstm_forward``; hs and workspace what it
    returned (typed Optional as ``LSTMOutput.workspace`` is: None, from ``workspace=False``,
    is a TypeError); dh_last, dc_last (N, H), optional: gradients w.r.t. h_last and c_last.
    Returns LSTMGrads(dx, dWx, dWh, db, dh0, dc0); db, dh0 and dc0 also when b, h0, c0 were None.
    """
    steps, (dh0, dc0) = _lstm_backward_steps(
        dhs, x, Wx, Wh, hs, workspace, h0, c0, dh_last, dc_last, time_major, backend
    )
    dx, dWx, dWh, db, _ = _weight_grads(steps)
    return LSTMGrads(dx, dWx, dWh, db, dh0, dc0)


def _lstm_backward_steps(dhs, x, Wx, Wh, hs, workspace, h0, c0, dh_last, dc_last, time_major, backend, active=None):
    """``lstm_backward``'s checks and recurrence: (BackwardSteps, (dh0, dc0)) (as ``_rnn_backward_steps``)."""
    kernel = get_backend(backend)
    named = dict(dhs=dhs, x=x, Wx=Wx, Wh=Wh, hs=hs, h0=h0, c0=c0, dh_last=dh_last, dc_last=dc_last)
    arrays, dtype, (T, N, D, H), (gates, cs), x, hs, dhs = _backward_inputs(named, time_major, 4, workspace, "LSTM")
    h0, c0, wh = (_kernel_matrix(arrays[k], dtype) for k in ("h0", "c0", "Wh"))
    da = _empty((T, N, 4 * H), dtype)
    dhs_tm = _tm(dhs, time_major)

    dh0, dc0 = _empty((N, H), dtype), _empty((N, H), dtype)
    dh_last, dc_last = (_kernel_matrix(arrays[k], dtype) for k in ("dh_last", "dc_last"))
    _zero_padding(da, active)  # (the kernel writes the rows each step runs)
    kernel.lstm_backward(dhs_tm, gates, cs, c0, wh, dh_last, dc_last, da, dh0, dc0, active=active)
    Wx = _kernel_weights(arrays["Wx"], dtype)
    h0 = _first_state_read(h0, active)
    return BackwardSteps(kernel, x, Wx, _tm(hs, time_major), h0, da, da, time_major), (dh0, dc0)


def gru_forward(
    x: ArrayLike,
    Wx: ArrayLike,
    Wh: ArrayLike,
    b: ArrayLike | None = None,
    bh: ArrayLike | None = None,
    h0: ArrayLike | None = None,
    *,
    time_major: bool = False,
    workspace: bool = True,
    backend: str | None = None,
) -> GRUOutput:
    """Run a GRU over a whole sequence (PyTorch's cell, Keras's reset_after=True; blocks [r | z | n]).

    u_t = x_t·Wx + b, v_t = h_{t-1}·Wh + bh;  r = σ(u_r + v_r), z = σ(u_z + v_z),
    n = tanh(u_n + r ⊙ v_n);  h_t = (1 − z) ⊙ n + z ⊙ h_{t-1};  h_{-1} = h0 (zeros if None).

    x (N, T, D) (or (T, N, D)), Wx (D, 3H), Wh (H, 3H), b, bh (3H,), h0 (N, H).
    Returns GRUOutput(hs, h_last, workspace) (T·N·4H values, and N·H of hs's last step; None
    with ``workspace=False``, which bounds the scratch as for ``lstm_forward``).
    """
    kernel = get_backend(backend)
    workspace = _check_flag("workspace", workspace)
    named = dict(x=x, Wx=Wx, Wh=Wh, b=b, bh=bh, h0=h0)
    arrays, dtype, dims = _forward_inputs(named, time_major, 3)
    return _gru_forward_checked(kernel, arrays, dtype, dims, time_major, workspace)


def _gru_forward_checked(
    kernel, arrays: dict, dtype, dims: tuple, time_major: bool, workspace: bool, active=None, final_view=False
) -> GRUOutput:
    """``gru_forward`` past its checks (as ``_lstm_forward_checked``)."""
    T, N, D, H = dims
    x = arrays["x"]
    hs = _empty(x.shape[:2] + (H,), dtype)
    hs_tm = _tm(hs, time_major)
    # Converted once, not per chunk (_input_projection's conversions of them are then no-ops).
    wx = _kernel_weights(arrays["Wx"], dtype)
    bias, wh, bh, h = (_kernel_matrix(arrays[k], dtype) for k in ("b", "Wh", "bh", "h0"))
    view = _last_step_view(hs_tm, active) if final_view else None
    h_last = _final_state(h, dtype, N, H, T, active) if view is None else view
    x_tm, steps = _tm(x, time_major), _steps_per_call(T, N * 7 * H * dtype.itemsize, workspace)
    xw = _empty((steps, N, 3 * H), dtype)
    gates = _empty((steps, N, 4 * H), dtype)
    for t0 in range(0, T, max(steps, 1)):
        t1 = min(T, t0 + steps)
        _input_projection(kernel, x_tm[t0:t1], wx, bias, xw[: t1 - t0], dtype)
        run = None if active is None else active[t0:t1]
        kernel.gru_forward(xw[: t1 - t0], wh, bh, h, hs_tm[t0:t1], gates[: t1 - t0], active=run)
        if view is None:
            _final_rows((h_last,), (hs_tm[t0:t1],), t0, T, active)
        if t1 < T:
            h = _kernel_matrix(hs_tm[t1 - 1], dtype)
    _zero_padding(hs_tm, active)
    ws = None
    if workspace:
        ws = Workspace("GRU", (T, N, H), dtype, time_major, gates, None, _copy(hs_tm[-1] if T else h_last))
    return GRUOutput(hs, h_last, ws)


def gru_backward(
    dhs: ArrayLike,
    x: ArrayLike,
    Wx: ArrayLike,
    Wh: ArrayLike,
    hs: ArrayLike,
    workspace: Workspace | None,
    h0: ArrayLike | None = None,
    *,
    dh_last: ArrayLike | None = None,
    time_major: bool = False,
    backend: str | None = None,
) -> GRUGrads:
    """Backpropagation through time for ``gru_forward``: GRUGrads(dx, dWx, dWh, db, dbh, dh0)
    (b and bh are not needed: the workspace holds their effect).

    dhs like hs; x, Wx, Wh, h0 as given to ``gru_forward``; hs and workspace what it returned
    (None, from ``workspace=False``, is a TypeError, as for ``lstm_backward``); dh_last (N, H),
    optional: a gradient w.r.t. h_last. dbh and dh0 also when bh and h0 were None.
    """
    steps, (dh0,) = _gru_backward_steps(dhs, x, Wx, Wh, hs, workspace, h0, dh_last, time_major, backend)
    dx, dWx, dWh, db, dbh = _weight_grads(steps)
    return GRUGrads(dx, dWx, dWh, db, dbh, dh0)


def _gru_backward_steps(dhs, x, Wx, Wh, hs, workspace, h0, dh_last, time_major, backend, active=None):
    """``gru_backward``'s checks and recurrence: (BackwardSteps, (dh0,)) (as ``_rnn_backward_steps``)."""
    kernel = get_backend(backend)
    named = dict(dhs=dhs, x=x, Wx=Wx, Wh=Wh, hs=hs, h0=h0, dh_last=dh_last)
    arrays, dtype, (T, N, D, H), (gates, _), x, hs, dhs = _backward_inputs(named, time_major, 3, workspace, "GRU")
    h0, wh = _kernel_matrix(arrays["h0"], dtype), _kernel_matrix(arrays["Wh"], dtype)
    hs_tm, dhs_tm = _tm(hs, time_major), _tm(dhs, time_major)
    du, dv = _empty((T, N, 3 * H), dtype), _empty((T, N, 3 * H), dtype)

    dh0 = _empty((N, H), dtype)
    _zero_padding(du, active)  # (the kernel writes the rows each step runs)
    _zero_padding(dv, active)
    dh_last = _kernel_matrix(arrays["dh_last"], dtype)
    kernel.gru_backward(dhs_tm, hs_tm, h0, gates, wh, dh_last, du, dv, dh0, active=active)
    Wx = _kernel_weights(arrays["Wx"], dtype)
    h0 = _first_state_read(h0, active)
    return BackwardSteps(kernel, x, Wx, hs_tm, h0, du, dv, time_major), (dh0,)
