"""Shared orchestration of the functional API and the layers: input validation and conversion
to the layouts the kernels take, and the forward call sequence (one GEMM, then the recurrence).

``_api`` (rnn_forward / rnn_backward) and ``_api_gated`` (the LSTM and GRU) run through
here; ``layers`` and ``dask`` take only the flag check, ``aligned_copy`` and
``release_buffers``. This module imports none of them, so the imports flow one way.
"""

from __future__ import annotations

import math
import sys
import threading
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import ArrayLike

_ACTIVATIONS = ("tanh", "relu")
_SUPPORTED_KINDS = "biuf"  # bool, signed, unsigned, float


_F32, _F64 = np.dtype(np.float32), np.dtype(np.float64)


def _check_activation(activation) -> str:
    if not isinstance(activation, str) or activation not in _ACTIVATIONS:
        raise ValueError(f"activation: expected one of {_ACTIVATIONS}, got {activation!r}")
    return activation


def _check_flag(name: str, value) -> bool:
    """A yes/no option: True or False (a NumPy bool too). Anything else is a TypeError naming
    it, where bool() would have read the string "False", or a stray array, as an answer."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}: expected a bool, got {type(value).__name__}")
    return bool(value)


def _reject_masked(name: str, a) -> None:
    """A TypeError for a numpy.ma.MaskedArray: np.asarray keeps its data and drops its mask, so
    that the values it hides would be computed with, silently (found by a review)."""
    if type(a) is not np.ndarray and isinstance(a, np.ma.MaskedArray):
        raise TypeError(
            f"{name}: a masked array's mask would be ignored; pass {name}.filled(value) "
            "(padded sequences of different lengths: the layers' lengths=)"
        )


def _as_arrays(required: tuple, **named) -> dict:
    """np.asarray each non-None input and reject what the library cannot compute with: a
    missing required argument, non-numeric objects, and dtypes other than real numbers."""
    out: dict[str, np.ndarray | None] = {}
    for name, a in named.items():
        if a is None:
            if name in required:
                raise TypeError(f"{name}: expected an array, got None")
            out[name] = None
            continue
        _reject_masked(name, a)
        try:
            arr = np.asarray(a)
        except Exception as e:  # ragged lists and the like
            raise TypeError(f"{name}: cannot be converted to a numeric array ({e})") from None
        if arr.dtype.kind not in _SUPPORTED_KINDS:
            what = type(a).__name__ if arr.dtype.kind == "O" and arr.ndim == 0 else f"dtype {arr.dtype}"
            raise TypeError(f"{name}: expected a real numeric array (float32 or float64), got {what}")
        out[name] = arr
    return out


def _result_dtype(arrays: dict) -> np.dtype:
    dtypes = {a.dtype for a in arrays.values() if a is not None}
    if len(dtypes) == 1 and (_F32 in dtypes or _F64 in dtypes):
        return dtypes.pop()  # all float32 or all float64: np.result_type's answer, 2 µs sooner
    dtype = np.result_type(*dtypes, np.float32)
    if dtype not in (np.float32, np.float64):
        names = [n for n, a in arrays.items() if a is not None and a.dtype.itemsize > 8]
        raise TypeError(f"{', '.join(names) or 'inputs'}: dtype {dtype} is not supported; use float32 or float64")
    return dtype


def _expect_shape(name: str, a: np.ndarray, expected: tuple, meaning: str) -> None:
    if a.shape != expected:
        raise ValueError(f"{name}: expected shape {meaning} = {expected}, got {a.shape}")


def _check_ndim(name: str, a: np.ndarray, ndim: int, meaning: str) -> None:
    if a.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D array {meaning}, got shape {a.shape}")


# The optional arguments' shapes, by what they are: a gated bias ("bias", (gates·H,)), a state
# ("state", (N, H)) or a sequence like hs ("seq"); with the meaning their errors print.
_OPTIONAL_SHAPES = (
    ("b", "bias"),
    ("bh", "bias"),
    ("h0", "state"),
    ("c0", "state"),
    ("dh_last", "state"),
    ("dc_last", "state"),
    ("hs", "seq"),
    ("dhs", "seq"),
)


def _validate(arrays: dict, time_major: bool, gates: int = 1) -> tuple[int, int, int, int]:
    """Check every shape against x, Wx and Wh; returns (T, N, D, H). A gated cell's weights
    have `gates` column blocks of H (LSTM 4, GRU 3): Wx (D, 4H), Wh (H, 4H), b and bh (4H,).
    (The messages are built only for a shape that fails: this runs at every call.)"""
    x, Wx, Wh = arrays["x"], arrays["Wx"], arrays["Wh"]
    gh = "H" if gates == 1 else f"{gates}H"
    if x.ndim != 3:
        _check_ndim("x", x, 3, "(T, N, D)" if time_major else "(N, T, D)")
    if Wx.ndim != 2 or Wh.ndim != 2:
        _check_ndim("Wx", Wx, 2, f"(D, {gh})")
        _check_ndim("Wh", Wh, 2, f"(H, {gh})")
    if time_major:
        T, N, D = x.shape
    else:
        N, T, D = x.shape
    if gates == 1:
        H = Wx.shape[1]
        _expect_shape("Wx", Wx, (D, H), "(D, H) with D = x.shape[2]")
        _expect_shape("Wh", Wh, (H, H), "(H, H) with H = Wx.shape[1]")
    else:
        H = Wh.shape[0]
        if Wh.shape != (H, gates * H) or Wx.shape != (D, gates * H):
            _expect_shape("Wh", Wh, (H, gates * H), f"(H, {gh}) with H = Wh.shape[0]")
            _expect_shape("Wx", Wx, (D, gates * H), f"(D, {gh}) with D = x.shape[2], H = Wh.shape[0]")
    expected = {"bias": (gates * H,), "state": (N, H), "seq": (T, N, H) if time_major else (N, T, H)}
    for name, kind in _OPTIONAL_SHAPES:
        a = arrays.get(name)
        if a is not None and a.shape != expected[kind]:
            meaning = {"bias": f"({gh},)", "state": "(N, H)", "seq": "(T, N, H)" if time_major else "(N, T, H)"}
            _expect_shape(name, a, expected[kind], meaning[kind])
    return T, N, D, H


def _prepare(named: dict, required: tuple, time_major, gates: int = 1) -> tuple[dict, np.dtype, tuple]:
    time_major = _check_flag("time_major", time_major)
    arrays = _as_arrays(required, **named)
    dtype = _result_dtype(arrays)
    dims = _validate(arrays, time_major, gates)
    return arrays, dtype, dims


def _forward_inputs(named: dict, time_major, gates: int = 1) -> tuple[dict, np.dtype, tuple]:
    """Validated inputs of a forward: (arrays, dtype, (T, N, D, H)), x as the kernels take it."""
    arrays, dtype, dims = _prepare(named, ("x", "Wx", "Wh"), time_major, gates)
    arrays["x"] = _kernel_seq(arrays["x"], dtype)
    return arrays, dtype, dims


def _tm(a: np.ndarray, time_major: bool) -> np.ndarray:
    """The time-major view of a sequence array in the caller's layout."""
    return a if time_major else a.transpose(1, 0, 2)


