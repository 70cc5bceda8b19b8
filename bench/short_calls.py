"""Layer calls on short chunks of one sample (a stateful layer fed a few frames at a time: audio,
sensors, generation through the layer call), ours with and without a record for backward,
torch's module carrying its state with and without autograd when installed, side by side in
interleaved rounds. Microseconds per call.

    python bench/short_calls.py
    python bench/short_calls.py --hidden 128,512 --steps 1,2,4,8 --layers 2
"""

import argparse

import numpy as np

import pyrnn_fast as prf
from pyrnn_fast.benchmark.timing import time_interleaved

try:
    import torch
except ImportError:
    torch = None


def ours(cell, D, H, layers, x):
    layer = getattr(prf, cell)(D, H, num_layers=layers, seed=0, stateful=True)
    return {"record": lambda: layer(x), "no record": lambda: layer(x, record=False)}


def torchs(cell, D, H, layers, x):
    module = getattr(torch.nn, cell)(D, H, num_layers=layers, batch_first=True)
    xt = torch.from_numpy(x)
    state = [None]

    def run(grad):
        with torch.set_grad_enabled(grad):
            out, s = module(xt, state[0])
        # carried like a stateful layer's (detached: truncated BPTT)
        state[0] = tuple(v.detach() for v in s) if isinstance(s, tuple) else s.detach()
        return out

    return {"torch grad": lambda: run(True), "torch no_grad": lambda: run(False)}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hidden", default="128,512", help="H values, comma-separated")
    p.add_argument("--steps", default="1,2,4", help="T values (steps per call), comma-separated")
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--input", type=int, default=32, help="D")
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()
    D, L = args.input, args.layers
    if torch is not None:
        torch.set_num_threads(prf.get_num_threads())
    print(f"µs per call, N = 1, D = {D}, {L} layer(s), float32, {prf.isa()} kernels, {prf.get_num_threads()} thread(s)")
    cols = ["record", "no record"] + (["torch grad", "torch no_grad"] if torch is not None else [])
    print(f"{'':18}" + "".join(f"{c:>14}" for c in cols))
    rng = np.random.default_rng(0)
    for cell in ("RNN", "LSTM", "GRU"):
        for H in (int(v) for v in args.hidden.split(",")):
            for T in (int(v) for v in args.steps.split(",")):
                x = rng.standard_normal((1, T, D)).astype(np.float32)
                fns = ours(cell, D, H, L, x)
                if torch is not None:
                    fns.update(torchs(cell, D, H, L, x))
                t = {k: v[0] * 1e6 for k, v in time_interleaved(fns, args.repeat).items()}
                print(f"{cell:>4} H={H:<4} T={T:<4}  " + "".join(f"{t[c]:14.1f}" for c in cols))


if __name__ == "__main__":
    main()
