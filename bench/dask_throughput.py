"""Scoring many sequences: sequences per second in-process vs on a local Dask cluster.

Scores ``--sequences`` (10⁵ by default) sequences of the ``typical`` shape's geometry (T = 100,
D = 128, H = 256, float32, a one-layer vanilla RNN unless ``--cell``) in chunks of each size of
``--chunks``: a chunk's score is the top layer's last output (N, H), which comes back to the
caller. In one run, per chunk size:

- in-process: a loop of ``layer(x_chunk)`` on 1 thread and on all CPUs (no cluster running);
- ``pyrnn_fast.dask.predict`` on a ``distributed.LocalCluster`` of 1 worker process running
  one task at a time, with 1 thread per task and with all CPUs per task (``threads=``);
- the same on 2 worker processes, one task and one thread each (Dask's usual layout: one task
  per core).

Each chunk's inputs are gathered from one (64, T, D) block of random numbers made once (a
graph key of its own for Dask: shipped once per worker), on both sides, so that neither times
a random number generator but both make every chunk's array.

The overhead per chunk is measured apart, on each cluster: ``predict`` over 1000 chunks of one
sequence of one step (no work to speak of), total time / 1000. The last columns put it against
the in-process time of one chunk (1 thread): the share of a chunk's time Dask adds.

    pip install ".[dask]"
    python bench/dask_throughput.py [--sequences 100000] [--chunks 64,256,1024,4096] [--cell rnn]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np

T, D, H = 100, 128, 256
TINY_CHUNKS = 1000


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


def make_layer(cell):
    import pyrnn_fast as prf

    return {"rnn": prf.RNN, "lstm": prf.LSTM, "gru": prf.GRU}[cell](D, H, seed=0).eval()


def _chunk(block, n):
    """n sequences gathered from the block (a copy, as a chunk that arrives would be)."""
    return block[np.arange(n) % len(block)]


def in_process(layer, block, sizes, threads):
    import pyrnn_fast as prf

    before = prf.get_num_threads()
    prf.set_num_threads(threads)
    try:
        layer(_chunk(block, sizes[0]))  # warm-up
        start = time.perf_counter()
        # copied: a view would keep every chunk's whole output alive (GBs, as measured)
        scores = [layer(_chunk(block, n))[0][:, -1, :].copy() for n in sizes]
        elapsed = time.perf_counter() - start
    finally:
        prf.set_num_threads(before)
    assert sum(len(s) for s in scores) == sum(sizes)
    return elapsed


def on_cluster(client, layer, block, sizes, threads, steps=T):
    import dask
    import dask.array as da

    import pyrnn_fast.dask as prfd

    base = dask.delayed(block[:, :steps].copy(), traverse=False)
    chunks = [da.from_delayed(dask.delayed(_chunk)(base, n), (n, steps, D), dtype=np.float32) for n in sizes]
    scores = prfd.predict(layer, da.concatenate(chunks), threads=threads)[:, -1, :]
    start = time.perf_counter()
    result = client.compute(scores).result()
    elapsed = time.perf_counter() - start
    assert result.shape == (sum(sizes), H)
    return elapsed


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sequences", type=int, default=100_000)
    parser.add_argument("--chunks", default="64,256,1024,4096", help="chunk sizes, comma-separated")
    parser.add_argument("--cell", default="rnn", choices=["rnn", "lstm", "gru"])
    parser.add_argument("--json", help="write the results to this file")
    args = parser.parse_args(argv)

    from distributed import Client, LocalCluster

    import pyrnn_fast as prf
    from pyrnn_fast.benchmark.timing import cpu_snapshot, other_load

    cpus = len(os.sched_getaffinity(0))
    layer = make_layer(args.cell)
    chunk_sizes = [int(c) for c in args.chunks.split(",")]
    block = np.random.default_rng(0).standard_normal((64, T, D), dtype=np.float32)
    plans = {n: [n] * (args.sequences // n) + ([args.sequences % n] if args.sequences % n else []) for n in chunk_sizes}
    print(f"{cpu_name()}, {cpus} CPUs, kernel ISA {prf.isa()}; {args.cell.upper()} T={T} D={D} H={H} float32")
    print(f"{args.sequences:,} sequences in chunks of {args.chunks}", flush=True)

    seconds: dict = {n: {} for n in chunk_sizes}
    overhead = {}
    since = cpu_snapshot()  # before any worker process exists: the load of other programs
    for threads in (1, cpus):
        name = f"in-process, {threads} thread{'s' * (threads > 1)}"
        for n in chunk_sizes:
            seconds[n][name] = in_process(layer, block, plans[n], threads)
            print(".", end="", file=sys.stderr, flush=True)
    load = other_load(since)
    configs = [("1 worker, 1 thread/task", 1, 1), (f"1 worker, {cpus} threads/task", 1, cpus), ("2 workers x 1", 2, 1)]
    for name, workers, threads in configs:
        with (
            LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=":0", silence_logs=40) as cluster,
            Client(cluster, set_as_default=False) as client,
        ):
            on_cluster(client, layer, block, [1] * 4, threads)  # warm-up: the workers import pyrnn_fast
            overhead[name] = on_cluster(client, layer, block, [1] * TINY_CHUNKS, threads, steps=1) / TINY_CHUNKS
            for n in chunk_sizes:
                seconds[n][name] = on_cluster(client, layer, block, plans[n], threads)
                print(".", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)

    timed = list(seconds[chunk_sizes[0]])
    print("\nsequences per second (higher is better):\n")
    print("| chunk | " + " | ".join(timed) + " |")
    print("|---:|" + "---:|" * len(timed))
    for n in chunk_sizes:
        print(f"| {n} | " + " | ".join(f"{args.sequences / seconds[n][k]:,.0f}" for k in timed) + " |")
    print(f"\noverhead per chunk ({TINY_CHUNKS} chunks of 1 sequence, 1 step), and as a share of one chunk's")
    print("in-process time on 1 thread:\n")
    print("| cluster | overhead per chunk | " + " | ".join(f"chunk {n}" for n in chunk_sizes) + " |")
    print("|---|---:|" + "---:|" * len(chunk_sizes))
    for name, per_chunk in overhead.items():
        shares = [per_chunk / (seconds[n]["in-process, 1 thread"] / len(plans[n])) for n in chunk_sizes]
        print(f"| {name} | {per_chunk * 1e3:.2f} ms | " + " | ".join(f"{s:.1%}" for s in shares) + " |")
    if load is not None:
        print(f"\nother processes used {load:.0%} of the machine's CPU time during the in-process runs")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                dict(cpu=cpu_name(), cpus=cpus, isa=prf.isa(), cell=args.cell, seconds=seconds, overhead=overhead),
                f,
                indent=1,
            )


if __name__ == "__main__":
    main()