# --- the layouts the kernels take ------------------------------------------------------
# The compiled kernels address an array in place when bindings.cpp's checked() accepts it:
# native byte order, data and strides aligned to the element size, no negative stride (axes
# of length <= 1 are never stepped along) and, for all but the GEMMs' weight operand, a
# contiguous last axis. Zero strides (np.broadcast_to) are fine for inputs. Every other
# layout NumPy can make (negative or odd strides, unaligned, byte-swapped, a field of a
# packed structured array) is copied here, once, so that the binding's checks (kept as the
# out-of-bounds guard) never fail for a user's array. The Python backends take the same
# arrays, so every backend sees the same values.


def _addressable(a: np.ndarray, unit_last: bool) -> bool:
    if a.size == 0:  # copying is free, and NumPy calls any empty array aligned
        return False
    if not (a.dtype.isnative and a.flags.aligned):  # aligned: the data pointer (and strides)
        return False
    if a.flags.c_contiguous:  # the usual case, decided without a loop over the axes (hot path)
        return True
    if any(n > 1 and (s < 0 or s % a.itemsize) for n, s in zip(a.shape, a.strides)):
        return False
    return not unit_last or a.shape[-1] <= 1 or a.strides[-1] == a.itemsize


def _in_kernel_layout(a: ArrayLike, dtype: np.dtype, unit_last: bool = True) -> np.ndarray:
    """`a` as a `dtype` array the kernels can address: itself (or np.asarray's dtype
    conversion) when they can, else a C-contiguous copy."""
    a = np.asarray(a, dtype=dtype)
    return a if _addressable(a, unit_last) else np.array(a, order="C")


