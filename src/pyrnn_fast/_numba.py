"""The Numba backend: the recurrence-kernel contract of ``_reference`` compiled with ``@njit``,
plus a last argument ``num_threads`` (the caller's setting, which ``_backends`` passes at each
call, so this module imports nothing from the package).

Imported only when the ``numba`` backend is first used, so ``import pyrnn_fast`` never pays for
importing numba. No BLAS call inside the steps: each step is written out as loops that LLVM
vectorises (``acc[r, j] += h[r, k] * W[k, j]`` over contiguous ``j``), with four rows of h
per pass over W so that every weight loaded is used four times. Steps big enough to be worth
it split those row blocks across threads (``prange``); small ones stay on one thread, since a
parallel region per step would cost more than the step.
"""

from __future__ import annotations

import contextlib
import math
import threading
import warnings

import numpy as np
from numba import get_num_threads, njit, prange, set_num_threads


def _cache_probe():
    return 0


# numba caches compiled kernels beside this file or in the user's cache directory; where neither
# is writable (a read-only install and home: a container, a service user) `cache=True` raised
# at import, and the backend could not be used at all (found by a review). Then the kernels
# are compiled in each process instead, and the user is told.
try:
    njit(cache=True)(_cache_probe)
    CACHE = True
except RuntimeError as e:
    CACHE = False
    warnings.warn(
        f"pyrnn_fast: numba cannot cache its compiled kernels here ({e}): the numba backend compiles "
        "them in each process (seconds at the first call of each); set NUMBA_CACHE_DIR to a writable "
        "directory to keep them",
        RuntimeWarning,
        stacklevel=1,  # this module's import, which the backend's first use makes
    )

ROWS = 4  # rows of h per pass over the weights
PARALLEL_MIN_STEP_WORK = 1 << 18  # multiply-adds per step below which one thread is used
# A compiled kernel checks no signals, so a long sequence runs as several calls of about this
# many multiply-adds each (~10 ms of work, or one step if a step is bigger): Ctrl-C then raises
# KeyboardInterrupt between two of them. Measured cost on `typical`: none beyond noise.
CHUNK_WORK = 1 << 25


@njit(cache=CACHE, nogil=True, inline="always")
def _act(v, relu):
    if relu:  # keeps NaN: relu(NaN) = NaN; +0.0 (v * 0 was -0.0, and NaN at -inf)
        return v if not v < 0 else 0.0
    return math.tanh(v)


@njit(cache=CACHE, nogil=True, inline="always")
def _act_grad(h, relu):
    if relu:
        if h > 0:
            return 1.0  # of h = inf too (h * 0 + 1 was NaN there)
        return h if h != h else 0.0  # NaN in, NaN out
    return 1 - h * h


@njit(cache=CACHE, nogil=True, inline="always")
def _rows_times(src, r0, r1, w, acc):
    """acc[0:r1-r0] = src[r0:r1] @ w."""
    H = w.shape[1]
    nr = r1 - r0
    acc[:nr] = 0
    for k in range(w.shape[0]):
        for r in range(nr):
            a = src[r0 + r, k]
            for j in range(H):
                acc[r, j] += a * w[k, j]


@njit(cache=CACHE, nogil=True, inline="always")
def _blocks(n):
    """The blocks of ROWS rows that cover rows [0, n)."""
    return (n + ROWS - 1) // ROWS


@njit(cache=CACHE, nogil=True, inline="always")
def _entering(active, t):
    """The first row at its last step at step t of a backward (all at the last step, else
    active[t+1]): from there it takes dh_last in place of the product with da[t+1]."""
    return 0 if t == active.shape[0] - 1 else active[t + 1]


@njit(cache=CACHE, nogil=True, inline="always")
def _forward_rows(xw, wh, hprev, out, t, b, relu, acc, n):
    H = hprev.shape[1]
    r0 = b * ROWS
    r1 = min(r0 + ROWS, n)
    _rows_times(hprev, r0, r1, wh, acc)
    for r in range(r1 - r0):
        for j in range(H):
            out[t, r0 + r, j] = _act(acc[r, j] + xw[t, r0 + r, j], relu)


