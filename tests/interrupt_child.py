"""Child process for tests/test_interrupt.py (not a test module): runs a long pyrnn_fast call
that the parent interrupts with a real SIGINT, then checks that the process is still usable.

    python interrupt_child.py <backend> <call> <rounds> [handler]

call: 'forward' (recurrence-bound rnn_forward), 'backward' (recurrence-bound rnn_backward),
'gemm' (rnn_forward dominated by its input GEMM X·Wx), or one of the limits' loops, which
take any number of iterations: 'fma_peak', 'microkernel_peak' (backend cpp, two threads).
The call's length T is calibrated so that the full call would take about TARGET_S seconds
here. handler: install a SIGINT handler that does not raise (it records when it ran and tries
to call the compiled backend).

Protocol: one JSON object per line on stdout:
    {"event": "start", "predicted_s": ...}             right before each long call
    {"event": "interrupted" | "completed", "t": ...}   after it (time.monotonic())
    {"event": "done", ...}                             checks after all rounds
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

import numpy as np

import pyrnn_fast as prf
from pyrnn_fast import _reference

TARGET_S = 12.0
MAX_STEPS = 12000  # caps memory: (MAX_STEPS, 1, 4096) float32 is 192 MB (4000 was too few steps for
# TARGET_S on Sapphire Rapids: calls of 2.7-5.3 s, and the tests skipped as too short to tell)


def emit(**kw):
    print(json.dumps(kw), flush=True)


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def thread_cpu_ticks() -> dict:
    ticks = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            ticks[int(tid)] = int(fields[11]) + int(fields[12])  # utime + stime
        except OSError:
            pass
    return ticks


def make_call(backend: str, call: str, dtype):
    """Returns (run(T), steps per calibration call, bytes per step)."""
    rng = np.random.default_rng(0)
    if call in ("fma_peak", "microkernel_peak"):
        from pyrnn_fast import _core

        loop = getattr(_core, call)
        per_step = {"fma_peak": 1 << 18, "microkernel_peak": 1 << 7}[call]  # iterations: ~2 ms
        return (lambda T: loop(dtype, T * per_step, 2)), 20, 0
    if call == "gemm":
        # x (N, T, D) broadcast along T: a real (N, D) matrix, so that the GEMM's cost
        # (T·N·D·H multiply-adds) comes without T·N·D of memory; each x[:, t] is contiguous.
        # (NumPy's BLAS is slower per call here: a smaller D keeps one block of its rows short.)
        N, D, H = 64, 16384 if backend == "cpp" else 4096, 512
        x_nd = rng.standard_normal((N, 1, D)).astype(dtype)
        Wx = (rng.standard_normal((D, H)) / np.sqrt(D)).astype(dtype)
        Wh = (rng.standard_normal((H, H)) * (0.9 / np.sqrt(H))).astype(dtype)
        return (lambda T: prf.rnn_forward(np.broadcast_to(x_nd, (N, T, D)), Wx, Wh, backend=backend)), 4, N * H * 4
    # each step streams the 64 MB of Wh: long steps, little memory
    N, D, H = 1, 16, 4096 // (np.dtype(dtype).itemsize // 4)
    Wx = (rng.standard_normal((D, H)) / np.sqrt(D)).astype(dtype)
    Wh = (rng.standard_normal((H, H)) * (0.9 / np.sqrt(H))).astype(dtype)
    x_full = rng.standard_normal((N, MAX_STEPS, D)).astype(dtype)
    if call == "forward":
        run = lambda T: prf.rnn_forward(x_full[:, :T], Wx, Wh, backend=backend)  # noqa: E731

        def residual(result, T):
            """Largest |h_t - tanh(x_t·Wx + h_{t-1}·Wh)| over every step, from the call's own h_{t-1}."""
            hs = result[0][0]
            prev = np.vstack([np.zeros((1, H)), hs[:-1]])
            return float(np.abs(np.tanh(x_full[0, :T] @ Wx + prev @ Wh) - hs).max())

        run.residual = residual
        return run, 20, N * H * 4
    # backward: hs and dhs broadcast along T (their values do not matter here)
    row = np.tanh(rng.standard_normal((N, 1, H))).astype(dtype)

    def run(T):
        seq = np.broadcast_to(row, (N, T, H))
        return prf.rnn_backward(seq, x_full[:, :T], Wx, Wh, seq, backend=backend)

    return run, 20, 2 * N * H * 4


