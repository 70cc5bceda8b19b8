"""The variable-length machinery of the layers: one direction of one layer, time-major, run in
segments of equal length, and the per-sample time reversal of a bidirectional layer's reverse
direction. Every recurrence is a call to ``rnn_forward`` / ``rnn_backward``.

Variable lengths: masking is not something ``rnn_forward`` does, so a batch with ``lengths``
is run in *segments* between consecutive distinct lengths. With distinct non-zero lengths
L_1 < L_2 < ... < L_k, segment j covers the steps [L_{j-1}, L_j) (L_0 = 0) and runs only the
samples with length >= L_j, starting from their current states. A sample therefore stops
exactly at its last valid step, its outputs past it stay zero, and no arithmetic is spent on
padding. Cost: k <= min(N, T) calls to ``rnn_forward`` per layer and direction (one call
without lengths, or when all lengths are equal), the same arithmetic as the valid steps
alone, plus a gather/scatter copy of the active samples' inputs and outputs per segment.
The backward pass runs the segments in reverse, carrying each sample's dh across them.

The reverse direction of a bidirectional layer reverses each sample's valid prefix
(x_rev[t, n] = x[len_n - 1 - t, n] for t < len_n) with an index gather, runs the forward
direction's code on it and un-reverses the outputs with the same gather (the permutation is
"""

from __future__ import annotations

import numpy as np

from .._api import rnn_backward, rnn_forward


def _segments(lengths, T):
    """[(t0, t1, sel)]: run steps [t0, t1) for the samples `sel` (None = all of them)."""
    if lengths is None:
        return [(0, T, None)] if T > 0 else []
    N = lengths.shape[0]
    segs, t0 = [], 0
    for L in np.unique(lengths[lengths > 0]):
        active = np.flatnonzero(lengths >= L)
        segs.append((t0, int(L), None if active.size == N else active))
        t0 = int(L)
    return segs


def _take(a, t0, t1, sel):
    return a[t0:t1] if sel is None else a[t0:t1, sel]


def _rows(h, sel):
    return h if sel is None else h[sel]


def _run_forward(x, Wx, Wh, b, h0, segs, act, backend):
    """One direction over time-major x (T, N, D) from h0 (N, H), by segments.
    Returns hs (T, N, H) (zero where a sample is past its length), h_n (N, H), and the
    state each segment started from (what its backward needs)."""
    T, N = x.shape[:2]
    H = Wh.shape[0]
    if len(segs) == 1 and segs[0][:2] == (0, T) and segs[0][2] is None:  # the common case: one call
        hs, h = rnn_forward(x, Wx, Wh, b, h0, activation=act, time_major=True, backend=backend)
        return hs, h, [h0]
    h = h0.copy()
    starts = []
    hs = np.zeros((T, N, H), h.dtype)
    for t0, t1, sel in segs:
        h_start = h.copy() if sel is None else h[sel]
        seg_hs, h_last = rnn_forward(
            _take(x, t0, t1, sel), Wx, Wh, b, h_start, activation=act, time_major=True, backend=backend
        )
        if sel is None:
            hs[t0:t1] = seg_hs
            h[...] = h_last
        else:
            hs[t0:t1, sel] = seg_hs
            h[sel] = h_last
        starts.append(h_start)
    return hs, h, starts


def _run_backward(dhs, x, Wx, Wh, hs, starts, dh_last, segs, act, backend):
    """Backward of ``_run_forward``: returns dx (T, N, D), dWx, dWh, db, dh0 (N, H)."""
    T, N, D = x.shape
    H = Wh.shape[0]
    dtype = hs.dtype
    if len(segs) == 1 and segs[0][:2] == (0, T) and segs[0][2] is None:
        g = rnn_backward(
            dhs, x, Wx, Wh, hs, starts[0], dh_last=dh_last, activation=act, time_major=True, backend=backend
        )
        return g.dx, g.dWx, g.dWh, g.db, g.dh0
    dx = np.zeros((T, N, D), dtype)
    dWx, dWh, db = np.zeros((D, H), dtype), np.zeros((H, H), dtype), np.zeros(H, dtype)
    dh = dh_last.copy()
    for (t0, t1, sel), h_start in reversed(list(zip(segs, starts))):
        g = rnn_backward(
            _take(dhs, t0, t1, sel),
            _take(x, t0, t1, sel),
            Wx,
            Wh,
            _take(hs, t0, t1, sel),
            h_start,
            dh_last=_rows(dh, sel),
            activation=act,
            time_major=True,
            backend=backend,
        )
        if sel is None:
            dx[t0:t1] = g.dx
            dh[...] = g.dh0
        else:
            dx[t0:t1, sel] = g.dx
            dh[sel] = g.dh0
        dWx += g.dWx
        dWh += g.dWh
        db += g.db
    return dx, dWx, dWh, db, dh


def _reverse_index(lengths, T, N):
    """rev (T, N): rev[t, n] = len_n - 1 - t for t < len_n, else t (an involution)."""
    t = np.arange(T)[:, None]
    L = np.full(N, T) if lengths is None else lengths
    return np.where(t < L[None, :], L[None, :] - 1 - t, t)


def _reverse(a, rev):
    """Each sample's valid prefix of the time-major a (T, N, ...) reversed in time."""
    if rev is None:  # no lengths: the whole sequence
        return np.ascontiguousarray(a[::-1])
    return a[rev, np.arange(a.shape[1])[None, :]]
