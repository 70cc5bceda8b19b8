"""Variable-length batches: a layer called with `lengths` (sorted longest first, each recurrence
one kernel call over the samples still running at each step) against the same padded batch
without lengths (which computes the padding too), and torch's packed sequences
(`pack_padded_sequence`, unsorted) when torch is installed, side by side in interleaved
rounds. Forward (no record / no_grad) and forward + backward of sum(out·dout). Milliseconds
per call; the lengths are drawn uniformly from [T/2, T] (so most are distinct).

    python bench/lengths.py
    python bench/lengths.py --batch 64 --steps 200 --hidden 512 --cells LSTM
"""

import argparse

import numpy as np

import pyrnn_fast as prf
from pyrnn_fast.benchmark.timing import time_interleaved

try:
    import torch
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
except ImportError:
    torch = None


def ours(layer, x, lengths, dout):
    def fwd():
        layer(x, lengths=lengths, record=False)

    def train():
        layer(x, lengths=lengths)
        layer.backward(dout)

    return fwd, train


def theirs(module, x, lengths, dout):
    xt, dt = torch.from_numpy(x), torch.from_numpy(dout)
    T = x.shape[1]

    def run(grad):
        with torch.set_grad_enabled(grad):
            inp = xt.requires_grad_(grad)
            if lengths is None:
                out, _ = module(inp)
            else:
                p = pack_padded_sequence(inp, torch.from_numpy(lengths), batch_first=True, enforce_sorted=False)
                out, _ = pad_packed_sequence(module(p)[0], batch_first=True, total_length=T)
            if grad:
                (out * dt).sum().backward()

    return (lambda: run(False)), (lambda: run(True))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=32, help="N")
    p.add_argument("--steps", type=int, default=100, help="T")
    p.add_argument("--input", type=int, default=128, help="D")
    p.add_argument("--hidden", type=int, default=256, help="H")
    p.add_argument("--cells", default="RNN,LSTM,GRU")
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()
    N, T, D, H = args.batch, args.steps, args.input, args.hidden
    if torch is not None:
        torch.set_num_threads(prf.get_num_threads())
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, T, D)).astype(np.float32)
    dout = rng.standard_normal((N, T, H)).astype(np.float32)
    lengths = rng.integers(T // 2, T + 1, size=N)
    print(
        f"ms per call, N = {N}, T = {T}, D = {D}, H = {H}, float32, {len(np.unique(lengths))} distinct lengths, "
        f"{prf.isa()} kernels, {prf.get_num_threads()} thread(s)"
    )
    impls = ["padded", "lengths"] + (["torch padded", "torch packed"] if torch is not None else [])
    print(f"{'':14}" + "".join(f"{c:>14}" for c in impls) + f"{'lengths/padded':>16}")
    for cell in args.cells.split(","):
        layer = getattr(prf, cell)(D, H, seed=0)
        fns = {}
        for name, lens in (("padded", None), ("lengths", lengths)):
            fns[("forward", name)], fns[("fwd+bwd", name)] = ours(layer, x, lens, dout)
        if torch is not None:
            module = getattr(torch.nn, cell)(D, H, batch_first=True)
            for name, lens in (("torch padded", None), ("torch packed", lengths)):
                fns[("forward", name)], fns[("fwd+bwd", name)] = theirs(module, x, lens, dout)
        t = {k: v[0] * 1e3 for k, v in time_interleaved(fns, args.repeat).items()}
        for op in ("forward", "fwd+bwd"):
            ratio = t[(op, "lengths")] / t[(op, "padded")]
            print(f"{cell:>4} {op:9}" + "".join(f"{t[(op, c)]:14.2f}" for c in impls) + f"{ratio:15.2f}x")


if __name__ == "__main__":
    main()
