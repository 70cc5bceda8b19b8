"""`layer.step` of many samples at once (many streams served together): the path it takes now
(the step kernel for a few samples, the sequence kernels with T = 1 from a batch times weight
size of STEP_KERNEL_MAX_BATCH_BYTES[gates]), the step kernel forced, and torch's cell when installed,
side by side in interleaved rounds.

    python bench/step_batch.py
    python bench/step_batch.py --shapes 512x32,512x512 --dtype float64
"""

import argparse

import numpy as np

import pyrnn_fast as prf
from pyrnn_fast.benchmark.timing import time_interleaved
from pyrnn_fast.layers import _base

try:
    import torch
except ImportError:
    torch = None


def forced_step_kernel(layer, x):
    def run():
        saved = _base.STEP_KERNEL_MIN_BATCH
        _base.STEP_KERNEL_MIN_BATCH = 1 << 62
        try:
            layer.step(x)
        finally:
            _base.STEP_KERNEL_MIN_BATCH = saved

    return run


def torch_cell(cell, D, H, x):
    module = getattr(torch.nn, f"{cell}Cell")(D, H).to(torch.float64 if x.dtype == np.float64 else torch.float32)
    xt = torch.from_numpy(x)

    def run():
        with torch.no_grad():
            module(xt)

    return run


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shapes", default="512x32,512x512,256x512", help="HxN pairs, comma-separated")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--input", type=int, default=32, help="D")
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()
    dtype, D = np.dtype(args.dtype), args.input
    if torch is not None:
        torch.set_num_threads(prf.get_num_threads())
    print(f"µs per step, D = {D}, {dtype.name}, {prf.isa()} kernels, {prf.get_num_threads()} thread(s)")
    print(f"{'':18} {'step()':>9} {'step kernel':>12} {'ratio':>6} {'torch cell':>11} {'ratio':>6}")
    rng = np.random.default_rng(0)
    for cell in ("LSTM", "GRU", "RNN"):
        for H, N in (tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")):
            x = rng.standard_normal((N, D)).astype(dtype)
            now, forced = (getattr(prf, cell)(D, H, seed=0, stateful=True, dtype=dtype) for _ in range(2))
            fns = {"now": lambda now=now, x=x: now.step(x), "kernel": forced_step_kernel(forced, x)}
            if torch is not None:
                fns["torch"] = torch_cell(cell, D, H, x)
            t = {k: v[0] * 1e6 for k, v in time_interleaved(fns, args.repeat).items()}
            path = "kernel" if now._step_kernel_suits(N) else "T = 1"
            peer = f"{t['torch']:11.0f} {t['torch'] / t['now']:5.2f}x" if "torch" in t else f"{'-':>11} {'':>6}"
            print(
                f"{cell:>4} H={H:<4} N={N:<4} {t['now']:9.0f} {t['kernel']:12.0f} {t['kernel'] / t['now']:5.2f}x "
                f"{peer}   ({path})"
            )


if __name__ == "__main__":
    main()