@njit(cache=CACHE, nogil=True)
def _forward_serial(xw, wh, h0, out, relu, active):
    T, N, H = out.shape
    acc = np.empty((ROWS, H), dtype=out.dtype)
    for t in range(T):
        hprev = h0 if t == 0 else out[t - 1]
        for b in range(_blocks(active[t])):
            _forward_rows(xw, wh, hprev, out, t, b, relu, acc, active[t])


@njit(cache=CACHE, nogil=True, parallel=True)
def _forward_parallel(xw, wh, h0, out, relu, active):
    T, N, H = out.shape
    for t in range(T):
        hprev = h0 if t == 0 else out[t - 1]
        for b in prange(_blocks(active[t])):
            acc = np.empty((ROWS, H), dtype=out.dtype)
            _forward_rows(xw, wh, hprev, out, t, b, relu, acc, active[t])


@njit(cache=CACHE, nogil=True, inline="always")
def _recurrent_part(d, t, active, wh_t, d_last, b, acc, carried):
    """acc[0:r1-r0] = dL/dh_t's part from step t+1 for rows [r0, r1) of block b: d[t+1] @ wh_t
    (d: the pre-activations' gradient), or for a row at its last step d_last's row (when not
    `carried`: the LSTM and vanilla cells) or zeros (the GRU, which carries it apart)."""
    r0 = b * ROWS
    r1 = min(r0 + ROWS, active[t])
    enter = max(r0, min(r1, _entering(active, t)))
    if enter > r0:
        _rows_times(d[t + 1], r0, enter, wh_t, acc)
    for r in range(enter - r0, r1 - r0):
        if carried:
            acc[r] = 0
        else:
            acc[r] = d_last[r0 + r]
    return r0, r1


@njit(cache=CACHE, nogil=True, inline="always")
def _backward_rows(dh, h, wh_t, dh_last, da, t, b, relu, acc, active):
    H = da.shape[2]
    r0, r1 = _recurrent_part(da, t, active, wh_t, dh_last, b, acc, False)
    for r in range(r1 - r0):
        for j in range(H):
            da[t, r0 + r, j] = (dh[t, r0 + r, j] + acc[r, j]) * _act_grad(h[t, r0 + r, j], relu)


@njit(cache=CACHE, nogil=True)
def _state_grad(d0, wh_t, dh_last, dh0, n):
    """dh0 = d0 @ wh_t by row blocks for rows [0, n) (those with a step); dh_last for the rest."""
    H = dh0.shape[1]
    acc = np.empty((ROWS, H), dtype=dh0.dtype)
    for b in range(_blocks(n)):
        r0 = b * ROWS
        r1 = min(r0 + ROWS, n)
        _rows_times(d0[0], r0, r1, wh_t, acc)
        dh0[r0:r1] = acc[: r1 - r0]
    dh0[n:] = dh_last[n:]


@njit(cache=CACHE, nogil=True, inline="always")
def _first_rows(active):
    """The rows step 0 runs (none in a call over no steps)."""
    return active[0] if active.shape[0] > 0 else 0


@njit(cache=CACHE, nogil=True)
def _backward_serial(dh, h, wh_t, dh_last, da, dh0, relu, active):
    T, N, H = da.shape
    acc = np.empty((ROWS, H), dtype=da.dtype)
    for t in range(T - 1, -1, -1):
        for b in range(_blocks(active[t])):
            _backward_rows(dh, h, wh_t, dh_last, da, t, b, relu, acc, active)
    _state_grad(da[:1], wh_t, dh_last, dh0, _first_rows(active))


@njit(cache=CACHE, nogil=True, parallel=True)
def _backward_parallel(dh, h, wh_t, dh_last, da, dh0, relu, active):
    T, N, H = da.shape
    for t in range(T - 1, -1, -1):
        for b in prange(_blocks(active[t])):
            acc = np.empty((ROWS, H), dtype=da.dtype)
            _backward_rows(dh, h, wh_t, dh_last, da, t, b, relu, acc, active)
    _state_grad(da[:1], wh_t, dh_last, dh0, _first_rows(active))


# numba's thread count is a setting of the calling thread, which may be the user's own for their
# own parallel code: a kernel that changes it gives it back (restore_threads, after each call).
_caller = threading.local()