def _kernel_matrix(a: ArrayLike | None, dtype: np.dtype) -> np.ndarray | None:
    """A C-contiguous aligned native matrix (or None). Matrices are small next to the
    sequences; one layout for them (C) keeps Numba from compiling a variant per layout."""
    if a is None:
        return None
    a = np.asarray(a, dtype=dtype)
    return a if a.flags.c_contiguous and _addressable(a, True) else np.array(a, order="C")


def _kernel_seq(a: ArrayLike, dtype: np.dtype) -> np.ndarray:
    """A sequence array (T, N, ·) the kernels can address in place: strided views such as
    the transposed batch-major layout are kept, other layouts copied."""
    return _in_kernel_layout(a, dtype, unit_last=True)


def _kernel_weights(Wx: ArrayLike, dtype: np.dtype) -> np.ndarray:
    """Wx for the GEMMs, which take any non-negative strides (Fortran order stays a view)."""
    return _in_kernel_layout(Wx, dtype, unit_last=False)


def _input_projection(kernel, x_tm, Wx, b, out, dtype):
    """out = x_tm · Wx + b (time-major), the one big GEMM of every forward."""
    kernel.rows_gemm(x_tm, _kernel_weights(Wx, dtype), _kernel_matrix(b, dtype), out)


# --- large arrays ---------------------------------------------------------------------
# The sequences and states a call allocates from 128 KB come from a pool of buffers each thread
# keeps, reused once no array views them any more (the pool holds the one reference): fresh
# arrays of 100-250 MB are paged in and zeroed by the OS at every call, inside the kernels, and
# those of 128 KB to 1 MB, which glibc may map or hand back to the OS at each free, were paged
# in again at most calls that made them (why, measurements and the rules below:
# docs/DESIGN.md, "Memory"). Per thread, so that no other thread can take a buffer between the
# check and the view that holds it; a call re-entering on the same thread (a signal handler, a
# garbage-collector finaliser) gets np.empty arrays.
_pool = threading.local()
_POOL_MIN_BYTES = 128 << 10  # smaller arrays come from NumPy (glibc's heap keeps them: its mmap threshold)
# Arrays below this size are pooled apart from larger ones, each set with its own limit, so
# that a call's states and short sequences never evict its large buffers.
_POOL_LARGE_BYTES = 1 << 20
# Buffers per thread in each set: past _POOL_MAX_BUFFERS a new size takes the place of the least
# recently used unused buffer if that one is stale (not handed out in the set's last
# _POOL_RECENT_REQUESTS requests) or the set would hold more than _POOL_BYTES_OVER_PEAK times the
# most bytes it ever had in use at once; else the set grows, to at most _POOL_MAX_IN_USE (there a
# new buffer takes any unused one's place, and while all are in use arrays are NumPy's own). And
# any request drops the least recently used buffer of a set past 16 when it is unused and stale.
# So a set keeps what its recent calls used (a stacked layer's call holds ~5 arrays per layer
# for its backward, of a few sizes), or 16. A flat 16 had a 3-layer GRU at (T, N, H) =
# (4, 128, 256) and a 4-layer LSTM at (16, 64, 256) take the rest from NumPy at every call (402
# and 1067 page faults per forward+backward); growing only while every buffer was in use still
# let a size asked for while buffers of other sizes were unused evict one of those, asked for
# again later in the same call (4-5 new buffers per call, ~370 page faults for that LSTM); with
# staleness alone, sizes that change from call to call (variable-length batches) grew a set to 48
# buffers, 6.6x the bytes in use at once (a review's measurement).
_POOL_MAX_BUFFERS = 16
_POOL_MAX_IN_USE = 48  # (each _empty looks at every buffer of its set)
_POOL_RECENT_REQUESTS = 192
_POOL_BYTES_OVER_PEAK = 1.5
_POOL_SLACK = 1.25  # a buffer serves arrays down to 1/1.25 of its size: a held result pins at most that
_REFCOUNTS = hasattr(sys, "getrefcount")  # CPython; elsewhere every array is NumPy's own
# Pool arrays start on a cache line: each kernel thread writes its own columns of every row,
# and where a row's thread boundary fell inside a line, both cores wrote that line at every
# step (LSTM `typical` forward, 2 threads, Sapphire Rapids, 3 alternating processes, best ms:
# 12.5-13.1 -> 11.4-12.0; GRU 9.4 -> 8.9-9.1).
_ALIGN = 64