def check_small_calls(backend: str) -> float:
    """Largest error of a forward + backward with 2-thread-sized steps, against the reference."""
    rng = np.random.default_rng(1)
    T, N, D, H = 12, 8, 16, 128
    x = rng.standard_normal((T, N, D))
    Wx = rng.standard_normal((D, H)) / 4
    Wh = rng.standard_normal((H, H)) * (0.9 / np.sqrt(H))
    b = rng.standard_normal(H) * 0.3
    h0 = rng.standard_normal((N, H)) * 0.5
    dhs = rng.standard_normal((T, N, H))
    hs, h_last = prf.rnn_forward(x, Wx, Wh, b, h0, time_major=True, backend=backend)
    ref_hs, _ = _reference.rnn_forward(x, Wx, Wh, b, h0)
    err = np.abs(hs - ref_hs).max() / np.abs(ref_hs).max()
    grads = prf.rnn_backward(dhs, x, Wx, Wh, hs, h0, time_major=True, backend=backend)
    for got, ref in zip(grads, _reference.rnn_backward(dhs, x, Wx, Wh, ref_hs, h0)):
        err = max(err, np.abs(got - ref).max() / np.abs(ref).max())
    return float(err)


def threads_busy_in_a_call() -> int:
    """How many threads of this process did real work during a ~0.5 s compiled forward call
    whose steps are big enough for 2 threads (an interrupted call must not keep its cores)."""
    rng = np.random.default_rng(2)
    N, D, H = 1, 16, 2048
    Wx = rng.standard_normal((D, H)).astype(np.float32) / 4
    Wh = (rng.standard_normal((H, H)) * (0.9 / np.sqrt(H))).astype(np.float32)
    x = rng.standard_normal((N, 50, D)).astype(np.float32)
    t0 = time.perf_counter()
    prf.rnn_forward(x, Wx, Wh, backend="cpp")
    T = int(min(20000, max(50, 50 * 0.5 / (time.perf_counter() - t0))))
    x = rng.standard_normal((N, T, D)).astype(np.float32)
    before = thread_cpu_ticks()
    prf.rnn_forward(x, Wx, Wh, backend="cpp")
    after = thread_cpu_ticks()
    delta = {tid: after[tid] - before.get(tid, 0) for tid in after}
    main = delta.get(threading_native_id(), 0)
    return sum(1 for d in delta.values() if d >= max(2, 0.25 * main))


def threading_native_id() -> int:
    import threading

    return threading.get_native_id()


def main():
    backend, call, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if backend == "numba":  # its own loops (steps this big otherwise run on the NumPy reference)
        from pyrnn_fast import _backends

        _backends.NUMBA_MAX_STEP_WORK = 1 << 62
    with_handler = len(sys.argv) > 4 and sys.argv[4] == "handler"
    dtype = np.float64 if with_handler else np.float32
    run, cal_steps, step_bytes = make_call(backend, call, dtype)

    run(cal_steps)  # warm-up (Numba compiles here)
    # Cost per step, without the call's fixed cost (e.g. Numba's transposed copy of Wh).
    short = min(_timed(run, cal_steps) for _ in range(2))
    long = min(_timed(run, 3 * cal_steps) for _ in range(2))
    per_step = max(long - short, 0.5 * long) / (2 * cal_steps)
    T = int(min(MAX_STEPS, max(cal_steps, TARGET_S / per_step)))

    # Python installs its KeyboardInterrupt handler only if SIGINT is not ignored at start-up,
    # and a process started in the background by a non-interactive shell (`pytest ... &` in a
    # script, nohup) inherits SIGINT ignored: then every call ran to completion after the
    # signal. Install it explicitly, so the test measures the kernels, not how pytest was run.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    handled = []
    if with_handler:

        def handler(signum, frame):
            handled.append(time.monotonic())
            try:  # calling the compiled backend from here must be refused, not corrupt the call
                prf.rnn_forward(np.ones((1, 2, 3)), np.ones((3, 4)), np.ones((4, 4)), backend="cpp")
                handled.append("nested call ran")
            except RuntimeError:
                handled.append("nested call refused")

        signal.signal(signal.SIGINT, handler)

    rss = []
    result = None
    for _ in range(rounds):
        emit(event="start", predicted_s=per_step * T, T=T)
        try:
            result = run(T)
            emit(event="completed", t=time.monotonic())
        except KeyboardInterrupt:
            emit(event="interrupted", t=time.monotonic())
        rss.append(rss_bytes())

    done = {
        "event": "done",
        "rss": rss,
        "step_bytes": step_bytes,
        "T": T,
        "small_call_error": check_small_calls(backend),
    }
    if with_handler:
        done["handled"] = handled
        if result is not None:
            done["residual"] = run.residual(result, T)
    if backend == "cpp" and prf.get_num_threads() >= 2 and len(os.sched_getaffinity(0)) >= 2:
        done["busy_threads"] = threads_busy_in_a_call()
    emit(**done)


def _timed(run, T) -> float:
    t0 = time.perf_counter()
    run(T)
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()
