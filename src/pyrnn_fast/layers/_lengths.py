"""The variable-length machinery of the layers: a batch given ``lengths`` runs with its samples
sorted longest first, so that the samples still running at any step are a prefix of the
batch, and every cell's functional forward / backward (``_rnn_forward_checked``, ...,
``_rnn_backward_steps``, ...) takes the rows active per step (``active``), which the kernels
run in one call (``_reference.rows_per_step``): the input projection and the weight
gradients stay one GEMM each over every row, and the recurrences spend no arithmetic on
padding. Plus the per-sample time reversal of a bidirectional layer's reverse direction.

The reverse direction reverses each sample's valid prefix (x_rev[t, n] = x[len_n - 1 - t, n]
for t < len_n) with an index gather, runs the forward direction's code on it and un-reverses
the outputs with the same gather (the permutation is its own inverse).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .._orchestration import _empty, _zero_padding


class ByLength(NamedTuple):
    """A batch of variable lengths sorted longest first: `order` the samples in that order and
    `inverse` its inverse permutation (both None when they already are), `lengths` sorted,
    `active` (T,) the samples running step t, `rev` the reverse direction's gather
    (``_reverse_index``) of the sorted batch."""

    order: np.ndarray | None
    inverse: np.ndarray | None
    lengths: np.ndarray
    active: np.ndarray
    rev: np.ndarray


def _by_length(lengths, T):
    """The sorting of a batch with ``lengths`` (None: all of length T, nothing to sort)."""
    if lengths is None or (lengths == T).all():
        return None
    order = inverse = None
    if (np.diff(lengths) > 0).any():  # not already longest first
        order = np.argsort(-lengths, kind="stable")
        inverse = np.argsort(order)
        lengths = lengths[order]
    active = (lengths[None, :] > np.arange(T)[:, None]).sum(axis=1)
    return ByLength(order, inverse, lengths, active, _reverse_index(lengths, T, lengths.shape[0]))


def _sorted(a, by, axis=1):
    """`a` with its samples (along `axis`) in `by`'s order: a new C-contiguous array of the
    buffer pool (`a` itself when nothing is sorted). Meant for a C-contiguous `a` (a gather
    from a transposed view is ~2x slower than the copy)."""
    if by is None or by.order is None:
        return a
    out = _empty(a.shape, a.dtype)  # the pool's: fresh MB-sized arrays cost their page faults
    # mode="clip": the indices are a permutation; "raise" takes into a buffer, then copies it.
    np.take(a, by.order, axis=axis, out=out, mode="clip")
    return out


def _unsorted(a, by, axis=1):
    """The inverse of ``_sorted``: `a` with its samples (along `axis`) back in the caller's
    order, a new C-contiguous array (`a` itself when nothing was sorted). A scatter, which
    costs what a plain copy does from a transposed view too (the output's layout). NumPy's own
    array, not the pool's: these are what a call returns, which the caller may keep."""
    if by is None or by.order is None:
        return a
    out = np.empty(a.shape, a.dtype)
    out[(slice(None),) * axis + (by.order,)] = a
    return out


def _sorted_input(x_tm, by):
    """x sorted, its padding zero: the weight GEMMs meet every row, and a zero gradient times
    a NaN or inf of the padding (a caller's filler) would be NaN. x_tm is the call's own copy
    (``_stack._time_major_input``), zeroed in place when already sorted."""
    if by is None:
        return x_tm
    x = _sorted(x_tm, by)
    _zero_padding(x, by.active)
    return x


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
