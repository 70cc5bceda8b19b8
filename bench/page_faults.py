"""Page faults and system time per call: what fresh arrays cost where the OS maps them page by
page (docs/DESIGN.md, "Memory"). Each case runs in a process of its own (glibc's thresholds
move with what a process freed before), in a loop that drops its results, as a training or
streaming loop does; `getrusage` counts the minor page faults and the system time of the
process over the timed calls. With the per-thread pool serving every array a call allocates
from 128 KiB, every case should read ~0 faults per call.

    python bench/page_faults.py
    python bench/page_faults.py --calls 500

Compare two versions by running this file in each (PYTHONPATH=<checkout>/src), in
alternating processes: the milliseconds drift with the machine, the fault counts do not.
"""

import argparse
import resource
import subprocess
import sys
import time

import numpy as np

import pyrnn_fast as prf
from pyrnn_fast.benchmark import gated, runners


def functional(cell, shape, op):
    if cell == "rnn":
        return runners.pyrnn_runner("cpp", shape, op)
    return gated.pyrnn_runner("cpp", cell, shape, op)


def layer_call(cell, T, N, D, H, num_layers=1):
    """A layer's forward and backward on (T, N, D, H), time-major."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, N, D)).astype(np.float32)
    layer = getattr(prf, cell)(D, H, num_layers=num_layers, seed=0, time_major=True)
    dout = np.ones((T, N, H), np.float32)

    def run():
        layer(x)
        layer.backward(dout)

    return run


def steps(cell, N, H, D=32):
    """`step()` of N samples (the sequence kernels' T = 1 path from N x weight bytes of 24 MB, vanilla)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, D)).astype(np.float32)
    layer = getattr(prf, cell)(D, H, seed=0, stateful=True)
    return lambda: layer.step(x)


CASES = {
    "rnn_forward + rnn_backward, stream (1000, 1, 32, 128)": lambda: functional("rnn", "stream", "fwd+bwd"),
    "lstm_forward + lstm_backward, stream": lambda: functional("lstm", "stream", "fwd+bwd"),
    "gru_forward + gru_backward, stream": lambda: functional("gru", "stream", "fwd+bwd"),
    "prf.RNN forward + backward (4, 128, 64, 128)": lambda: layer_call("RNN", 4, 128, 64, 128),
    "prf.LSTM forward + backward (4, 128, 64, 128)": lambda: layer_call("LSTM", 4, 128, 64, 128),
    "prf.GRU forward + backward (4, 128, 64, 128)": lambda: layer_call("GRU", 4, 128, 64, 128),
    # Stacks: a call keeps ~5 arrays per layer for backward (the pool keeps as many as recent calls used)
    "prf.GRU, 3 layers, forward + backward (4, 128, 64, 256)": lambda: layer_call("GRU", 4, 128, 64, 256, 3),
    "prf.LSTM, 4 layers, forward + backward (16, 64, 64, 256)": lambda: layer_call("LSTM", 16, 64, 64, 256, 4),
    "prf.RNN.step, N = 512, H = 256": lambda: steps("RNN", 512, 256),
    "prf.LSTM.step, N = 512, H = 128": lambda: steps("LSTM", 512, 128),
}


def measure(name, calls):
    run = CASES[name]()
    for _ in range(10):
        run()
    before, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for _ in range(calls):
        run()
    t1, after = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    faults = (after.ru_minflt - before.ru_minflt) / calls
    system = (after.ru_stime - before.ru_stime) / calls * 1e6
    print(f"{name:56} {(t1 - t0) / calls * 1e3:9.3f} {faults:12.1f} {system:15.0f}", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=200, help="timed calls per case (after 10 untimed)")
    p.add_argument("--case", help=argparse.SUPPRESS)  # one case, in this process
    args = p.parse_args()
    if args.case:
        return measure(args.case, args.calls)
    print(f"pyrnn_fast from {prf.__file__}")
    print(f"{'case':56} {'ms/call':>9} {'faults/call':>12} {'system µs/call':>15}", flush=True)
    for name in CASES:
        subprocess.run([sys.executable, __file__, "--calls", str(args.calls), "--case", name], check=True)


if __name__ == "__main__":
    main()
