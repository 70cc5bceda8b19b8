"""The Numba backend of the gated cells: the kernel contract of ``_reference_gated`` compiled
with ``@njit``, in the style of ``_numba`` (whose row-block product, thread choice and chunking
it reuses): per step, blocks of ROWS rows of the state times the weights by loops LLVM
vectorises, then the cell's elementwise update for those rows; big steps split the row
blocks across threads; long sequences run in chunks so that Ctrl-C is seen between them.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from ._numba import (
    CACHE,
    CHUNK_WORK,
    ROWS,
    _blocks,
    _first_rows,
    _parallel,
    _recurrent_part,
    _rows_times,
    _state_grad,
    rows_per_step,
)


@njit(cache=CACHE, nogil=True, inline="always")
def _sig(v):
    if v >= 0:
        return 1 / (1 + math.exp(-v))
    e = math.exp(v)
    return e / (1 + e)


# --- LSTM ----------------------------------------------------------------------------------


@njit(cache=CACHE, nogil=True, inline="always")
def _lstm_forward_rows(xw, wh, hprev, cprev, hs, cs, gates, t, b, acc, n_rows):
    H = hprev.shape[1]
    r0 = b * ROWS
    r1 = min(r0 + ROWS, n_rows)
    _rows_times(hprev, r0, r1, wh, acc)
    for r in range(r1 - r0):
        n = r0 + r
        for j in range(H):  # xw[t, n, k] is read before gates[t, n, k] (possibly the same) is written
            i = _sig(acc[r, j] + xw[t, n, j])
            f = _sig(acc[r, H + j] + xw[t, n, H + j])
            g = math.tanh(acc[r, 2 * H + j] + xw[t, n, 2 * H + j])
            o = _sig(acc[r, 3 * H + j] + xw[t, n, 3 * H + j])
            gates[t, n, j], gates[t, n, H + j], gates[t, n, 2 * H + j], gates[t, n, 3 * H + j] = i, f, g, o
            c = f * cprev[n, j] + i * g
            cs[t, n, j] = c
            hs[t, n, j] = o * math.tanh(c)


@njit(cache=CACHE, nogil=True)
def _lstm_forward_serial(xw, wh, h0, c0, hs, cs, gates, active):
    T, N, H = hs.shape
    acc = np.empty((ROWS, 4 * H), dtype=hs.dtype)
    for t in range(T):
        hprev, cprev = (h0, c0) if t == 0 else (hs[t - 1], cs[t - 1])
        for b in range(_blocks(active[t])):
            _lstm_forward_rows(xw, wh, hprev, cprev, hs, cs, gates, t, b, acc, active[t])


@njit(cache=CACHE, nogil=True, parallel=True)
def _lstm_forward_parallel(xw, wh, h0, c0, hs, cs, gates, active):
    T, N, H = hs.shape
    for t in range(T):
        hprev, cprev = (h0, c0) if t == 0 else (hs[t - 1], cs[t - 1])
        for b in prange(_blocks(active[t])):
            acc = np.empty((ROWS, 4 * H), dtype=hs.dtype)
            _lstm_forward_rows(xw, wh, hprev, cprev, hs, cs, gates, t, b, acc, active[t])


@njit(cache=CACHE, nogil=True, inline="always")
def _lstm_backward_rows(dhs, gates, cs, c0, wh_t, dh_last, dc, da, t, b, acc, active):
    H = dhs.shape[2]
    r0, r1 = _recurrent_part(da, t, active, wh_t, dh_last, b, acc, False)
    for r in range(r1 - r0):
        n = r0 + r
        for j in range(H):
            i, f, g, o = gates[t, n, j], gates[t, n, H + j], gates[t, n, 2 * H + j], gates[t, n, 3 * H + j]
            c_prev = cs[t - 1, n, j] if t > 0 else c0[n, j]
            dh = dhs[t, n, j] + acc[r, j]
            tc = math.tanh(cs[t, n, j])
            d = dc[n, j] + dh * o * (1 - tc * tc)  # dc carries dc_{t+1} * f_{t+1} in, dc_t * f_t out
            da[t, n, j] = d * g * i * (1 - i)
            da[t, n, H + j] = d * c_prev * f * (1 - f)
            da[t, n, 2 * H + j] = d * i * (1 - g * g)
            da[t, n, 3 * H + j] = dh * tc * o * (1 - o)
            dc[n, j] = d * f


@njit(cache=CACHE, nogil=True)
def _lstm_backward_serial(dhs, gates, cs, c0, wh_t, dh_last, dc, da, dh0, active):
    T, N, H = dhs.shape
    acc = np.empty((ROWS, H), dtype=dhs.dtype)
    for t in range(T - 1, -1, -1):
        for b in range(_blocks(active[t])):
            _lstm_backward_rows(dhs, gates, cs, c0, wh_t, dh_last, dc, da, t, b, acc, active)
    _state_grad(da[:1], wh_t, dh_last, dh0, _first_rows(active))


@njit(cache=CACHE, nogil=True, parallel=True)
def _lstm_backward_parallel(dhs, gates, cs, c0, wh_t, dh_last, dc, da, dh0, active):
    T, N, H = dhs.shape
    for t in range(T - 1, -1, -1):
        for b in prange(_blocks(active[t])):
            acc = np.empty((ROWS, H), dtype=dhs.dtype)
            _lstm_backward_rows(dhs, gates, cs, c0, wh_t, dh_last, dc, da, t, b, acc, active)
    _state_grad(da[:1], wh_t, dh_last, dh0, _first_rows(active))


# --- GRU -----------------------------------------------------------------------------------


@njit(cache=CACHE, nogil=True, inline="always")
def _gru_forward_rows(xw, wh, bh, hprev, hs, gates, t, b, acc, n_rows):
    H = hprev.shape[1]
    r0 = b * ROWS
    r1 = min(r0 + ROWS, n_rows)
    _rows_times(hprev, r0, r1, wh, acc)
    for r in range(r1 - r0):
        n = r0 + r
        for j in range(H):
            v_n = acc[r, 2 * H + j] + bh[2 * H + j]
            rr = _sig(xw[t, n, j] + acc[r, j] + bh[j])
            z = _sig(xw[t, n, H + j] + acc[r, H + j] + bh[H + j])
            nn = math.tanh(xw[t, n, 2 * H + j] + rr * v_n)
            gates[t, n, j], gates[t, n, H + j], gates[t, n, 2 * H + j], gates[t, n, 3 * H + j] = rr, z, nn, v_n
            hs[t, n, j] = (1 - z) * nn + z * hprev[n, j]


@njit(cache=CACHE, nogil=True)
def _gru_forward_serial(xw, wh, bh, h0, hs, gates, active):
    T, N, H = hs.shape
    acc = np.empty((ROWS, 3 * H), dtype=hs.dtype)
    for t in range(T):
        hprev = h0 if t == 0 else hs[t - 1]
        for b in range(_blocks(active[t])):
            _gru_forward_rows(xw, wh, bh, hprev, hs, gates, t, b, acc, active[t])


@njit(cache=CACHE, nogil=True, parallel=True)
def _gru_forward_parallel(xw, wh, bh, h0, hs, gates, active):
    T, N, H = hs.shape
    for t in range(T):
        hprev = h0 if t == 0 else hs[t - 1]
        for b in prange(_blocks(active[t])):
            acc = np.empty((ROWS, 3 * H), dtype=hs.dtype)
            _gru_forward_rows(xw, wh, bh, hprev, hs, gates, t, b, acc, active[t])


@njit(cache=CACHE, nogil=True, inline="always")
def _gru_backward_rows(dhs, hs, h0, gates, wh_t, carry, du, dv, t, b, acc, active):
    H = dhs.shape[2]
    r0, r1 = _recurrent_part(dv, t, active, wh_t, carry, b, acc, True)
    for r in range(r1 - r0):
        n = r0 + r
        for j in range(H):
            rr, z, nn, v_n = gates[t, n, j], gates[t, n, H + j], gates[t, n, 2 * H + j], gates[t, n, 3 * H + j]
            h_prev = hs[t - 1, n, j] if t > 0 else h0[n, j]
            dh = dhs[t, n, j] + acc[r, j] + carry[n, j]  # carry: dh_{t+1} * z_{t+1} (dh_last at first)
            da_n = dh * (1 - z) * (1 - nn * nn)
            da_r = da_n * v_n * rr * (1 - rr)
            da_z = dh * (h_prev - nn) * z * (1 - z)
            du[t, n, j], du[t, n, H + j], du[t, n, 2 * H + j] = da_r, da_z, da_n
            dv[t, n, j], dv[t, n, H + j], dv[t, n, 2 * H + j] = da_r, da_z, da_n * rr
            carry[n, j] = dh * z


@njit(cache=CACHE, nogil=True)
def _gru_backward_serial(dhs, hs, h0, gates, wh_t, carry, du, dv, dh0, active):
    T, N, H = dhs.shape
    acc = np.empty((ROWS, H), dtype=dhs.dtype)
    for t in range(T - 1, -1, -1):
        for b in range(_blocks(active[t])):
            _gru_backward_rows(dhs, hs, h0, gates, wh_t, carry, du, dv, t, b, acc, active)
    _gru_state_grad(dv, wh_t, carry, dh0, _first_rows(active))


@njit(cache=CACHE, nogil=True)
def _gru_state_grad(dv, wh_t, carry, dh0, n):
    """dh0 = dv[0] @ Whᵀ + carry for the rows step 0 runs, the carry (dh_last) for the others."""
    _state_grad(dv[:1], wh_t, carry, dh0, n)
    dh0[:n] += carry[:n]


@njit(cache=CACHE, nogil=True, parallel=True)
def _gru_backward_parallel(dhs, hs, h0, gates, wh_t, carry, du, dv, dh0, active):
    T, N, H = dhs.shape
    for t in range(T - 1, -1, -1):
        for b in prange(_blocks(active[t])):
            acc = np.empty((ROWS, H), dtype=dhs.dtype)
            _gru_backward_rows(dhs, hs, h0, gates, wh_t, carry, du, dv, t, b, acc, active)
    _gru_state_grad(dv, wh_t, carry, dh0, _first_rows(active))


# --- the contract's entry points: zeros for None, thread choice, chunks ---------------------


def _zeros(a, shape, dtype):
    return np.zeros(shape, dtype) if a is None else a


def _chunks(T, N, H, G, reverse=False):
    """Step ranges of about CHUNK_WORK multiply-adds each (one step at least)."""
    step = max(1, CHUNK_WORK // max(1, N * H * G * H))
    starts = range(0, T, step)
    out = [(t0, min(T, t0 + step)) for t0 in starts]
    return out[::-1] if reverse else out


def lstm_forward(xw, wh, h0, c0, hs, cs, gates, num_threads, active=None):
    """``_reference_gated.lstm_forward_kernel``'s contract, on at most ``num_threads`` numba threads."""
    T, N, H = hs.shape
    active = rows_per_step(active, T, N)
    h, c = _zeros(h0, (N, H), hs.dtype), _zeros(c0, (N, H), hs.dtype)
    kernel = _lstm_forward_parallel if _parallel(N, 2 * H, num_threads) else _lstm_forward_serial
    for t0, t1 in _chunks(T, N, H, 4):
        if t0 > 0:  # a chunk starts from the last state of the one before (C-contiguous copies)
            h, c = np.ascontiguousarray(hs[t0 - 1]), np.ascontiguousarray(cs[t0 - 1])
        kernel(xw[t0:t1], wh, h, c, hs[t0:t1], cs[t0:t1], gates[t0:t1], active[t0:t1])


