"""One sample's sequence (the main job's `stream` shape) against what the hardware allows, per
cell: how near the forward is to the least time its bytes and FLOPs take, and so how far ahead
of the peers any implementation could be. At N = 1 each step's product h_{t-1} . Wh is a
vector times the recurrent weights (H x gates*H: 64 KB for the vanilla cell at float32
H = 128, 256 KB for the LSTM), which do not fit a core's L1 and are read again at every step
from L2 or L3, whoever computes it; the input projection x . Wx is one GEMM for all the steps.
So a step takes at least the read loop's time for Wh's bytes (`limits.read_bandwidth`: each
thread reads a buffer of that size over and over, nothing else) plus its share of the
projection at the micro-kernel's peak (`limits.microkernel_peak`), and on more threads than
one a cache line's round trip besides (the step's barrier: `limits.line_round_trip_ns`);
the activations are left out, so the bound is a little low.

    python bench/stream_bound.py                          # rnn, lstm, gru at H = 128, float32 and float64
    OMP_NUM_THREADS=1 taskset -c 0 python bench/stream_bound.py     # one thread for everyone
    python bench/stream_bound.py --cells lstm --sizes 64,128,256 --no-peers

Columns, µs per step (the forward's median time over T; ours and the peers in the same
interleaved rounds, `timing.time_interleaved`, the main job's inputs): `ours` the compiled
backend; `least on`, `read`, `proj` and `sync` the least time's threads and parts
(`least_us`: on one thread or the weights split between the threads, whichever is less, which
need not be what the kernel does: it keeps a step of few weights on one thread; `sync` '-' on
one thread, 'n/a' where the round trip could not be measured; the smallest round trip of the
run, measured before and after each row); `of least` their sum over ours, 100 % at that
limit; with peers (float32 rows only: they run float32), each peer's time, the fastest peer's
time over ours (what the main job's `stream` row shows) and over the least time: the most any
implementation could be ahead of that peer, by this measure. Threads: OpenMP's setting (all
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


def wh_bytes(cell: str, H: int, dtype) -> int:
    """Bytes of the recurrent weights, H x gates*H."""
    return GATES[cell] * H * H * np.dtype(dtype).itemsize


def least_us(cell: str, H: int, dtype, threads: int, trip_us: float | None) -> tuple[int, float, float, float]:
    """(t, read, proj, sync): the least µs a step can take, on t = 1 thread or t = ``threads``
    (the weights' columns split between them), whichever is less. On t threads: the recurrent
    weights (``wh_bytes``) split between them at the read loop's rate (``weights_read_us``),
    the step's share of the input projection (2*D*gates*H FLOPs) at the micro-kernel's peak on
    t threads, and, for t > 1, ``trip_us``, a cache line's round trip between two CPUs (the
    step's barrier, after which each thread reads the others' part of h_{t-1}; None where it
    could not be measured, counted as 0: the bound is then looser). The kernel decides how many
    threads a step takes (too few weights stay on one: config.hpp, kMinStepWeightsPerThread)."""
    options = []
    for t in sorted({1, max(1, threads)}):
        read = limits.weights_read_us(wh_bytes(cell, H, dtype), dtype, t)
        proj = 2.0 * D * GATES[cell] * H / (limits.microkernel_peak(dtype, t) * 1e3)  # GFLOP/s = 1e3 FLOP/µs
        sync = 0.0 if t == 1 else trip_us or 0.0
        options.append((t, read, proj, sync))
    return min(options, key=lambda o: o[1] + o[2] + o[3])


def ours(cell: str, shape, dtype):
    """The compiled backend's forward (never a fallback: "cpp" fails where it is not built)."""
    if cell == "rnn":
        return runners.pyrnn_runner("cpp", shape, "forward", dtype=dtype)
    return gated.pyrnn_runner("cpp", cell, shape, "forward", dtype=dtype)


def names(option: str, text: str, allowed) -> list:
    """The comma-separated items of an option, each one of ``allowed``."""
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
    dtypes = [np.dtype(name) for name in names("--dtypes", args.dtypes, ("float32", "float64"))]
    sizes_text = [s.strip() for s in args.sizes.split(",") if s.strip()]
    if not sizes_text or not all(s.isdigit() and int(s) >= 1 for s in sizes_text):
        raise SystemExit(f"--sizes: expected comma-separated integers >= 1, got {args.sizes!r}")
    rows = [(cell, dtype, int(s)) for cell in cells for dtype in dtypes for s in sizes_text]
    peers = [] if args.no_peers else runners.available_peers()
    threads = prf.get_num_threads()
    trips: list = []  # line round trips (ns) before and after each row: the least takes the smallest

    def trip_us() -> float | None:
        ns = limits.line_round_trip_ns() if threads > 1 else None
        if ns is not None:
            trips.append(ns)
        return min(trips) / 1e3 if trips else None

    # The limits once before the rows and again after each (read_bandwidth and microkernel_peak
    # keep the best they see), never during a row's rounds (the read loop's threads would spin
    # through them)
    for cell, dtype, H in rows:
        try:
            least_us(cell, H, dtype, threads, None)
        except ValueError as e:  # (the read loop's limit: 1 GiB)
            raise SystemExit(f"--sizes: H = {H} is too large for the read loop: {e}") from None
    timed = ", ".join(peers) + " (float32 rows)" if peers else "none"
    print(f"kernel ISA {_core.isa()}, {threads} thread(s); T = {T}, N = 1, D = {D}; peers: {timed}")
    print(
        f"µs per step, median of {args.repeat} interleaved rounds; least on: the threads the least assumes;"
        " of least = (read + proj + sync) / ours"
    )
    head = ["cell", "dtype", "H", "Wh KB", "ours", "least on", "read", "proj", "sync", "of least", *peers]
    head += ["peer/ours", "peer/least"] if peers else []
    widths = [4, 7, 5, 6, 8, 8, 7, 6, 6, 8, *[8] * len(peers), 9, 10][: len(head)]
    print(" ".join(f"{h:>{w}}" for h, w in zip(head, widths)))
    for cell, dtype, H in rows:
        shape = (T, 1, D, H)
        fns = {"ours": ours(cell, shape, dtype)}
        timed_peers = peers if dtype == np.float32 else []
        fns.update({p: gated.make_runner(p, cell, shape, "forward") for p in timed_peers})
        trip_us()
        t = {k: v.median * 1e6 / T for k, v in timing.time_interleaved(fns, repeat=args.repeat).items()}
        on, read, proj, sync = least_us(cell, H, dtype, threads, trip_us())
        least = read + proj + sync
        row = [cell, dtype.name, str(H), f"{wh_bytes(cell, H, dtype) / 1024:.0f}", f"{t['ours']:.3f}", str(on)]
        row += [f"{read:.3f}", f"{proj:.3f}", "-" if on == 1 else f"{sync:.3f}" if sync else "n/a"]
        row += [f"{100 * least / t['ours']:.0f}%"]
        if peers:
            best = min((t[p] for p in timed_peers), default=None)
            row += [f"{t[p]:.3f}" if p in t else "-" for p in peers]
            row += ["-", "-"] if best is None else [f"{best / t['ours']:.2f}x", f"{best / least:.2f}x"]
        print(" ".join(f"{c:>{w}}" for c, w in zip(row, widths)), flush=True)


if __name__ == "__main__":
    main()