class _BufferSet:
    """One set of a thread's pool: its buffers, least recently handed out first; the number of
    the request that last handed out each, by id (a dict beside the list rather than a second
    list: an exception between two updates, a Ctrl-C, then leaves an entry too many, never two
    lists out of step); the count of requests; the most bytes in use at once."""

    __slots__ = ("buffers", "handed_out", "requests", "peak_in_use")

    def __init__(self):
        self.buffers: list = []
        self.handed_out: dict = {}
        self.requests = 0
        self.peak_in_use = 0

    def stale(self, i: int) -> bool:
        """Whether buffer i was not handed out in the last _POOL_RECENT_REQUESTS requests."""
        return self.requests - self.handed_out.get(id(self.buffers[i]), self.requests) > _POOL_RECENT_REQUESTS

    def take(self, i: int) -> np.ndarray:
        """Remove buffer i (and its number)."""
        buf = self.buffers.pop(i)
        self.handed_out.pop(id(buf), None)
        return buf

    def hand_out(self, buf: np.ndarray) -> None:
        """Put buf last, as handed out by this request."""
        self.handed_out[id(buf)] = self.requests
        self.buffers.append(buf)


def _buffer_set(large: bool) -> _BufferSet:
    if not hasattr(_pool, "large"):
        _pool.large, _pool.smaller = _BufferSet(), _BufferSet()
        _pool.busy = False
    return _pool.large if large else _pool.smaller


def _buffers(large: bool = True) -> list:
    """The calling thread's pool of buffers for arrays from _POOL_LARGE_BYTES (or, `large`
    False, for the smaller ones), least recently used first."""
    return _buffer_set(large).buffers


def _empty(shape: tuple, dtype) -> np.ndarray:
    """np.empty(shape, dtype) (C order), from the calling thread's pool from _POOL_MIN_BYTES (then
    starting on a cache line): the smallest unused buffer that holds it with at most
    _POOL_SLACK to spare, else a new one. NumPy's own array when it is small, when the pool
    holds _POOL_MAX_IN_USE buffers of its set all in use, in a call re-entering on this thread, and
    without sys.getrefcount."""
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize  # (not np.prod: 3 µs, a tenth of a `tiny` call)
    if nbytes < _POOL_MIN_BYTES or not _REFCOUNTS:
        return np.empty(shape, dtype)
    pool = _buffer_set(nbytes >= _POOL_LARGE_BYTES)
    if _pool.busy:
        return np.empty(shape, dtype)
    _pool.busy = True
    try:
        bufs = pool.buffers
        pool.requests += 1
        # Unused: 2 references, the list's and getrefcount's argument.
        sizes = [b.nbytes for b in bufs]
        unused = [i for i in range(len(bufs)) if sys.getrefcount(bufs[i]) == 2]
        held = sum(sizes)
        in_use = held - sum([sizes[i] for i in unused]) + nbytes
        if in_use > pool.peak_in_use:
            pool.peak_in_use = in_use
        fits = [i for i in unused if nbytes <= sizes[i] - _ALIGN <= _POOL_SLACK * nbytes]
        if fits:
            best = min(fits, key=sizes.__getitem__)
            buf = pool.take(best)
            # The least recently used buffer (index 0 still, best > 0), unused and stale, past 16: freed.
            if best > 0 and unused[0] == 0 and len(bufs) >= _POOL_MAX_BUFFERS and pool.stale(0):
                pool.take(0)
        else:
            full = len(bufs) >= _POOL_MAX_IN_USE
            if unused and len(bufs) >= _POOL_MAX_BUFFERS:
                over = held + nbytes > _POOL_BYTES_OVER_PEAK * pool.peak_in_use
                if full or over or pool.stale(unused[0]):
                    pool.take(unused[0])
                    full = False
            if full:
                return np.empty(shape, dtype)
            buf = np.empty(nbytes + _ALIGN, np.uint8)
        pool.hand_out(buf)  # most recently used last
        return _aligned_view(buf, shape, dtype, nbytes)
    finally:
        _pool.busy = False


def _copy(a: np.ndarray) -> np.ndarray:
    """A C-contiguous copy of ``a`` from _empty."""
    out = _empty(a.shape, a.dtype)
    np.copyto(out, a)
    return out