def lstm_backward(dhs, gates, cs, c0, wh, dh_last, dc_last, da, dh0, dc0, num_threads, active=None):
    """``_reference_gated.lstm_backward_kernel``'s contract, on at most ``num_threads`` numba threads."""
    T, N, H = dhs.shape
    active = rows_per_step(active, T, N)
    c0 = _zeros(c0, (N, H), dhs.dtype)
    dh_last = _zeros(dh_last, (N, H), dhs.dtype)
    dc0[...] = _zeros(dc_last, (N, H), dhs.dtype)  # the carried dc, in place
    wh_t = np.ascontiguousarray(wh.T)
    kernel = _lstm_backward_parallel if _parallel(N, 2 * H, num_threads) else _lstm_backward_serial
    g = dh_last
    for t0, t1 in _chunks(T, N, H, 4, reverse=True):
        # This chunk's first cell state's predecessor, and its dh0 = the previous chunk's dh_last.
        c_before = c0 if t0 == 0 else np.ascontiguousarray(cs[t0 - 1])
        g_next = dh0 if t0 == 0 else np.empty_like(dh0)
        kernel(dhs[t0:t1], gates[t0:t1], cs[t0:t1], c_before, wh_t, g, dc0, da[t0:t1], g_next, active[t0:t1])
        g = g_next
    if T == 0:
        dh0[...] = dh_last


