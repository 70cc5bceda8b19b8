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
def _forward_rows(xw, wh, hprev, out, t, b, relu, acc):
    N, H = hprev.shape
    r0 = b * ROWS
    r1 = min(r0 + ROWS, N)
    _rows_times(hprev, r0, r1, wh, acc)
    for r in range(r1 - r0):
        for j in range(H):
            out[t, r0 + r, j] = _act(acc[r, j] + xw[t, r0 + r, j], relu)


@njit(cache=CACHE, nogil=True)
def _forward_serial(xw, wh, h0, out, relu):
    T, N, H = out.shape
    acc = np.empty((ROWS, H), dtype=out.dtype)
    for t in range(T):
        hprev = h0 if t == 0 else out[t - 1]
        for b in range((N + ROWS - 1) // ROWS):
            _forward_rows(xw, wh, hprev, out, t, b, relu, acc)


@njit(cache=CACHE, nogil=True, parallel=True)
def _forward_parallel(xw, wh, h0, out, relu):
    T, N, H = out.shape
    blocks = (N + ROWS - 1) // ROWS
    for t in range(T):
        hprev = h0 if t == 0 else out[t - 1]
        for b in prange(blocks):
            acc = np.empty((ROWS, H), dtype=out.dtype)
            _forward_rows(xw, wh, hprev, out, t, b, relu, acc)


@njit(cache=CACHE, nogil=True, inline="always")
def _backward_rows(dh, h, wh_t, dh_last, da, t, b, relu, acc):
    T, N, H = da.shape
    r0 = b * ROWS
    r1 = min(r0 + ROWS, N)
    if t == T - 1:
        for r in range(r1 - r0):
            acc[r] = dh_last[r0 + r]
    else:
        _rows_times(da[t + 1], r0, r1, wh_t, acc)
    for r in range(r1 - r0):
        for j in range(H):
            da[t, r0 + r, j] = (dh[t, r0 + r, j] + acc[r, j]) * _act_grad(h[t, r0 + r, j], relu)


@njit(cache=CACHE, nogil=True)
def _dh0(da, wh_t, dh_last, dh0):
    T, N, H = da.shape
    if T == 0:
        dh0[:] = dh_last
        return
    acc = np.empty((ROWS, H), dtype=da.dtype)
    for b in range((N + ROWS - 1) // ROWS):
        r0 = b * ROWS
        r1 = min(r0 + ROWS, N)
        _rows_times(da[0], r0, r1, wh_t, acc)
        dh0[r0:r1] = acc[: r1 - r0]


@njit(cache=CACHE, nogil=True)
def _backward_serial(dh, h, wh_t, dh_last, da, dh0, relu):
    T, N, H = da.shape
    acc = np.empty((ROWS, H), dtype=da.dtype)
    for t in range(T - 1, -1, -1):
        for b in range((N + ROWS - 1) // ROWS):
            _backward_rows(dh, h, wh_t, dh_last, da, t, b, relu, acc)
    _dh0(da, wh_t, dh_last, dh0)


@njit(cache=CACHE, nogil=True, parallel=True)
def _backward_parallel(dh, h, wh_t, dh_last, da, dh0, relu):
    T, N, H = da.shape
    blocks = (N + ROWS - 1) // ROWS
    for t in range(T - 1, -1, -1):
        for b in prange(blocks):
            acc = np.empty((ROWS, H), dtype=da.dtype)
            _backward_rows(dh, h, wh_t, dh_last, da, t, b, relu, acc)
    _dh0(da, wh_t, dh_last, dh0)


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


def forward(xw, wh, h0, out, activation, num_threads):
    """``_reference.forward``'s contract, on at most ``num_threads`` numba threads."""
    if h0 is None:
        h0 = np.zeros(out.shape[1:], out.dtype)
    T, N, H = out.shape
    kernel = _forward_parallel if _parallel(N, H, num_threads) else _forward_serial
    step = _chunk_steps(N, H)
    for t0 in range(0, T, step):
        # A chunk starts from the last state of the one before (copied: h0 stays C-contiguous,
        # one compiled specialisation).
        hprev = h0 if t0 == 0 else np.ascontiguousarray(out[t0 - 1])
        kernel(xw[t0 : t0 + step], wh, hprev, out[t0 : t0 + step], activation == "relu")


def backward(dh, h, wh, dh_last, da, dh0, activation, num_threads):
    """``_reference.backward``'s contract, on at most ``num_threads`` numba threads."""
    if dh_last is None:
        dh_last = np.zeros(dh0.shape, dh0.dtype)
    T, N, H = da.shape
    kernel = _backward_parallel if _parallel(N, H, num_threads) else _backward_serial
    wh_t = np.ascontiguousarray(wh.T)
    step = _chunk_steps(N, H)
    # Chunks from the last step back: the dh0 a chunk computes (da[t0] @ Whᵀ) is exactly the
    # dh_last of the chunk before it.
    g, t1 = dh_last, T
    while True:
        t0 = max(0, t1 - step)
        g_next = dh0 if t0 == 0 else np.empty_like(dh0)
        kernel(dh[t0:t1], h[t0:t1], wh_t, g, da[t0:t1], g_next, activation == "relu")
        if t0 == 0:
            return
        g, t1 = g_next, t0
