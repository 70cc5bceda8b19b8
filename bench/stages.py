"""Where the time of forward+backward goes: each stage of the compiled backend, side by side
with the same product done by NumPy's BLAS (np.matmul), on one shape (default `large`), each
also as a fraction of the register-FMA peak of the instruction set in use, measured in the same
run beside the micro-kernel's own ceiling (the same FMAs plus the loads of a tile).

    python bench/stages.py                 # all cores
    python bench/stages.py --shape typical
    python bench/stages.py --dtype float64
    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python bench/stages.py

The recurrences are compared with T separate (N, H)·(H, H) matmuls (what a NumPy loop does,
without its tanh); the four big GEMMs with one matmul each. Figures are the best of
`--rounds` interleaved rounds, so both columns see the same machine load.
"""

import argparse
import time

import numpy as np

from pyrnn_fast import _core
from pyrnn_fast._backends import get_backend
from pyrnn_fast.benchmark import limits, runners, timing
from pyrnn_fast.benchmark.report import blas_threads_warning, numpy_blas_threads


def stages(shape, dtype):
    T, N, D, H = runners.dims(shape)
    x, Wx, Wh, b, _ = runners.make_inputs(shape, dtype=dtype)
    hs = np.empty((T, N, H), dtype)
    dA, dhs = np.empty_like(hs), np.ones_like(hs)
    dh0, dx = np.empty((N, H), dtype), np.empty_like(x)
    dWx, dWh = np.empty_like(Wx), np.empty_like(Wh)
    cpp = get_backend("cpp")
    x2, hs2, dA2 = x.reshape(-1, D), hs.reshape(-1, H), dA.reshape(-1, H)
    xw = np.empty_like(hs2)  # NumPy's output made once, as ours (hs) is: no page faults timed
    mm = np.matmul
    # name: (ours, numpy's, multiply-adds)
    return {
        "X·Wx + b": (
            lambda: cpp.rows_gemm(x, Wx, b, hs),
            lambda: np.add(mm(x2, Wx, out=xw), b, out=xw),
            T * N * D * H,
        ),
        # h0 = None: the kernel skips t = 0's product (K = 0), so T - 1 products on both sides
        "forward recurrence": (
            lambda: cpp.forward(hs, Wh, None, hs, "tanh"),
            lambda: [mm(hs[t], Wh) for t in range(T - 1)],
            (T - 1) * N * H * H,
        ),
        "backward recurrence": (
            lambda: cpp.backward(dhs, hs, Wh, None, dA, dh0, "tanh"),
            lambda: [mm(dA[t], Wh.T) for t in range(T)],
            T * N * H * H,
        ),
        "dx = dA·Wxᵀ": (lambda: cpp.rows_gemm(dA, Wx.T, None, dx), lambda: mm(dA2, Wx.T), T * N * D * H),
        "dWx = Xᵀ·dA": (lambda: cpp.reduce_gemm(x, dA, dWx, False), lambda: mm(x2.T, dA2), T * N * D * H),
        "dWh = Hᵀ·dA": (
            lambda: cpp.reduce_gemm(hs[:-1], dA[1:], dWh, False),
            lambda: mm(hs2[:-N].T, dA2[N:]),
            (T - 1) * N * H * H,
        ),
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", default="large", choices=sorted(runners.SHAPES))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    args = p.parse_args()
    shape = runners.SHAPES[args.shape]
    dtype = np.dtype(args.dtype)
    work = stages(shape, dtype)
    threads = _core.max_threads()
    limits.measure_limits(threads)  # the limits: best of the run's start and end, as the main job's
    best = {name: [float("inf"), float("inf")] for name in work}
    for _ in range(args.rounds):
        for name, (ours, theirs, _) in work.items():
            # Settle first, as the main job does: OpenBLAS's helpers spin ~0.1 s after NumPy's
            # product and would take a core from ours (README, "Threads and NumPy's BLAS").
            time.sleep(timing.SETTLE_SECONDS)
            best[name][0] = min(best[name][0], timing.best_seconds(ours))
            time.sleep(timing.SETTLE_SECONDS)
            best[name][1] = min(best[name][1], timing.best_seconds(theirs))
    peak = limits.fma_peak(dtype, threads)
    ceiling = limits.microkernel_peak(dtype, threads)
    blas = numpy_blas_threads()
    print(
        f"{args.shape} {shape}, {dtype.name}, {threads} OpenMP thread(s), NumPy's BLAS {blas or '?'} thread(s),"
        f" best of {args.rounds} rounds"
    )
    warning = blas_threads_warning(blas, threads)
    if warning:
        print(warning)
    print(f"register-FMA peak ({_core.isa()}, {threads} thread(s)): {peak:.1f} GFLOP/s ('peak': fraction of it)")
    print(f"micro-kernel on cache-resident operands (the GEMMs' ceiling): {ceiling:.1f} GFLOP/s = {ceiling / peak:.0%}")
    if ceiling > peak:
        print(f"WARNING: {dtype.name} {limits.BUSY_PEAK_WARNING}")
    print(
        f"{'stage':22s} {'pyrnn_fast ms':>14s} {'GFLOP/s':>8s} {'peak':>5s} {'np.matmul ms':>13s} {'GFLOP/s':>8s}"
        f" {'peak':>5s} {'ratio':>6s}"
    )
    total = [0.0, 0.0]
    flops = 0.0
    for name, (_, _, fma) in work.items():
        ours, theirs = best[name]
        total[0] += ours
        total[1] += theirs
        flops += 2 * fma
        g_ours, g_theirs = 2 * fma / ours / 1e9, 2 * fma / theirs / 1e9
        print(
            f"{name:22s} {ours * 1e3:14.2f} {g_ours:8.1f} {g_ours / peak:5.0%} {theirs * 1e3:13.2f} "
            f"{g_theirs:8.1f} {g_theirs / peak:5.0%} {theirs / ours:5.2f}x"
        )
    g_ours, g_theirs = flops / total[0] / 1e9, flops / total[1] / 1e9
    print(
        f"{'sum':22s} {total[0] * 1e3:14.2f} {g_ours:8.1f} {g_ours / peak:5.0%} {total[1] * 1e3:13.2f} "
        f"{g_theirs:8.1f} {g_theirs / peak:5.0%} {total[1] / total[0]:5.2f}x"
    )


if __name__ == "__main__":
    main()