def _aligned_view(buf: np.ndarray, shape: tuple, dtype: np.dtype, nbytes: int) -> np.ndarray:
    """An array of shape and dtype on the first cache line of ``buf`` (nbytes + _ALIGN bytes)."""
    start = -buf.ctypes.data % _ALIGN
    return buf[start : start + nbytes].view(dtype).reshape(shape)


def aligned_copy(a: np.ndarray) -> np.ndarray:
    """A C-contiguous copy of ``a`` whose data starts on a cache line. The layers keep their
    parameters so: the streaming step reads the weights in place with 64-byte vector loads,
    and NumPy's buffers start 16 bytes into a line, so that every load straddled two lines
    (one layer, N = 1, D = 32, float32, the kernel alone, Sapphire Rapids: H = 256 4.2 -> 3.3
    µs, H = 512 14.1 -> 10.9 µs)."""
    out = _aligned_view(np.empty(a.nbytes + _ALIGN, np.uint8), a.shape, a.dtype, a.nbytes)
    out[...] = a
    return out


def release_buffers() -> int:
    """Free the calling thread's pool of large buffers (see the README, "Memory"): those no
    array uses any more are freed now, the others when their arrays go. Returns the bytes the
    pool held (in use or not). Later calls fill it again. Other threads' pools, and the
    compiled kernels' per-thread packed copies of the recurrent weights, are not touched."""
    held = sum(b.nbytes for large in (True, False) for b in _buffers(large))
    # New sets rather than clearing them: this may run while the same thread is inside _empty
    # (a signal handler, a garbage-collector finaliser), which holds indices into an old set; it
    # then finishes on that set, and what it hands out is the caller's alone.
    _pool.large, _pool.smaller = _BufferSet(), _BufferSet()
    return held


def _column_sums(kernel, a_tm: np.ndarray, dtype) -> np.ndarray:
    """Σ over every row of the time-major (T, N, P) a_tm, in float64, rounded once to `dtype`
    (the backend's column_sums)."""
    out = np.empty(a_tm.shape[2], dtype)
    kernel.column_sums(a_tm, out)
    return out


class BackwardSteps(NamedTuple):
    """A backward's recurrence done (``_rnn_backward_steps``, ``_lstm_backward_steps``,
    ``_gru_backward_steps``): what its weight gradients come from. du, dv: the gradients
    w.r.t. the input side (X·Wx + b) and the recurrent side (h_{t-1}·Wh + bh) of the
    pre-activations, time-major (the same array but for the GRU); x as the kernels take it, in
    the call's layout; hs_tm and h0 (or None) the states the products read."""

    kernel: Any
    x: np.ndarray
    Wx: np.ndarray
    hs_tm: np.ndarray
    h0: np.ndarray | None
    du_tm: np.ndarray
    dv_tm: np.ndarray
    time_major: bool


def _weight_grads(s: BackwardSteps) -> tuple:
    """The big GEMMs and sums of every backward, after its recurrence: dx = dU·Wxᵀ,
    dWx = Xᵀ·dU, dWh = Σ_t h_{t-1}ᵀ·dV_t (h_{-1} = h0), db = Σ dU, dbh = Σ dV. Returns
    (dx in x's layout, dWx, dWh, db, dbh). With rows active per step (``_reference.rows_per_step``), once
    over every row, the gradients zero where a sample is past its length."""
    kernel, dtype = s.kernel, s.du_tm.dtype
    dx = _empty(s.x.shape, dtype)
    kernel.rows_gemm(s.du_tm, s.Wx.T, None, _tm(dx, s.time_major))
    dWx = _empty((s.Wx.shape[0], s.du_tm.shape[2]), dtype)
    kernel.reduce_gemm(_tm(s.x, s.time_major), s.du_tm, dWx, False)
    dWh = _empty((s.hs_tm.shape[2], s.dv_tm.shape[2]), dtype)
    kernel.reduce_gemm(s.hs_tm[:-1], s.dv_tm[1:], dWh, False)
    if s.h0 is not None and s.hs_tm.shape[0] > 0:
        kernel.reduce_gemm(s.h0[None], s.dv_tm[:1], dWh, True)
    db = _column_sums(kernel, s.du_tm, dtype)
    dbh = db if s.dv_tm is s.du_tm else _column_sums(kernel, s.dv_tm, dtype)
    return dx, dWx, dWh, db, dbh


