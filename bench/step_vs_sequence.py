"""One streaming step against what the hardware allows, at N = 1: where a step's time goes
beyond the cost of a call. `layer.step(x_t)` sweeps the weights [Wx; Wh] as they are in memory
at every step (step.hpp), from L1, L2 or L3 by their size, as NumPy's one-liner does; a
sequence call packs Wh once and runs every step on the register-blocked micro-kernel
(recurrence.hpp). The read loop (`_core.read_peak`: each thread reads a buffer of its share of
the weights' bytes over and over, nothing else) gives the time a sweep of those bytes takes at
what the caches deliver: a step that read its weights that fast, plus a call, is the fastest
one can hope for, and NumPy's one-liner over that sum the most a step can be ahead of it here.

    python bench/step_vs_sequence.py                       # one thread, float32 and float64
    python bench/step_vs_sequence.py --threads 2 --sizes 256,512

Columns, µs (medians of interleaved rounds; the step and the one-liner timed as the main job's
step table times them): `step` a call of layer.step; `call` a step of H = 16, about the cost
of the call alone; `sequence` a forward of T steps of one sample (xs of shape (1, T, D): a
layer takes (N, T, D)) divided by T: its x·Wx is one GEMM for all the steps, so each step
reads Wh only, and the call's own costs are spread over T; `read` the step's weights' bytes at
the read loop's best rate (`limits.step_read_us`, as the main job's step table has it since the
forty-second session); `numpy` the one-liner tanh(x @ Wx + h @ Wh + b); then numpy / step, and
numpy / (call + read): about the most it could be (`limits.step_bound`). With --threads 2
the read is of the weights split between the threads where that reads them faster than one
thread, though a step splits them only where its rules give it two threads (from 160 KB of
weights a layer: step.hpp, and config.hpp's kMinStepCallBytesPerThread): for smaller weights,
which one thread steps, that bound is too low.
"""

import argparse
import time

import numpy as np

import pyrnn_fast as prf
from pyrnn_fast.benchmark import limits
from pyrnn_fast.benchmark.timing import SETTLE_SECONDS, time_interleaved

D, T = limits.STEP_INPUT, 2000


def row_us(dtype, H, repeat) -> dict:
    """µs of each column for one size: the step, the call and the one-liner as the main job's
    step table times them (limits._step_impls and _interleaved_us: blocks of 2,000 calls,
    interleaved, starting SETTLE_SECONDS after the layers are made), then the sequence."""
    impls = limits._step_impls(H, None, (), dtype)  # the main job's step, call and NumPy one-liner
    sequence = prf.RNN(D, H, dtype=dtype, seed=0)
    xs = np.random.default_rng(1).standard_normal((1, T, D)).astype(dtype)
    time.sleep(SETTLE_SECONDS)  # (the constructors' np.linalg.qr: limits.step_latency)
    times = {k: v["median"] for k, v in limits._interleaved_us(impls, rounds=repeat).items()}
    times["sequence"] = time_interleaved({"sequence": lambda: sequence(xs)}, repeat)["sequence"].median * 1e6 / T
    return {
        "step": times["prf.RNN.step"],
        "call": times[limits.CALL_NAME],
        "sequence": times["sequence"],
        "numpy": times["numpy one-liner"],
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--sizes", default="64,128,256,512", help="hidden sizes H")
    p.add_argument("--dtypes", default="float32,float64")
    p.add_argument("--repeat", type=int, default=7)
    args = p.parse_args(argv)
    prf.set_num_threads(args.threads)
    print(f"threads {args.threads}, N = 1, D = {D}, sequence T = {T}; µs, median of {args.repeat} rounds")
    head = ("dtype", "H", "KB", "step", "call", "sequence", "read", "numpy", "numpy/step", "most")
    widths = (8, 5, 6, 8, 6, 9, 7, 7, 11, 6)
    print(" ".join(f"{h:>{w}}" for h, w in zip(head, widths)))
    for name in args.dtypes.split(","):
        dtype = np.dtype(name)
        for H in (int(s) for s in args.sizes.split(",")):
            t = row_us(dtype, H, args.repeat)
            nbytes = limits.step_weight_bytes(H, dtype)
            t["read"] = limits.step_read_us(H, dtype, args.threads)
            cells = [f"{t[k]:.2f}" for k in ("step", "call", "sequence", "read", "numpy")]
            most, _ = limits.step_bound(t["numpy"], t["call"], t["read"], t["step"])
            cells += [f"{t['numpy'] / t['step']:.2f}x", f"{most:.2f}x"]
            row = [name, str(H), f"{nbytes / 1024:.0f}", *cells]
            print(" ".join(f"{c:>{w}}" for c, w in zip(row, widths)), flush=True)


if __name__ == "__main__":
    main()
