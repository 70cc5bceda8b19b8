"""pytest-benchmark suite: every pyrnn_fast backend and the peers (torch, jax) on the shapes of docs/DESIGN.md.

    pytest bench/ --benchmark-only --benchmark-group-by=param:shape      # compare backends per shape
    pytest bench/ --benchmark-only -k "typical and forward"
    PYRNN_FAST_BENCH_THREADS=1 pytest bench/ --benchmark-only            # every implementation on 1 thread

Parametrized over backend × shape × op ("forward", "fwd+bwd"); the runners and FLOP counts
come from ``pyrnn_fast.benchmark`` (the same as ``python -m pyrnn_fast``). ``extra_info`` records
GFLOP/s and the share of the CPU other processes took meanwhile. Calls slower than SLOW_CALL
run with ``benchmark.pedantic`` and few rounds; calls slower than TOO_SLOW are skipped.
"""

import importlib.util
import time

import pytest

import pyrnn_fast as prf
from pyrnn_fast.benchmark import runners, timing

BACKENDS = prf.backends() + list(runners.PEERS)
SLOW_CALL = 0.05  # seconds: above this, 3 pedantic rounds
TOO_SLOW = 10.0  # seconds: above this, skipped


@pytest.mark.parametrize("op", runners.OPS)
@pytest.mark.parametrize("shape", list(runners.SHAPES))
@pytest.mark.parametrize("backend", BACKENDS)
def test_rnn(benchmark, backend, shape, op):
    if backend in runners.PEERS and importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed")
    fn = runners.make_runner(backend, shape, op)
    fn()  # warm-up: JIT compilation is not timed
    t0 = time.perf_counter()
    fn()
    per_call = time.perf_counter() - t0
    if per_call > TOO_SLOW:
        pytest.skip(f"{backend} {op} on {shape} takes {per_call:.0f} s per call")

    benchmark.group = f"{shape} {op}"
    benchmark.extra_info.update(
        shape=shape, dims=runners.SHAPES[shape], op=op, backend=backend, gflop=runners.flops(shape, op) / 1e9
    )
    since = timing.cpu_snapshot()
    if per_call > SLOW_CALL:
        benchmark.pedantic(fn, rounds=3, iterations=1, warmup_rounds=0)
    else:
        benchmark(fn)
    benchmark.extra_info["gflops"] = runners.flops(shape, op) / benchmark.stats.stats.median / 1e9
    # Other processes' share of the CPU while this ran: above a few % the timings are unreliable.
    benchmark.extra_info["other_load"] = timing.other_load(since)
