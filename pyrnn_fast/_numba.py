"""The Numba backend: the recurrence-kernel contract of ``_reference`` compiled with ``@njit``.

Imported only when the ``numba`` backend is first used, so ``import pyrnn_fast`` never pays for
importing numba. Loops are written out (no BLAS call inside the step) in the order that lets
LLVM vectorise the innermost loop: ``acc[j] += h[k] * W[k, j]`` over contiguous ``j``.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def _act(v, relu):
    if relu:
        return v if not v < 0 else v * 0  # keeps NaN: relu(NaN) = NaN
    return math.tanh(v)


@njit(cache=True, nogil=True)
def _act_grad(h, relu):
    if relu:
        if h > 0:
            return h * 0 + 1
        return h if h != h else h * 0  # NaN in, NaN out
    return 1 - h * h


@njit(cache=True, nogil=True)
def _row_times(hrow, w, acc):
    """acc = hrow @ w for one row, written so that the inner loop vectorises."""
    acc[:] = 0
    for k in range(w.shape[0]):
        a = hrow[k]
        for j in range(w.shape[1]):
            acc[j] += a * w[k, j]


@njit(cache=True, nogil=True)
def _forward(xw, wh, h0, out, relu):
    T, N, H = out.shape
    acc = np.empty(H, dtype=out.dtype)
    for t in range(T):
        for n in range(N):
            hprev = h0[n] if t == 0 else out[t - 1, n]
            _row_times(hprev, wh, acc)
            for j in range(H):
                out[t, n, j] = _act(acc[j] + xw[t, n, j], relu)


@njit(cache=True, nogil=True)
def _backward(dh, h, wh_t, dh_last, da, dh0, relu):
    T, N, H = da.shape
    acc = np.empty(H, dtype=da.dtype)
    for t in range(T - 1, -1, -1):
        for n in range(N):
            if t == T - 1:
                acc[:] = dh_last[n]
            else:
                _row_times(da[t + 1, n], wh_t, acc)
            for j in range(H):
                da[t, n, j] = (dh[t, n, j] + acc[j]) * _act_grad(h[t, n, j], relu)
    for n in range(N):
        if T == 0:
            dh0[n] = dh_last[n]
        else:
            _row_times(da[0, n], wh_t, acc)
            dh0[n] = acc


def forward(xw, wh, h0, out, activation):
    if h0 is None:
        h0 = np.zeros(out.shape[1:], out.dtype)
    _forward(xw, wh, h0, out, activation == "relu")


def backward(dh, h, wh, dh_last, da, dh0, activation):
    if dh_last is None:
        dh_last = np.zeros(dh0.shape, dh0.dtype)
    _backward(dh, h, np.ascontiguousarray(wh.T), dh_last, da, dh0, activation == "relu")
