"""The public functional API: validation, the big GEMMs, and one call into a backend's kernel.

    forward:  XW = X·Wx + b (one GEMM), then hs = kernel.forward(XW, Wh, h0) (the recurrence)
    backward: dA = kernel.backward(dhs, hs, Wh, dh_last), then
              dWx = Xᵀ·dA, dx = dA·Wxᵀ, dWh = H_prevᵀ·dA, db = Σ dA   (one GEMM or sum each)

Every backend runs through this one path, so backends differ only in the recurrence (and
the compiled one in its own GEMMs and column sums: ``_backends``).
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ._backends import get_backend
from ._orchestration import (
    BackwardSteps,
    _check_activation,
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

Activation = Literal["tanh", "relu"]


class RNNGrads(NamedTuple):
    """Gradients from ``rnn_backward``; each has the shape of what it is the gradient of."""

    dx: NDArray[np.floating[Any]]
    dWx: NDArray[np.floating[Any]]
    dWh: NDArray[np.floating[Any]]
    db: NDArray[np.floating[Any]]
    dh0: NDArray[np.floating[Any]]


def rnn_forward(
    x: ArrayLike,
    Wx: ArrayLike,
    Wh: ArrayLike,
    b: ArrayLike | None = None,
    h0: ArrayLike | None = None,
    *,
    activation: Activation = "tanh",
    time_major: bool = False,
    backend: str | None = None,
) -> tuple[NDArray[np.floating[Any]], NDArray[np.floating[Any]]]:
    """Run a vanilla RNN over a whole sequence.

    h_t = act(x_t · Wx + h_{t-1} · Wh + b), h_{-1} = h0 (zeros when None).

    Parameters
    ----------
    x : array (N, T, D), or (T, N, D) with ``time_major=True``
    Wx : array (D, H)
    Wh : array (H, H)
    b : array (H,), optional
    h0 : array (N, H), optional
    activation : 'tanh' (default) or 'relu'
    time_major : bool, the layout of ``x`` and of the returned ``hs``
    backend : 'cpp', 'numba', 'numpy' or None (``$PYRNN_FAST_BACKEND``, else the best available)

    Returns
    -------
    hs : array (N, T, H) (or (T, N, H)), every hidden state
    h_last : array (N, H), the last hidden state (h0, or zeros, when T = 0)

    The result dtype is ``np.result_type(<inputs>, np.float32)`` (float32 stays float32, any
    float64 gives float64, integers as NumPy promotes them), computed natively in that dtype. Inputs
    are never modified. An hs of 1 MiB or more is a view of a buffer of the calling thread's
    pool (``owndata`` False; see ``release_buffers``), as is rnn_backward's dx.

    Raises
    ------
    TypeError : a required array None, a non-numeric or complex/longdouble array, a
        ``time_major`` that is not a bool, a ``backend`` that is not a str or None.
    ValueError : shapes that disagree (the message names the argument), an ``activation``
        other than 'tanh' / 'relu', an unknown or unavailable backend.
    """
    act = _check_activation(activation)
    kernel = get_backend(backend)
    arrays, dtype, dims = _forward_inputs(dict(x=x, Wx=Wx, Wh=Wh, b=b, h0=h0), time_major)
    return _rnn_forward_checked(kernel, arrays, dtype, dims, bool(time_major), act)


def _rnn_forward_checked(
    kernel, arrays: dict, dtype, dims: tuple, time_major: bool, act: str, active=None, final_view=False
):
    """``rnn_forward`` past its checks (the layers call it with what they checked themselves):
    `arrays` the named arguments, of `dtype` (None where not given) with shapes that agree with
    `dims` = (T, N, D, H), x in the caller's layout, as ``_kernel_seq`` makes it. `active`: the
    rows each step runs (``_reference.rows_per_step``; None: all). `final_view`: h_last may be
    a view of hs (``_last_step_view``)."""
    T, N, D, H = dims
    x = arrays["x"]
    h0 = _kernel_matrix(arrays["h0"], dtype)
    wh = _kernel_matrix(arrays["Wh"], dtype)
    hs = _empty(x.shape[:2] + (H,), dtype)
    hs_tm = _tm(hs, time_major)
    # XW doubles as the output: the kernel overwrites xw[t] with h_t once it has read it.
    _input_projection(kernel, _tm(x, time_major), arrays["Wx"], arrays["b"], hs_tm, dtype)
    view = _last_step_view(hs_tm, active) if final_view else None
    h_last = _final_state(h0, dtype, N, H, T, active) if view is None else view
    kernel.forward(hs_tm, wh, h0, hs_tm, act, active=active)
    if view is None:
        _final_rows((h_last,), (hs_tm,), 0, T, active)
    _zero_padding(hs_tm, active)
    return hs, h_last


def rnn_backward(
    dhs: ArrayLike,
    x: ArrayLike,
    Wx: ArrayLike,
    Wh: ArrayLike,
    hs: ArrayLike,
    h0: ArrayLike | None = None,
    *,
    dh_last: ArrayLike | None = None,
    activation: Activation = "tanh",
    time_major: bool = False,
    backend: str | None = None,
) -> RNNGrads:
    """Backpropagation through time for ``rnn_forward``.

    Parameters
    ----------
    dhs : array like ``hs``, the gradient of the loss w.r.t. every output
    x, Wx, Wh, h0 : as given to ``rnn_forward`` (b is not needed: hs holds its effect)
    hs : the ``hs`` that ``rnn_forward`` returned
    dh_last : array (N, H), optional, a gradient w.r.t. ``h_last`` added at the last step
    activation, time_major, backend : as for ``rnn_forward``

    Returns
    -------
    RNNGrads(dx, dWx, dWh, db, dh0): db is what a bias would receive, dh0 what the initial
    state receives (also when h0 was None); dh0 equals dh_last (or zeros) when T = 0.
    """
    steps, (dh0,) = _rnn_backward_steps(dhs, x, Wx, Wh, hs, h0, dh_last, activation, time_major, backend)
    dx, dWx, dWh, db, _ = _weight_grads(steps)
    return RNNGrads(dx, dWx, dWh, db, dh0)


def _rnn_backward_steps(dhs, x, Wx, Wh, hs, h0, dh_last, activation, time_major, backend, active=None):
    """``rnn_backward``'s checks and recurrence: (BackwardSteps, (dh0,)); ``_weight_grads``
    does the rest. `active`: the rows each step ran (``_reference.rows_per_step``; None: all)."""
    act = _check_activation(activation)
    kernel = get_backend(backend)
    arrays, dtype, (T, N, D, H) = _prepare(
        dict(dhs=dhs, x=x, Wx=Wx, Wh=Wh, hs=hs, h0=h0, dh_last=dh_last), ("dhs", "x", "Wx", "Wh", "hs"), time_major
    )
    x = _kernel_seq(arrays["x"], dtype)
    Wx = _kernel_weights(arrays["Wx"], dtype)
    hs = _kernel_seq(arrays["hs"], dtype)
    dhs = _kernel_seq(arrays["dhs"], dtype)
    h0 = _kernel_matrix(arrays["h0"], dtype)
    wh = _kernel_matrix(arrays["Wh"], dtype)
    da = _empty(hs.shape, dtype)  # in the caller's layout, C-contiguous
    hs_tm, da_tm, dhs_tm = _tm(hs, time_major), _tm(da, time_major), _tm(dhs, time_major)

    dh0 = _empty((N, H), dtype)
    _zero_padding(da_tm, active)  # (the kernel writes the rows each step runs)
    kernel.backward(dhs_tm, hs_tm, wh, _kernel_matrix(arrays["dh_last"], dtype), da_tm, dh0, act, active=active)
    h0 = _first_state_read(h0, active)
    return BackwardSteps(kernel, x, Wx, hs_tm, h0, da_tm, da_tm, time_major), (dh0,)