# --- rows active per step (a layer's variable lengths) -----------------------------------
# A call given `active` ((T,) ints, not increasing) runs step t over the rows [0, active[t])
# only: a batch of variable lengths with its samples sorted longest first (``layers._stack``).
# The kernels take `active` themselves (``_reference.rows_per_step``): one call, as without
# it; the input projection and backward's weight GEMMs stay one GEMM over every row. A row's
# outputs past its last step are zero, its final state is its last step's, and the gradient
# w.r.t. its final state enters at that step. (Before, the layers ran each range of steps of
# one row count as a kernel call of its own, twenty-second session; before that, a call per
# distinct length over gathered copies. docs/DESIGN.md, "Variable lengths".)


def _runs(active, t0: int, t1: int) -> list:
    """The steps [t0, t1) as maximal runs of one row count: [(s0, s1, active[s0])]."""
    cuts = [t0, *(np.flatnonzero(active[t0 + 1 : t1] != active[t0 : t1 - 1]) + t0 + 1).tolist(), t1]
    return [(s0, s1, int(active[s0])) for s0, s1 in zip(cuts[:-1], cuts[1:]) if s1 > s0]


def _ends(active, t0: int, t1: int, T: int) -> list:
    """Where the rows' last steps are among the steps [t0, t1) of a call over T steps:
    (s1, n, n_after) for each run of one row count that ends at step s1 - 1 (its rows [0, n),
    of which those in [n_after, n) end there: rows [0, n_after) run step s1 too)."""
    return [(s1, n, int(active[s1]) if s1 < T else 0) for _, s1, n in _runs(active, t0, t1) if n > 0]


def _final_rows(finals: tuple, seqs: tuple, t0: int, T: int, active) -> None:
    """The rows of each (N, H) array of `finals` whose last step is one of the steps of the
    matching time-major sequence of `seqs` (steps [t0, t0 + len) of a call over T steps), copied
    from that step: a row's final state, of a call over all steps or over some of them."""
    t1 = t0 + seqs[0].shape[0]
    if active is None:  # every row ends at step T - 1 (the common case, without _ends' lists)
        if t1 == T and t1 > t0:
            for final, seq in zip(finals, seqs):
                final[...] = seq[-1]
        return
    for s1, n, n_after in _ends(active, t0, t1, T):
        if s1 > t0:
            for final, seq in zip(finals, seqs):
                final[n_after:n] = seq[s1 - 1 - t0, n_after:n]


def _last_step_view(seq_tm: np.ndarray, active) -> np.ndarray | None:
    """seq_tm[-1], the final state of every row, where every row's last step is the sequence's
    last (`active` None, T > 0), else None. The layers take their final states so (they copy
    them into h_n, or into the carried state, anyway): a copy less per layer call, which at
    T = 1 is a step's (`step` of 256 samples, H = 256: a 256 KB copy in ~220 µs, ~10 %)."""
    return seq_tm[-1] if active is None and seq_tm.shape[0] > 0 else None


def _zero_padding(a_tm: np.ndarray, active) -> None:
    """a_tm[t, active[t]:] = 0 for every step t: the rows past their last step (none when
    `active` is None)."""
    if active is None:
        return
    for s0, s1, n in _runs(active, 0, a_tm.shape[0]):
        a_tm[s0:s1, n:] = 0


def _initial(a: np.ndarray | None, dtype, N: int, H: int) -> np.ndarray:
    """A copy of an optional (N, H) state (zeros for None)."""
    if a is not None:
        return _copy(a)
    out = _empty((N, H), dtype)
    out.fill(0)
    return out


def _final_state(a: np.ndarray | None, dtype, N: int, H: int, T: int, active) -> np.ndarray:
    """The (N, H) array a forward's final state goes into: a copy of the initial state `a`
    (zeros for None) where a row may have no step (T = 0, or rows `active` leaves out), else
    uninitialised (each row's last step fills it: a copy less in a step of many samples)."""
    if T == 0 or (active is not None and active[0] < N):
        return _initial(a, dtype, N, H)
    return _empty((N, H), dtype)


def _first_state_read(h0: np.ndarray | None, active) -> np.ndarray | None:
    """h0 as the weight gradient dWh (Σ h_{t-1}ᵀ·dV_t) reads it: the rows of samples with no
    step zeroed (their dV rows are zero, but a NaN or inf filler there times zero is NaN)."""
    if h0 is None or active is None or len(active) == 0 or active[0] >= h0.shape[0]:
        return h0
    h0 = h0.copy()
    h0[int(active[0]) :] = 0
    return h0
