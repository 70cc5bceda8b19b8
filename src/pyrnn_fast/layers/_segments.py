"""The variable-length machinery of the layers: one direction of one layer, time-major, run in
segments of equal length, and the per-sample time reversal of a bidirectional layer's reverse
direction. Every recurrence is a call of the cell's functional forward / backward past their
checks (``_rnn_forward_checked``, ... and ``_rnn_backward_steps``, ..., with ``_weight_grads``),
passed in by the layer; the state is a tuple ((h,), or (h, c) for the LSTM).

Variable lengths: masking is not something the functional API does, so a batch with ``lengths``
is run in *segments* between consecutive distinct lengths. With distinct non-zero lengths
L_1 < L_2 < ... < L_k, segment j covers the steps [L_{j-1}, L_j) (L_0 = 0) and runs only the
samples with length >= L_j, starting from their current states. A sample therefore stops
exactly at its last valid step, its outputs past it stay zero, and no arithmetic is spent on
padding in the recurrences. Cost: k <= min(N, T) recurrence calls per layer and direction (one
call without lengths, or when all lengths are equal), their arithmetic that of the valid steps
alone, plus a gather/scatter copy of the active samples' inputs and outputs per segment (and
backward's weight-gradient GEMMs over every row, padding included, as without lengths).
The backward pass runs the segments' recurrences in reverse, carrying each sample's state
gradient across them, and then the weight gradients' GEMMs once over the whole run (zero
gradients past each sample's length), as without lengths.

The reverse direction of a bidirectional layer reverses each sample's valid prefix
(x_rev[t, n] = x[len_n - 1 - t, n] for t < len_n) with an index gather, runs the forward
direction's code on it and un-reverses the outputs with the same gather (the permutation is
its own inverse).
"""

from __future__ import annotations

import numpy as np

from .._orchestration import _empty


def _segments(lengths, T):
    """[(t0, t1, sel)]: run steps [t0, t1) for the samples `sel` (None = all of them). With no
    valid step at all (T = 0, or every length 0) one empty run [(0, 0, None)], so that the
    cell is still called once (its zero gradients and unchanged state come from it)."""
    if lengths is None or T == 0:
        return [(0, T, None)]
    N = lengths.shape[0]
    segs, t0 = [], 0
    for L in np.unique(lengths[lengths > 0]):
        active = np.flatnonzero(lengths >= L)
        segs.append((t0, int(L), None if active.size == N else active))
        t0 = int(L)
    return segs or [(0, 0, None)]


def _zeros(shape, dtype):
    """A zero array from the buffer pool (fresh zeroed pages cost more than the fill)."""
    a = _empty(shape, dtype)
    a.fill(0)
    return a


def _take(a, t0, t1, sel):
    return a[t0:t1] if sel is None else a[t0:t1, sel]


def _rows(sel):
    """The index of the samples `sel` (all of them when None) along an axis of samples."""
    return slice(None) if sel is None else sel


def _one_call(segs, T):
    # Not `segs[0] == (0, T, None)`: a segment's selection may be an index array, which
    # tuple equality would compare elementwise.
    return len(segs) == 1 and segs[0][0] == 0 and segs[0][1] == T and segs[0][2] is None


def _run_forward(run, x, state0, segs):
    """One direction over time-major x (T, N, D) from state0 (a tuple of (N, H) arrays: the
    cell's state, (h,) or (h, c)), by segments, where run(x, state) -> (hs, state_n, saved) is
    the cell's functional forward over one run. Returns hs (T, N, H) (zero where a sample is
    past its length), state_n, and per segment (its start state, saved): what backward needs."""
    T, N = x.shape[:2]
    if _one_call(segs, T):  # the common case: one call
        hs, state_n, saved = run(x, state0)
        return hs, state_n, [(state0, saved)]
    state = tuple(s.copy() for s in state0)
    hs = None
    record = []
    for t0, t1, sel in segs:
        start = tuple(s.copy() if sel is None else s[sel] for s in state)
        seg_hs, seg_state, saved = run(_take(x, t0, t1, sel), start)
        if hs is None:
            hs = np.zeros((T, N, seg_hs.shape[2]), seg_hs.dtype)
        for s, new in zip(state, seg_state):
            s[_rows(sel)] = new
        hs[t0:t1, _rows(sel)] = seg_hs
        record.append((start, saved))
    return hs, state, record


def _run_backward(grad_steps, weight_grads, dhs, x, hs, record, dstate_n, segs):
    """Backward of ``_run_forward``: grad_steps(dhs, x, hs, saved, state0, dstate_n) ->
    (BackwardSteps, dstate0) is the cell's functional backward over one run up to its weight
    gradients, weight_grads(steps) -> (dx, dW) the rest. Returns dx (T, N, D), dW, dstate0.
    In segments, each one's recurrence runs on its samples, and the weight gradients of all
    of them come from one weight_grads over the whole run, its gradients w.r.t. the
    pre-activations zero where a sample is past its length: the same GEMMs as without
    lengths, not a set of them per segment (each writing whole weight matrices, summed here:
    with a segment per distinct length, ~1 step each, they took most of the time)."""
    T, N, D = x.shape
    if _one_call(segs, T):
        ((state0, saved),) = record
        steps, dstate0 = grad_steps(dhs, x, hs, saved, state0, dstate_n)
        return (*weight_grads(steps), dstate0)
    pre = steps = None  # pre: (du, dv) of the whole run, zero on the padding
    dstate = tuple(d.copy() for d in dstate_n)
    # x with its padding zero: the weight GEMMs meet every row, and a zero gradient times a
    # NaN or inf of the padding (a caller's filler) would be NaN. (hs's padding is ours: zero.)
    x_valid = _zeros(x.shape, x.dtype)
    for (t0, t1, sel), (state0, saved) in reversed(list(zip(segs, record))):
        rows = _rows(sel)
        seg_x = _take(x, t0, t1, sel)
        steps, seg_dstate = grad_steps(
            _take(dhs, t0, t1, sel), seg_x, _take(hs, t0, t1, sel), saved, state0, tuple(d[rows] for d in dstate)
        )
        if pre is None:
            du = _zeros((T, N, steps.du_tm.shape[2]), hs.dtype)
            pre = (du, du if steps.dv_tm is steps.du_tm else _zeros(du.shape, hs.dtype))
        du, dv = pre
        x_valid[t0:t1, rows] = seg_x
        du[t0:t1, rows] = steps.du_tm
        if dv is not du:
            dv[t0:t1, rows] = steps.dv_tm
        for d, new in zip(dstate, seg_dstate):
            d[rows] = new
    # The run's initial h: the first segment's start, which has every sample with a valid step
    # (a sample of length 0 has no gradient to meet h0 with: its rows stay zero).
    (h0, *_), _ = record[0]
    first = segs[0][2]
    if first is not None:
        h0_all = np.zeros((N, h0.shape[1]), hs.dtype)
        h0_all[first] = h0
        h0 = h0_all
    assert steps is not None and pre is not None  # segments: at least one
    whole = steps._replace(x=x_valid, hs_tm=hs, h0=h0, du_tm=pre[0], dv_tm=pre[1], time_major=True)
    return (*weight_grads(whole), dstate)


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