def _parallel(N, H, num_threads) -> bool:
    n = min(num_threads, (N + ROWS - 1) // ROWS)
    if n < 2 or N * H * H < PARALLEL_MIN_STEP_WORK:
        return False
    before = get_num_threads()
    if before != n:
        from numba import config

        if getattr(_caller, "threads", None) is None:
            _caller.threads = before
        set_num_threads(min(n, config.NUMBA_NUM_THREADS))
    return True


# numba's workqueue threading layer (NUMBA_THREADING_LAYER=workqueue, which the README suggests
# beside PyTorch, or numba's own fallback where neither TBB nor OpenMP loads) is not thread-safe:
# two Python threads launching parallel kernels at once abort the process. There, the kernels
# of concurrent calls take turns.
_launch_lock = threading.RLock()  # re-entrant: a signal handler may call us between two chunks
_threading_layer: str | None = None


def parallel_guard():
    """A context in which to run a kernel call (all its chunks, serial kernels too): the
    process-wide lock under the workqueue layer, and until numba has picked its layer (at its
    first parallel launch), nothing otherwise. The layer's name is read once it is picked and
    kept for the process."""
    global _threading_layer
    if _threading_layer is None:
        import numba

        try:
            _threading_layer = numba.threading_layer()
        except ValueError:  # no parallel kernel has run yet: numba has not picked its layer
            return _launch_lock
    return _launch_lock if _threading_layer == "workqueue" else contextlib.nullcontext()


def restore_threads():
    """Give the calling thread back the numba thread count it had before a kernel changed it."""
    n = getattr(_caller, "threads", None)
    if n is not None:
        _caller.threads = None
        set_num_threads(n)


def _chunk_steps(N, H) -> int:
    return max(1, CHUNK_WORK // max(1, N * H * H))


def rows_per_step(active, T, N):
    """The kernels' `active` as the compiled loops take it: (T,) int64, C-contiguous (all N
    for None), so that it is one compiled specialisation; checked as the compiled backend's
    binding checks it (the loops index rows by it, unchecked)."""
    if active is None:
        return np.full(T, N, np.int64)
    counts = np.ascontiguousarray(active, np.int64)
    if counts.shape != (T,) or (counts < 0).any() or (counts > N).any() or (np.diff(counts) > 0).any():
        raise ValueError(f"active: expected (T,) = ({T},) row counts in [0, N = {N}] that never grow, got {active!r}")
    return counts


def forward(xw, wh, h0, out, activation, num_threads, active=None):
    """``_reference.forward``'s contract, on at most ``num_threads`` numba threads."""
    if h0 is None:
        h0 = np.zeros(out.shape[1:], out.dtype)
    T, N, H = out.shape
    active = rows_per_step(active, T, N)
    kernel = _forward_parallel if _parallel(N, H, num_threads) else _forward_serial
    step = _chunk_steps(N, H)
    for t0 in range(0, T, step):
        # A chunk starts from the last state of the one before (copied: h0 stays C-contiguous,
        # one compiled specialisation).
        hprev = h0 if t0 == 0 else np.ascontiguousarray(out[t0 - 1])
        t1 = t0 + step
        kernel(xw[t0:t1], wh, hprev, out[t0:t1], activation == "relu", active[t0:t1])


def backward(dh, h, wh, dh_last, da, dh0, activation, num_threads, active=None):
    """``_reference.backward``'s contract, on at most ``num_threads`` numba threads."""
    if dh_last is None:
        dh_last = np.zeros(dh0.shape, dh0.dtype)
    T, N, H = da.shape
    active = rows_per_step(active, T, N)
    kernel = _backward_parallel if _parallel(N, H, num_threads) else _backward_serial
    wh_t = np.ascontiguousarray(wh.T)
    step = _chunk_steps(N, H)
    # Chunks from the last step back: the dh0 a chunk computes (da[t0] @ Whᵀ, and dh_last for
    # the rows it does not run) is exactly the dh_last of the chunk before it.
    g, t1 = dh_last, T
    while True:
        t0 = max(0, t1 - step)
        g_next = dh0 if t0 == 0 else np.empty_like(dh0)
        kernel(dh[t0:t1], h[t0:t1], wh_t, g, da[t0:t1], g_next, activation == "relu", active[t0:t1])
        if t0 == 0:
            return
        g, t1 = g_next, t0
