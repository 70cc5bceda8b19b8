"""One sample's sequence (the main job's `stream` shape) against what the hardware allows, per
cell: how near the forward is to the least time its bytes and FLOPs take, and so how far ahead
of the peers any implementation could be. At N = 1 each step's product h_{t-1} . Wh is a
vector times the recurrent weights (H x gates*H: 64 KB for the vanilla cell at float32
H = 128, 256 KB for the LSTM), which do not fit a core's L1 and are read again at every step
from L2 or L3, whoever computes it; the input projection x . Wx is one GEMM for all the steps.
So a step takes at least the read loop's time for Wh's bytes (`limits.read_bandwidth`: each
thread reads a buffer of that size over and over, nothing else) plus its share of the
projection at the micro-kernel's peak (`limits.microkernel_peak`), and on more threads than
one a cache line's round trip besides (the step's barrier: `limits.line_round_trip_ns`,
measured before each row); the activations are left out, so the bound is a little low.

    python bench/stream_bound.py                          # rnn, lstm, gru at H = 128, float32 and float64
    OMP_NUM_THREADS=1 taskset -c 0 python bench/stream_bound.py     # one thread for everyone
    python bench/stream_bound.py --cells lstm --sizes 64,128,256 --no-peers

Columns, µs per step (the forward's median time over T; ours and the peers in the same
interleaved rounds, `timing.time_interleaved`, the main job's inputs): `ours` the compiled
backend; `read`, `proj` and `sync` the least time's parts (`least_us`: on one thread or the
weights split between the threads, whichever is less; `sync` '-' on one); `of least` their sum
over ours, 100 % at that limit; with peers (float32 only: they run float32), each peer's time,
the fastest peer's time over ours (what the main job's `stream` row shows) and over the least
time: about the most any implementation could be ahead of it. Threads: OpenMP's setting (all
cores unless OMP_NUM_THREADS says otherwise) for pyrnn_fast and torch; XLA sizes its pool by
the CPUs the process may use (hence taskset).
"""

import argparse

import numpy as np

import pyrnn_fast as prf
from pyrnn_fast import _core
from pyrnn_fast.benchmark import gated, limits, runners, timing

T, _, D, _ = runners.SHAPES["stream"]
GATES = {"rnn": 1, "lstm": 4, "gru": 3}


def least_us(cell: str, H: int, dtype, threads: int, trip_us: float | None) -> tuple[float, float, float]:
    """(read, proj, sync): µs of the least a step can take, on one thread or split between
    ``threads`` (the weights' columns shared out), whichever is less. On t threads: each
    thread's share of the recurrent weights (gates*H*H values) at the read loop's rate for t
    threads reading that many bytes, its share of the step's input projection (2*D*gates*H
    FLOPs) at the micro-kernel's peak on t threads, and, for t > 1, ``trip_us``, a cache line's
    round trip between two CPUs (the step's barrier, after which each thread reads the others'
    part of h_{t-1}; 0 where it could not be measured: the bound is then looser)."""
    g = GATES[cell]
    nbytes = g * H * H * np.dtype(dtype).itemsize
    options = []
    for t in sorted({1, max(1, threads)}):
        read = nbytes / limits.read_bandwidth(-(-nbytes // t), t, dtype) / 1e3  # GB/s = 1e3 bytes/µs
        proj = 2.0 * D * g * H / (limits.microkernel_peak(dtype, t) * 1e3)  # GFLOP/s = 1e3 FLOP/µs
        sync = 0.0 if t == 1 else trip_us or 0.0
        options.append((read, proj, sync))
    return min(options, key=sum)


def ours(cell: str, shape, dtype):
    """The compiled backend's forward (never a fallback: "cpp" fails where it is not built)."""
    if cell == "rnn":
        return runners.pyrnn_runner("cpp", shape, "forward", dtype=dtype)
    return gated.pyrnn_runner("cpp", cell, shape, "forward", dtype=dtype)


def names(option: str, text: str, allowed) -> list:
    items = [s.strip() for s in text.split(",") if s.strip()]
    if not items:
        raise SystemExit(f"{option}: expected a comma-separated list, got {text!r}")
    for s in items:
        if s not in allowed:
            raise SystemExit(f"{option}: expected some of {list(allowed)}, got {s!r}")
    return items


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cells", default="rnn,lstm,gru", help="comma-separated from rnn, lstm, gru")
    ap.add_argument("--sizes", default=str(runners.SHAPES["stream"][3]), help="comma-separated hidden sizes H")
    ap.add_argument("--dtypes", default="float32,float64", help="comma-separated from float32, float64")
    ap.add_argument("--repeat", type=int, default=7, help="interleaved rounds per measurement")
    ap.add_argument("--no-peers", action="store_true", help="do not time torch / jax")
    args = ap.parse_args(argv)
    if args.repeat < 1:
        raise SystemExit(f"--repeat: expected an integer >= 1, got {args.repeat}")
    cells = names("--cells", args.cells, GATES)
    dtypes = names("--dtypes", args.dtypes, ("float32", "float64"))
    sizes_text = [s.strip() for s in args.sizes.split(",") if s.strip()]
    if not sizes_text or not all(s.isdigit() and int(s) >= 1 for s in sizes_text):
        raise SystemExit(f"--sizes: expected comma-separated integers >= 1, got {args.sizes!r}")
    sizes = [int(s) for s in sizes_text]
    peers = [] if args.no_peers else runners.available_peers()
    threads = prf.get_num_threads()
    timed = ", ".join(peers) or "none"
    print(f"kernel ISA {_core.isa()}, {threads} thread(s); T = {T}, N = 1, D = {D}; peers: {timed}")
    print(f"µs per step, median of {args.repeat} interleaved rounds; of least = (read + proj + sync) / ours")
    head = ["cell", "dtype", "H", "Wh KB", "ours", "read", "proj", "sync", "of least", *peers]
    head += ["peer/ours", "peer/least"] if peers else []
    widths = [4, 7, 5, 6, 8, 7, 6, 6, 8, *[8] * len(peers), 9, 10][: len(head)]
    print(" ".join(f"{h:>{w}}" for h, w in zip(head, widths)))
    for cell in cells:
        for name in dtypes:
            dtype = np.dtype(name)
            for H in sizes:
                shape = (T, 1, D, H)
                fns = {"ours": ours(cell, shape, dtype)}
                timed_peers = peers if dtype == np.float32 else []
                fns.update({p: gated.make_runner(p, cell, shape, "forward") for p in timed_peers})
                trip_ns = limits.line_round_trip_ns() if threads > 1 else None
                t = {k: v.median * 1e6 / T for k, v in timing.time_interleaved(fns, repeat=args.repeat).items()}
                read, proj, sync = least_us(cell, H, dtype, threads, None if trip_ns is None else trip_ns / 1e3)
                least = read + proj + sync
                row = [cell, name, str(H), f"{GATES[cell] * H * H * dtype.itemsize / 1024:.0f}", f"{t['ours']:.3f}"]
                row += [f"{read:.3f}", f"{proj:.3f}", f"{sync:.3f}" if sync else "-", f"{100 * least / t['ours']:.0f}%"]
                if peers:
                    best = min((t[p] for p in timed_peers), default=None)
                    row += [f"{t[p]:.3f}" if p in t else "-" for p in peers]
                    row += ["-", "-"] if best is None else [f"{best / t['ours']:.2f}x", f"{best / least:.2f}x"]
                print(" ".join(f"{c:>{w}}" for c, w in zip(row, widths)), flush=True)


if __name__ == "__main__":
    main()
