"""The compiled backend against the peers over a grid of shapes, not only the main job's four:
where is it least ahead? Each (cell, shape, op) times ours and every installed peer in
interleaved rounds (``time_interleaved``, as the main job does) and prints the peers' time over
ours; the last lines name the smallest ratio per cell.

    python bench/shape_scan.py                               # all cells, torch and jax if installed
    python bench/shape_scan.py --cells lstm --peers torch
    python bench/shape_scan.py --shapes 100x32x128x256,50x8x64x512   # T x N x D x H, time-major
    OMP_NUM_THREADS=1 taskset -c 0 python bench/shape_scan.py        # one thread for everyone

float32, time-major, the main job's inputs (``make_inputs``). Threads: OpenMP's setting (all
cores unless OMP_NUM_THREADS says otherwise) for pyrnn_fast and torch; XLA sizes its pool by
the CPUs the process may use (hence taskset).
"""

import argparse

import numpy as np

from pyrnn_fast import _core
from pyrnn_fast.benchmark import gated, runners, timing

# T = 50 steps; batches from one stream to many; H from L1-sized to L3-sized weights; plus a
# wide input (D > H) and a long, narrow sequence.
DEFAULT_SHAPES = [(50, N, 64, H) for N in (1, 8, 64, 256) for H in (64, 256, 512)] + [
    (20, 16, 512, 128),
    (200, 4, 16, 64),
]


def names(option: str, text: str) -> list:
    """The comma-separated items of an option, stripped; an empty list is an error."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise SystemExit(f"{option}: expected a comma-separated list, got {text!r}")
    return items


def parse_shapes(text: str) -> list:
    shapes = []
    for item in names("--shapes", text):
        parts = item.lower().split("x")
        if len(parts) != 4 or not all(p.isdigit() and int(p) > 0 for p in parts):
            raise SystemExit(f"--shapes: expected TxNxDxH with positive integers, got {item!r}")
        shapes.append(tuple(int(p) for p in parts))
    return shapes


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cells", default="rnn,lstm,gru", help="comma-separated from rnn, lstm, gru")
    ap.add_argument("--peers", default="torch,jax", help="comma-separated from torch, jax (those installed)")
    ap.add_argument("--shapes", default=None, help="comma-separated TxNxDxH (default: a grid of 14)")
    ap.add_argument("--repeat", type=int, default=3, help="interleaved rounds per measurement")
    args = ap.parse_args(argv)
    if args.repeat < 1:
        raise SystemExit(f"--repeat: expected an integer >= 1, got {args.repeat}")
    cells = names("--cells", args.cells)
    for c in cells:
        if c not in ("rnn", "lstm", "gru"):
            raise SystemExit(f"--cells: expected rnn, lstm or gru, got {c!r}")
    shapes = parse_shapes(args.shapes) if args.shapes is not None else DEFAULT_SHAPES
    requested = names("--peers", args.peers)
    for p in requested:
        if p not in runners.PEERS:
            raise SystemExit(f"--peers: expected some of {list(runners.PEERS)}, got {p!r}")
    peers = [p for p in requested if p in runners.available_peers()]
    if not peers:
        raise SystemExit(f"--peers: none of {requested} can be imported (pip install torch==2.13.0 jax)")
    print(f"kernel ISA {_core.isa()}, {timing.num_threads()} thread(s); peers: {', '.join(peers)}")
    print("each peer's time over ours (> 1: ours is faster), median of interleaved rounds; ours in ms")
    worst: dict = {}
    for cell in cells:
        for shape in shapes:
            cols = []
            for op in runners.OPS:
                fns = {"ours": gated.make_runner("cpp", cell, shape, op)}
                fns.update({p: gated.make_runner(p, cell, shape, op) for p in peers})
                t = timing.time_interleaved(fns, repeat=args.repeat, min_time=20e-3)
                ours = t["ours"].median
                ratios = {p: t[p].median / ours for p in peers}
                best = min(ratios.values())
                if best < worst.get(cell, (np.inf,))[0]:
                    worst[cell] = (best, shape, op)
                cols.append(f"{op} {ours * 1e3:8.3f} " + " ".join(f"{p} {r:5.2f}x" for p, r in ratios.items()))
            T, N, D, H = shape
            print(f"{cell:4} T={T:<4} N={N:<4} D={D:<4} H={H:<4} | " + " | ".join(cols), flush=True)
    for cell, (ratio, shape, op) in worst.items():
        print(f"{cell}: closest at {'x'.join(map(str, shape))} {op}: the fastest peer took {ratio:.2f}x our time")


if __name__ == "__main__":
    main()
