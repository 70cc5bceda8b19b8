"""The pool of large buffers each thread keeps (_orchestration._empty): a later call never
changes an array an earlier call returned while it is held (whatever holds it: the array, a
view, a workspace), a loop that drops its results reuses the same buffers, threads calling at
once never share one, and release_buffers() frees them. The pool serves arrays from 128 KiB
(those from 1 MiB apart); the tests lower that to 0 so that small problems exercise it."""

from __future__ import annotations

import inspect
import math
import sys
import threading

import numpy as np
import pytest

import pyrnn_fast as prf
from helpers import BACKEND_PARAMS, backend_id, make_problem, use_backend
from pyrnn_fast import _orchestration
from test_gated_api import gated_problem

CELLS = ("rnn", "lstm", "gru")


def problem(cell, T, N, D, H, seed):
    return make_problem(T, N, D, H, seed=seed) if cell == "rnn" else gated_problem(cell, T, N, D, H, seed=seed)


def forward_backward(cell, p, backend, workspace=True):
    """Every array a forward (and, with the workspace, its backward) returns."""
    if cell == "rnn":
        hs, h_last = prf.rnn_forward(p["x"], p["Wx"], p["Wh"], p["b"], p["h0"], time_major=True, backend=backend)
        g = prf.rnn_backward(p["dhs"], p["x"], p["Wx"], p["Wh"], hs, p["h0"], time_major=True, backend=backend)
        return [hs, h_last, *g]
    if cell == "lstm":
        out = prf.lstm_forward(
            p["x"], p["Wx"], p["Wh"], p["b"], p["h0"], p["c0"], time_major=True, workspace=workspace, backend=backend
        )
        if not workspace:
            return [out.hs, out.h_last, out.c_last]
        g = prf.lstm_backward(
            p["dhs"], p["x"], p["Wx"], p["Wh"], out.hs, out.workspace, p["h0"], p["c0"], time_major=True,
            backend=backend,
        )  # fmt: skip
        return [out.hs, out.h_last, out.c_last, out.workspace._gates, out.workspace._cs, *g]
    out = prf.gru_forward(
        p["x"], p["Wx"], p["Wh"], p["b"], p["bh"], p["h0"], time_major=True, workspace=workspace, backend=backend
    )
    if not workspace:
        return [out.hs, out.h_last]
    g = prf.gru_backward(
        p["dhs"], p["x"], p["Wx"], p["Wh"], out.hs, out.workspace, p["h0"], time_major=True, backend=backend
    )
    return [out.hs, out.h_last, out.workspace._gates, *g]


POOL_MIN_BYTES = _orchestration._POOL_MIN_BYTES  # the value the library runs with


def kept_buffers():
    """Every buffer the calling thread's pool keeps: the large arrays' then the smaller ones'."""
    return _orchestration._buffers(True) + _orchestration._buffers(False)


@pytest.fixture(autouse=True)
def pool_every_array(monkeypatch):
    monkeypatch.setattr(_orchestration, "_POOL_MIN_BYTES", 0)
    prf.release_buffers()
    yield
    prf.release_buffers()


@pytest.mark.parametrize("backend_param", BACKEND_PARAMS, ids=backend_id)
@pytest.mark.parametrize("cell", CELLS)
def test_later_calls_leave_earlier_results_alone(backend_param, cell):
    with use_backend(backend_param) as backend:
        p = problem(cell, 7, 5, 4, 6, seed=0)
        first = forward_backward(cell, p, backend)
        snapshot = [a.copy() for a in first]
        # Later calls of every kind in this thread, the same shape, then larger (the buffers grow)
        # and smaller ones, with and without a workspace.
        for i, shape in enumerate([(7, 5, 4, 6), (9, 8, 4, 11), (3, 2, 4, 5)]):
            q = problem(cell, *shape, seed=i + 1)
            forward_backward(cell, q, backend, workspace=False)
            forward_backward(cell, q, backend)
        assert kept_buffers(), "the calls kept no buffer: nothing of this test ran"
        for a, before in zip(first, snapshot):
            assert np.array_equal(a, before)
        # The earlier forward's results still give the earlier backward's gradients.
        again = forward_backward(cell, p, backend)
        for a, b in zip(again, snapshot):
            assert np.array_equal(a, b)


