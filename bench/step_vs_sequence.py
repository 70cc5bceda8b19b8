"""One streaming step against what the hardware allows, at N = 1: where a step's time goes
beyond the cost of a call. `layer.step(x_t)` sweeps the weights [Wx; Wh] as they are in memory
at every step (step.hpp), from L1, L2 or L3 by their size, as NumPy's one-liner does; a
sequence call packs Wh once and runs every step on the register-blocked micro-kernel
(recurrence.hpp). The read loop (`_core.read_peak`: each thread reads a buffer of its share of
the weights' size over and over, nothing else) gives the least time a sweep of those bytes
can take: a step can be no faster than a call plus that read, and NumPy's one-liner over that
is the most a step can be ahead of it on this machine.

    python bench/step_vs_sequence.py                       # one thread, float32 and float64
    python bench/step_vs_sequence.py --threads 2 --sizes 256,512

Columns, µs (median of interleaved rounds): `step` a call of layer.step; `call` a step of
H = 16, about the cost of the call alone; `sequence` a forward of T steps of one sample (xs of
shape (1, T, D): a layer takes (N, T, D)) divided by T: its x·Wx is one GEMM for all the steps,
so each step reads Wh only, and the call's own costs are spread over T; `read` the step's weights' bytes over
the read loop's rate for the bytes each thread reads; `numpy` the one-liner
tanh(x @ Wx + h @ Wh + b); then numpy / step, and numpy / (call + read): the most it could be.
With --threads 2 the read is of the weights split between the threads, as a step splits them
only where its rules give it two threads (from 160 KB of weights a layer: step.hpp,
config.hpp's kMinStepCallBytesPerThread): for smaller weights, which one thread steps, that bound is too low.
"""

import argparse

import numpy as np

import pyrnn_fast as prf
from pyrnn_fast.benchmark.limits import read_bandwidth
from pyrnn_fast.benchmark.timing import time_interleaved

D, T = 32, 2000


def cases(dtype, H):
    """The four callables for one size: the step, the sequence and the one-liner on the same
    weights; `call`, a step of its own layer of H = 16."""
    layer = prf.RNN(D, H, stateful=True, dtype=dtype, seed=0)
    tiny = prf.RNN(D, 16, stateful=True, dtype=dtype, seed=0)
    sequence = prf.RNN(D, H, dtype=dtype, seed=0)
    x = np.random.default_rng(0).standard_normal((1, D)).astype(dtype)
    xs = np.random.default_rng(1).standard_normal((1, T, D)).astype(dtype)
    Wx, Wh, b = (layer.params[k] for k in ("Wx_l0", "Wh_l0", "b_l0"))
    h = np.zeros((1, H), dtype)

    def numpy_step():
        nonlocal h
        h = np.tanh(x @ Wx + h @ Wh + b)

    return {
        "step": lambda: layer.step(x),
        "call": lambda: tiny.step(x),
        "sequence": lambda: sequence(xs),
        "numpy": numpy_step,
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--sizes", default="64,128,256,512", help="hidden sizes H")
    p.add_argument("--dtypes", default="float32,float64")
    p.add_argument("--repeat", type=int, default=9)
    args = p.parse_args(argv)
    prf.set_num_threads(args.threads)
    print(f"threads {args.threads}, N = 1, D = {D}, sequence T = {T}; µs, median of {args.repeat} rounds")
    head = ("dtype", "H", "KB", "step", "call", "sequence", "read", "numpy", "numpy/step", "most")
    widths = (8, 5, 6, 8, 6, 9, 7, 7, 11, 6)
    print(" ".join(f"{h:>{w}}" for h, w in zip(head, widths)))
    for name in args.dtypes.split(","):
        dtype = np.dtype(name)
        for H in (int(s) for s in args.sizes.split(",")):
            t = {k: v.median * 1e6 for k, v in time_interleaved(cases(dtype, H), repeat=args.repeat).items()}
            t["sequence"] /= T
            nbytes = (D + H) * H * dtype.itemsize
            t["read"] = nbytes / read_bandwidth(-(-nbytes // args.threads), args.threads, dtype) / 1e3
            cells = [f"{t[k]:.2f}" for k in ("step", "call", "sequence", "read", "numpy")]
            cells += [f"{t['numpy'] / t['step']:.2f}x", f"{t['numpy'] / (t['call'] + t['read']):.2f}x"]
            row = [name, str(H), f"{nbytes / 1024:.0f}", *cells]
            print(" ".join(f"{c:>{w}}" for c, w in zip(row, widths)), flush=True)


if __name__ == "__main__":
    main()
