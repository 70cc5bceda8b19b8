"""The NumPy reference: the equations of docs/DESIGN.md, written to be read, not to be fast.

Two layers of it:

* ``forward`` / ``backward`` implement the recurrence-kernel contract that every backend
  implements (the ``numpy`` backend's vanilla kernels are exactly these two functions; its
  GEMMs and column sums, also the numba backend's, are ``rows_gemm`` ... ``column_sums`` below);
* ``rnn_forward`` / ``rnn_backward`` are the whole model, time-major, with every gradient
  accumulated step by step. They share no code with the orchestration (``_orchestration``)
  and are the ground truth the tests compare every backend against.
"""

from __future__ import annotations

import numpy as np


def activate(a: np.ndarray, activation: str) -> np.ndarray:
    """act(a): tanh, or relu with relu(NaN) = NaN (np.maximum propagates NaN)."""
    return np.tanh(a) if activation == "tanh" else np.maximum(a, 0)


def activation_grad(h: np.ndarray, activation: str) -> np.ndarray:
    """act'(a) written through the output h = act(a): tanh' = 1 - h², relu' = [h > 0] (NaN kept)."""
    if activation == "tanh":
        return 1 - h * h
    return np.heaviside(h, 0).astype(h.dtype)


# --- the recurrence-kernel contract (time-major (T, N, H) views) -------------------------


def rows_per_step(active, T: int, N: int) -> list:
    """The rows each step runs: ``active`` (T counts that never grow, for a batch sorted longest
    first: the samples still running at step t are rows [0, active[t])), or all N."""
    return [N] * T if active is None else [int(n) for n in active]


def forward(xw, wh, h0, out, activation, active=None):
    """out[t] = act(xw[t] + out[t-1] @ wh), out[-1] = h0 (zeros when None). out may be xw.
    Step t runs rows [0, active[t]) only (``rows_per_step``): the others are left as they are."""
    h = np.zeros(out.shape[1:], out.dtype) if h0 is None else h0
    for t, n in enumerate(rows_per_step(active, *out.shape[:2])):
        out[t, :n] = activate(xw[t, :n] + h[:n] @ wh, activation)
        h = out[t]


def backward(dh, h, wh, dh_last, da, dh0, activation, active=None):
    """da[t] = (dh[t] + da[t+1] @ wh.T) * act'(h[t]), with dh_last for da[T] @ wh.T; dh0 = da[0] @ wh.T.
    Step t runs rows [0, active[t]) only: a row's dh_last enters at its own last step, and
    dh0 is dh_last (or zeros) for a row that has no step."""
    g = np.zeros(dh0.shape, dh0.dtype) if dh_last is None else np.array(dh_last, dh0.dtype)
    for t, n in reversed(list(enumerate(rows_per_step(active, *da.shape[:2])))):
        da[t, :n] = (dh[t, :n] + g[:n]) * activation_grad(h[t, :n], activation)
        g[:n] = da[t, :n] @ wh.T
    dh0[...] = g


# --- the big GEMMs of the orchestration (the numpy and numba backends use these) ---------
# A single NumPy call cannot be interrupted (Ctrl-C waits for it to return), so a big product
# runs as several calls over blocks of rows, each about GEMM_BLOCK_WORK multiply-adds (~1 ms
# at BLAS speed, ~0.05 s on a loaded 2-core machine) but at least GEMM_MIN_ROWS rows, so that
# BLAS still reuses each value of b that many times.
GEMM_BLOCK_WORK = 1 << 26
GEMM_MIN_ROWS = 64