@pytest.mark.parametrize("cell", CELLS)
def test_threads_calling_at_once_keep_their_own_buffers(cell):
    # The compiled kernels run without the GIL, so calls from several threads overlap and every
    # one of them must see only its own arrays. (A pool shared by the threads would pass this
    # too: a call's arrays are referenced while it runs. Per-thread pools close the window
    # between one thread's check of a buffer and the view that holds it, too short to test.)
    problems = [problem(cell, 40, 8, 16, 48, seed=s) for s in range(4)]
    expected = [forward_backward(cell, p, None) + forward_backward(cell, p, None, workspace=False) for p in problems]
    failures = []
    start = threading.Barrier(len(problems))

    def run(i):
        start.wait()
        for _ in range(15):
            got = forward_backward(cell, problems[i], None) + forward_backward(cell, problems[i], None, workspace=False)
            if not all(np.array_equal(a, b) for a, b in zip(got, expected[i])):
                failures.append(i)
                return

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(problems))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures


def test_release_buffers_frees_what_the_thread_keeps():
    p = problem("gru", 6, 4, 3, 5, seed=0)
    forward_backward("gru", p, None)
    held = sum(b.nbytes for b in kept_buffers())
    # The GRU's backward keeps du and dv (T, N, 3H), its forward the input projection like them.
    assert held >= 3 * 6 * 4 * 15 * 8
    assert prf.release_buffers() == held
    assert kept_buffers() == [] and prf.release_buffers() == 0
    # Another thread's buffers are its own: releasing them leaves this thread's alone.
    forward_backward("gru", p, None)
    mine = sum(b.nbytes for b in kept_buffers())
    released = []
    t = threading.Thread(target=lambda: released.append((forward_backward("gru", p, None), prf.release_buffers())))
    t.start()
    t.join()
    assert released[0][1] == mine  # the same calls kept as much in the other thread
    assert sum(b.nbytes for b in kept_buffers()) == mine


def test_a_re_entering_call_gets_its_own_array(monkeypatch):
    # Code run in the middle of _empty on the same thread (here a trace function, standing in
    # for a signal handler or a finaliser of the garbage collector) that allocates through the
    # pool must not be handed the buffer the outer call is about to take.
    _orchestration._empty((1000,), np.float64)  # one unused buffer of 8000 bytes in the pool
    inner = []
    # Just before the outer call takes the buffer it chose: the latest moment to interfere.
    lines, first = inspect.getsourcelines(_orchestration._empty)
    take = first + next(i for i, line in enumerate(lines) if "pool.take(" in line)

    def tracer(frame, event, arg):
        if frame.f_code is _orchestration._empty.__code__ and event == "line" and frame.f_lineno == take:
            if not inner:
                inner.append(_orchestration._empty((1000,), np.float64))
        return tracer

    sys.settrace(tracer)
    try:
        outer = _orchestration._empty((1000,), np.float64)
    finally:
        sys.settrace(None)
    assert inner and not np.shares_memory(inner[0], outer)


def test_an_interrupt_inside_the_pool_leaves_it_working():
    """A Ctrl-C (any exception) between the two updates of a hand-out: the pool goes on serving
    (a second list of numbers beside the buffers' had then been one short, and every request
    that reused the last buffer raised IndexError)."""
    lines, first = inspect.getsourcelines(_orchestration._BufferSet.hand_out)
    second = first + len(lines) - 1  # its last statement: one update done, one to do

    def tracer(frame, event, arg):
        if frame.f_code is _orchestration._BufferSet.hand_out.__code__ and event == "line" and frame.f_lineno == second:
            raise KeyboardInterrupt
        return tracer

    _orchestration._empty((1000,), np.float64)
    sys.settrace(tracer)
    try:
        with pytest.raises(KeyboardInterrupt):
            _orchestration._empty((3000,), np.float64)
    finally:
        sys.settrace(None)
    for size in (1000, 3000, 1000, 5000):
        a = _orchestration._empty((size,), np.float64)
        assert a.shape == (size,) and a.base is not None


