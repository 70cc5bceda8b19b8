"""Backward through time when the gradients vanish into subnormal numbers: the compiled backend
with its default flushing of subnormals and without it (``prf.set_flush_subnormals``), and
torch's nn.RNN / nn.LSTM / nn.GRU when installed, timed side by side in interleaved rounds.

    python bench/subnormals.py
    python bench/subnormals.py --T 1000 --N 32 --H 128

The task is the vanishing-gradient one (README, "Subnormal numbers"): one loss at the last step
of a long sequence, so that dh decays step by step towards the first one. Where it falls below
the smallest normal number (1.2e-38 in float32), every operation that meets it takes a
microcode assist on x86 unless the kernels flush it. The last column is how many of dx's
values the IEEE run (flushing off) left subnormal, which the flushing run made 0.
"""

import argparse

import numpy as np

import pyrnn_fast as prf
from pyrnn_fast.benchmark.timing import time_interleaved

try:
    import torch
except ImportError:
    torch = None


def problem(cell, dtype, T, N, H, rng):
    """The layer (a recurrent scale that makes gradients vanish), its input and dout."""
    layer = {"rnn": prf.RNN, "lstm": prf.LSTM, "gru": prf.GRU}[cell](H, H, dtype=dtype, seed=0)
    if cell == "rnn":  # prf.RNN's default scale keeps a gradient alive longer: shrink Wh
        layer.params["Wh_l0"] *= 0.3
    x = rng.standard_normal((N, T, H)).astype(dtype)
    out = layer(x)[0]
    dout = np.zeros_like(out)
    dout[:, -1] = 1
    return layer, x, dout


def torch_backward(layer, cell, x, dout):
    m = layer.to_torch()
    xt = torch.from_numpy(x).requires_grad_(True)
    g = torch.from_numpy(dout)

    def run():
        out = m(xt)[0]
        out.backward(g)

    return run


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--T", type=int, default=1000)
    p.add_argument("--N", type=int, default=32)
    p.add_argument("--H", type=int, default=128)
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()
    rng = np.random.default_rng(0)
    print(
        f"forward + backward, (T, N, D, H) = ({args.T}, {args.N}, {args.H}, {args.H}), {prf.isa()} kernels, "
        f"{prf.get_num_threads()} thread(s); ms, median of {args.repeat} interleaved rounds"
    )
    print(f"{'':14} {'flushing':>9} {'IEEE':>9} {'ratio':>6} {'torch':>9}   dx subnormal (IEEE)")
    for cell in ("rnn", "lstm", "gru"):
        for dtype in (np.float32, np.float64):
            layer, x, dout = problem(cell, dtype, args.T, args.N, args.H, rng)

            def ours(flush, layer=layer, x=x, dout=dout):
                def run():
                    prf.set_flush_subnormals(flush)
                    layer(x)
                    return layer.backward(dout)

                return run

            fns = {"flush": ours(True), "ieee": ours(False)}
            if torch is not None:
                fns["torch"] = torch_backward(layer, cell, x, dout)
            times = {k: v[0] * 1e3 for k, v in time_interleaved(fns, args.repeat).items()}
            dx = ours(False)()
            prf.set_flush_subnormals(True)
            tiny = np.finfo(dtype).tiny
            subnormal = np.mean((np.abs(dx) < tiny) & (dx != 0))
            peer = f"{times['torch']:9.1f}" if "torch" in times else f"{'-':>9}"
            print(
                f"{cell:>5} {np.dtype(dtype).name:>8} {times['flush']:9.1f} {times['ieee']:9.1f} "
                f"{times['ieee'] / times['flush']:5.1f}x {peer}   {subnormal:.0%}"
            )


if __name__ == "__main__":
    main()