def _row_blocks(S, N, rows):
    """(s, n) index pairs of blocks of at most `rows` rows (whole steps when a step has fewer)
    covering an (S, N) grid of rows."""
    if rows >= N:
        steps = max(1, rows // max(1, N))
        return [(slice(s, s + steps), slice(None)) for s in range(0, S, steps)]
    return [(slice(s, s + 1), slice(n, n + rows)) for s in range(S) for n in range(0, N, rows)]


def rows_gemm(a, b, bias, out):
    """out[s, n] = a[s, n] @ b (+ bias) for (S, N, K) a, (K, P) b, (S, N, P) out."""
    # b C-ordered whatever the caller's layout: BLAS sums a transposed operand in another order
    # (a Fortran-ordered Wx of 33 rows gave other bits, up to 9e-16, than the same values in C
    # order; the README promises the bits of a contiguous copy in every layout). A copy of the
    # weights, small next to the product; the backward's Wxᵀ is one too.
    b = np.ascontiguousarray(b)
    block_rows = max(GEMM_MIN_ROWS, GEMM_BLOCK_WORK // max(1, b.shape[0] * b.shape[1]))
    for rows in _row_blocks(a.shape[0], a.shape[1], block_rows):
        block = a[rows]  # (C-ordered too: NumPy multiplies rows 0 or -K apart without BLAS, in another order)
        np.matmul(block if block.flags.c_contiguous else np.ascontiguousarray(block), b, out=out[rows])
        if bias is not None:
            out[rows] += bias


# Rows per BLAS call in reduce_gemm. BLAS adds its blocks of K one after another into C in
# the dtype (OpenBLAS sgemm and sdot: measured 1.7e5 eps, 1 % off, over 2^25 rows of
# constant data), so a long float32 sum is split into calls over at most this many rows,
# whose results are added in float64: any term then goes through at most 4096 float32
# roundings whatever N*T is. Two calls on `large` (6400 rows).
REDUCE_BLOCK_ROWS = 4096


def reduce_gemm(a, b, out, accumulate):
    """out (+)= Σ_{s,n} a[s, n]ᵀ b[s, n] for (S, N, M) a, (S, N, P) b, (M, P) out."""
    total = out.astype(np.float64) if accumulate else np.zeros(out.shape, np.float64)
    for s, n in _row_blocks(a.shape[0], a.shape[1], REDUCE_BLOCK_ROWS):
        total += np.tensordot(a[s, n], b[s, n], axes=([0, 1], [0, 1]))
    out[...] = total


def column_sums(a, out):
    """out = Σ_{s,n} a[s, n] for (S, N, P) a, (P,) out: summed in float64 (NumPy adds the rows
    one after another: in float32 a long sum stalls at 2^24), rounded once to out's dtype."""
    out[...] = a.sum(axis=(0, 1), dtype=np.float64)


# --- the whole model, time-major: x (T, N, D) ------------------------------------------


def rnn_forward(x, Wx, Wh, b=None, h0=None, activation="tanh"):
    """hs[t] = act(x[t] @ Wx + hs[t-1] @ Wh + b); returns (hs, h_last)."""
    T, N, _ = x.shape
    H = Wh.shape[0]
    h = np.zeros((N, H), np.result_type(x, Wx, Wh)) if h0 is None else h0
    hs = np.zeros((T, N, H), h.dtype)
    for t in range(T):
        a = x[t] @ Wx + h @ Wh
        if b is not None:
            a = a + b
        h = hs[t] = activate(a, activation)
    return hs, h.copy()


def rnn_backward(dhs, x, Wx, Wh, hs, h0=None, dh_last=None, activation="tanh"):
    """Backpropagation through time, one step at a time; returns (dx, dWx, dWh, db, dh0)."""
    T, N, D = x.shape
    H = Wh.shape[0]
    h0 = np.zeros((N, H), hs.dtype) if h0 is None else h0
    dx = np.zeros(x.shape, hs.dtype)
    dWx, dWh, db = np.zeros((D, H), hs.dtype), np.zeros((H, H), hs.dtype), np.zeros(H, hs.dtype)
    dh_next = np.zeros((N, H), hs.dtype) if dh_last is None else dh_last
    for t in reversed(range(T)):
        h_prev = hs[t - 1] if t > 0 else h0
        da = (dhs[t] + dh_next) * activation_grad(hs[t], activation)
        dWx += x[t].T @ da
        dWh += h_prev.T @ da
        db += da.sum(axis=0)
        dx[t] = da @ Wx.T
        dh_next = da @ Wh.T
    return dx, dWx, dWh, db, dh_next