def test_pool_arrays_start_on_a_cache_line():
    """Kernel threads write their own columns of every row: a row starting inside a cache line
    would have two cores write the line at their boundary."""
    arrays = [_orchestration._empty(shape, dtype) for shape, dtype in [((7, 3, 5), np.float32), ((999,), np.float64)]]
    for _ in range(3):  # reused buffers too
        arrays = [_orchestration._empty(a.shape, a.dtype) for a in arrays]
        assert all(a.base is not None and a.ctypes.data % 64 == 0 for a in arrays)
        assert all(any(a.base is b for b in kept_buffers()) for a in arrays)
        assert all(a.flags.c_contiguous and a.flags.writeable for a in arrays)


def test_sizes_least_recently_used_and_a_full_pool():
    n, cap = _orchestration._POOL_MAX_BUFFERS, _orchestration._POOL_MAX_IN_USE
    recent, A = _orchestration._POOL_RECENT_REQUESTS, _orchestration._ALIGN

    def empty(size):  # float64 values
        return _orchestration._empty((size,), np.float64)

    held = [empty(1000)]  # 8000 bytes
    # A buffer serves arrays down to 1/1.25 of its size only: a held result pins at most that.
    del held[0]
    small = empty(700)  # 5600 bytes: 8000 is too big for it
    assert small.base.nbytes == 5600 + A and len(kept_buffers()) == 2
    del small
    # A working set of n + 4 arrays at once: the set grows past n while they are recent and
    # within 1.5 times the most bytes in use at once, and keeps them when they are unused.
    work = [empty(2000 + 100 * i) for i in range(n + 4)]
    assert len(kept_buffers()) == n + 6
    del work
    empty(4500)  # a new size: the unused buffers are recent, the set grows
    assert len(kept_buffers()) == n + 7
    # The 8000-byte buffer handed out again and again: past `recent` requests the others are
    # stale, and each request frees the least recently used one while the set holds more than n.
    for _ in range(recent + n + 10):
        empty(1000)
    sizes = [b.nbytes for b in kept_buffers()]
    assert len(sizes) == n and sizes[-1] == 8000 + A
    # A new size takes a stale buffer's place: the set stays at n.
    empty(9000)
    assert len(kept_buffers()) == n and kept_buffers()[-1].nbytes == 72000 + A
    # Bytes: a set whose most bytes in use at once were two small arrays does not grow past n
    # on new sizes asked for one at a time, recent as its buffers are.
    prf.release_buffers()
    pair = [empty(2000), empty(2100)]
    del pair
    for i in range(n + 5):
        empty(2200 + 10 * i)
    assert len(kept_buffers()) == n
    # Every buffer in use: the pool grows, to `cap` buffers; then arrays are NumPy's own, the
    # pool unchanged.
    keep = empty(1000)
    in_use = [empty(5000 + 100 * i) for i in range(cap - 1)]
    assert len(kept_buffers()) == cap
    assert len({id(a.base) for a in in_use} | {id(keep.base)}) == cap
    extra = empty(9999)
    assert extra.base is None and len(kept_buffers()) == cap
    # Unused again: with `cap` buffers, each new one takes an unused one's place, stale or not.
    del in_use
    for i in range(3):
        fresh = empty(20000 + 1000 * i)
        assert any(fresh.base is b for b in kept_buffers()) and len(kept_buffers()) == cap


class _CountingNumpy:
    """numpy for _orchestration, counting the arrays from _POOL_MIN_BYTES that _empty had to
    take from NumPy instead of the pool (`spilled`) and the new buffers it made (`new_buffers`,
    its only uint8 arrays)."""

    def __init__(self):
        self.spilled = self.new_buffers = 0

    def __getattr__(self, name):
        return getattr(np, name)

    def empty(self, shape, dtype=float):
        dtype = np.dtype(dtype)
        if dtype == np.uint8:
            self.new_buffers += 1
        elif math.prod(np.atleast_1d(shape)) * dtype.itemsize >= POOL_MIN_BYTES:
            self.spilled += 1
        return np.empty(shape, dtype)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("time_major", [False, True])