def gru_forward(xw, wh, bh, h0, hs, gates, num_threads, active=None):
    """``_reference_gated.gru_forward_kernel``'s contract, on at most ``num_threads`` numba threads."""
    T, N, H = hs.shape
    active = rows_per_step(active, T, N)
    h = _zeros(h0, (N, H), hs.dtype)
    bh = _zeros(bh, (3 * H,), hs.dtype)
    kernel = _gru_forward_parallel if _parallel(N, 2 * H, num_threads) else _gru_forward_serial
    for t0, t1 in _chunks(T, N, H, 3):
        if t0 > 0:
            h = np.ascontiguousarray(hs[t0 - 1])
        kernel(xw[t0:t1], wh, bh, h, hs[t0:t1], gates[t0:t1], active[t0:t1])


def gru_backward(dhs, hs, h0, gates, wh, dh_last, du, dv, dh0, num_threads, active=None):
    """``_reference_gated.gru_backward_kernel``'s contract, on at most ``num_threads`` numba threads."""
    T, N, H = dhs.shape
    active = rows_per_step(active, T, N)
    h0 = _zeros(h0, (N, H), dhs.dtype)
    carry = np.array(_zeros(dh_last, (N, H), dhs.dtype))  # dh_{t+1} * z_{t+1}, and dh_last at first
    wh_t = np.ascontiguousarray(wh.T)
    kernel = _gru_backward_parallel if _parallel(N, 2 * H, num_threads) else _gru_backward_serial
    for t0, t1 in _chunks(T, N, H, 3, reverse=True):
        h_before = h0 if t0 == 0 else np.ascontiguousarray(hs[t0 - 1])
        g_next = dh0 if t0 == 0 else np.empty_like(dh0)
        # A chunk's dh0 is the next one's carry: (dv_t0 @ Whᵀ + carry), the whole dh_{t0-1}
        # through the state; the recurrent product of the later chunk enters as its acc.
        kernel(dhs[t0:t1], hs[t0:t1], h_before, gates[t0:t1], wh_t, carry, du[t0:t1], dv[t0:t1], g_next, active[t0:t1])
        carry = g_next if t0 > 0 else carry
    if T == 0:
        dh0[...] = carry