def test_a_deep_stack_fits_the_pool(cell, time_major, monkeypatch):
    """A stacked layer's call keeps ~5 arrays of each set per layer for its backward: at most 16
    buffers per set, a 3-layer GRU's (T, N, H) = (4, 128, 256) overflowed the smaller set, a
    4-layer LSTM's (16, 64, 256) the large one, and the rest came from NumPy at every call
    (402 and 1067 page faults per forward+backward). Then, with the set grown past 16 only while
    all its buffers were in use, the 4-layer LSTM (time-major, not stateful) still made 4 new
    buffers per call: a size it asked for while a few buffers of other sizes were unused took
    the place of one of them, which it asked for again later in the call (~370 page faults
    per call). Once the pool holds a call's buffers, the next call makes none."""
    monkeypatch.setattr(_orchestration, "_POOL_MIN_BYTES", POOL_MIN_BYTES)
    counting = _CountingNumpy()
    monkeypatch.setattr(_orchestration, "np", counting)
    make = {"rnn": prf.RNN, "lstm": prf.LSTM, "gru": prf.GRU}[cell]
    for L, T, N, stateful in ((3, 4, 128, True), (4, 16, 64, True), (4, 16, 64, False), (6, 16, 64, False)):
        prf.release_buffers()
        layer = make(64, 256, num_layers=L, stateful=stateful, time_major=time_major, seed=0)
        x = np.ones((T, N, 64) if time_major else (N, T, 64), np.float32)
        for call in range(3):
            if call == 2:  # the pool filled by the first two
                counting.spilled = counting.new_buffers = 0
            out, _ = layer(x)
            layer.backward(np.ones_like(out))
        assert (counting.spilled, counting.new_buffers) == (0, 0), (L, T, N, stateful)


@pytest.mark.parametrize("cell", CELLS)
def test_a_loop_that_drops_its_results_reuses_the_buffers(cell):
    p = problem(cell, 7, 5, 4, 6, seed=0)
    expected = [a.copy() for a in forward_backward(cell, p, None)]
    seen = None
    for _ in range(4):
        results = forward_backward(cell, p, None)
        for a, b in zip(results, expected):
            assert np.array_equal(a, b)
        bases = {id(a.base) for a in results if a.base is not None and a.base.dtype == np.uint8}
        kept = {id(b) for b in kept_buffers()}
        assert bases and bases <= kept, "results should come from the pool"
        del results, a, b  # (the loop's variables held the last result)
        # From the second iteration on, the same buffers serve the results: nothing new allocated.
        # (Which of them serves which array may change: the states are arrays of one size.)
        assert seen is None or kept == seen
        seen = kept


def test_held_results_are_never_reused_and_threshold(monkeypatch):
    # A view is enough to keep a buffer: the transposed view of a batch-major hs, a row.
    p = problem("lstm", 7, 5, 4, 6, seed=0)
    out = prf.lstm_forward(p["x"], p["Wx"], p["Wh"], p["b"], time_major=True)
    view, before = out.hs[2].T, out.hs[2].T.copy()
    ws = out.workspace
    gates_before = ws._gates.copy()
    del out
    q = problem("lstm", 7, 5, 4, 6, seed=1)
    for _ in range(3):
        prf.lstm_forward(q["x"], q["Wx"], q["Wh"], q["b"], time_major=True)
    assert np.array_equal(view, before) and np.array_equal(ws._gates, gates_before)
    # From _POOL_MIN_BYTES up only (128 KiB, glibc's mmap threshold: arrays it may map and hand
    # back to the OS at every free): smaller arrays are NumPy's own.
    assert POOL_MIN_BYTES == 128 << 10 and _orchestration._POOL_LARGE_BYTES == 1 << 20
    monkeypatch.setattr(_orchestration, "_POOL_MIN_BYTES", POOL_MIN_BYTES)
    prf.release_buffers()
    assert _orchestration._empty((127, 256), np.float32).base is None  # 130,048 bytes < 128 KiB
    mid = _orchestration._empty((128, 256), np.float32)
    big = _orchestration._empty((1024, 256), np.float32)
    assert _orchestration._buffers(False) == [mid.base] and mid.base.nbytes == (128 << 10) + _orchestration._ALIGN
    assert _orchestration._buffers(True) == [big.base] and big.base.nbytes == (1 << 20) + _orchestration._ALIGN
    assert big.flags.c_contiguous and mid.flags.c_contiguous


def test_smaller_arrays_never_evict_the_large_ones():
    """Arrays below _POOL_LARGE_BYTES (a call's states, short sequences) have a pool of their
    own: all of them in use, and more made, never push out an unused large buffer (whose
    re-allocation is what the pool exists to avoid)."""
    n = _orchestration._POOL_MAX_IN_USE
    large = _orchestration._empty((1 << 18,), np.float32)  # 1 MiB: the large arrays' pool
    large_buffer = id(large.base)  # (a reference to it would keep it in use)
    del large  # unused, kept
    held = [_orchestration._empty((1000 + i,), np.float64) for i in range(n)]  # all in use
    for i in range(n + 24):  # new sizes, each evicting an unused smaller buffer, or NumPy's own
        _orchestration._empty((5000 + 100 * i,), np.float64)
    assert [id(b) for b in _orchestration._buffers(True)] == [large_buffer]
    assert len(_orchestration._buffers(False)) == n and all(any(a.base is b for b in kept_buffers()) for a in held)
    again = _orchestration._empty((1 << 18,), np.float32)
    assert id(again.base) == large_buffer


def test_release_buffers_while_the_pool_picks_a_buffer():
    """release_buffers() from a signal handler or a finaliser can run while the same thread is
    inside _empty, between its choice of a buffer (an index into the pool's list) and its use:
    clearing that list made the call raise IndexError (found by a review)."""
    p = make_problem(T=40, N=64, D=16, H=128, dtype=np.float32, seed=3)
    x, Wx, Wh = p["x"], p["Wx"], p["Wh"]
    expected = prf.rnn_forward(x, Wx, Wh, backend="cpp")[0].copy()  # leaves an unused buffer in the pool
    src, first = inspect.getsourcelines(_orchestration._empty)
    line = first + next(i for i, s in enumerate(src) if s.strip().startswith("fits = ["))
    fired = []

    def tracer(frame, event, arg):
        if frame.f_code is not _orchestration._empty.__code__:
            return None

        def local(frame, event, arg):
            if event == "line" and frame.f_lineno == line and not fired:
                fired.append(prf.release_buffers())  # as a handler running there would
            return local

        return local

    sys.settrace(tracer)
    try:
        got = prf.rnn_forward(x, Wx, Wh, backend="cpp")[0]
    finally:
        sys.settrace(None)
    assert fired, "the pool's choice of a buffer was never reached: nothing was tested"
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("cell", CELLS)
def test_states_and_weight_gradients_come_from_the_pool(cell):
    """A call's (N, H) states (final states, initial-state gradients; a layer's carried state)
    and its weight gradients come from the pool too: from 128 KiB (a step of many samples, a
    short call of a wide layer) glibc had mapped them afresh, page by page, at most calls (48
    page faults per step of a vanilla layer at N = 512, H = 128; 208 per forward+backward of an
    LSTM layer of (T, N, D, H) = (4, 128, 64, 128))."""
    p = problem(cell, 3, 4, 5, 6, seed=0)
    results = forward_backward(cell, p, "numpy")
    states = [a for a in results if a.shape == (4, 6)]  # h_last (c_last), dh0 (dc0)
    assert len(states) == (4 if cell == "lstm" else 2)
    weight_grads = [a for a in results if a.shape in (p["Wx"].shape, p["Wh"].shape)]  # dWx, dWh
    assert len(weight_grads) == 2
    assert all(any(a.base is b for b in kept_buffers()) for a in states + weight_grads)
    # The layer with the pool to itself: here every array is pooled, the results above hold 10
    # of the 16 smaller buffers, and an LSTM layer's call would fill the rest.
    prf.release_buffers()
    layer = {"rnn": prf.RNN, "lstm": prf.LSTM, "gru": prf.GRU}[cell](5, 6, stateful=True, seed=0)
    layer(np.ones((4, 3, 5), np.float32))
    parts = layer.state if cell == "lstm" else (layer.state,)
    assert all(any(a.base is b for b in kept_buffers()) for a in parts)
