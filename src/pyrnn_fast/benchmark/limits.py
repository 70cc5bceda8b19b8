"""The two ends of the main job's bar (docs/DESIGN.md, "Speed bars"):

- the hardware's limit for compute-bound work: the register-only FMA peak of the instruction
  set the kernels run with (``_core.fma_peak``), measured in the same run, beside the ceiling
  that loads leave of it (the GEMM micro-kernel on cache-resident operands,
  ``_core.microkernel_peak``), and the fraction of both the default backend reaches on the
  ``large`` shape, forward and forward+backward, float32 and float64;
- the latency of one streaming step, ``RNN.step`` (N = 1, D = 32), against the NumPy one-liner
  a user would write, ``h = np.tanh(x @ Wx + h @ Wh + b)``, and ``torch.nn.RNNCell``; and
  against the least a step can take, which is memory's, not the FMA units': a call (a step of
  H = 16) plus the read loop's time for the step's weights (``_core.read_peak``), every step
  sweeping them from the cache that holds them.
"""

from __future__ import annotations

import time

import numpy as np

from . import runners
from .timing import SETTLE_SECONDS, Timed, time_interleaved

STEP_SIZES = (64, 128, 256, 512)  # H of the step-latency table
STEP_INPUT = 32  # D
CALL_SIZE = 16  # H of the step whose time stands for a call's own cost (3 KB of weights, in L1)
CALL_NAME = f"call (H={CALL_SIZE} step)"


# The best rate each limit has reached in this process, by (loop, instruction set, dtype,
# threads), and the buffer's bytes for the read loop (each size its own limit: L1, L2, L3;
# each instruction set its own, as `set_isa` may change it between two measurements): a limit is
# the most the hardware gives, and on a shared machine a moment's contention only lowers what
# one measurement sees (the 2-thread register peak read 399 GFLOP/s in one main job and 451 in
# the one before on the same VM), which would inflate every fraction of it. The main job
# measures the limits before its benchmarks too (``measure_limits``).
_best_seen: dict[tuple, float] = {}


# Loads cannot make FMAs faster: a micro-kernel above the register peak means the peak was
# measured while other work had the CPU.
BUSY_PEAK_WARNING = "micro-kernel above the register peak: the peak was measured on a busy CPU"
# Likewise a step cannot read its weights faster than the read loop reads as many bytes.
BUSY_READ_WARNING = "a step above its bound: the read loop was measured on a busy CPU"


def _best_rate(loop_name: str, dtype, threads: int, seconds=0.05, calls=5, nbytes: int | None = None) -> float:
    """Giga-units per second (FLOPs, or bytes for the read loop, which takes ``nbytes``) of
    ``_core.<loop_name>`` on ``threads`` threads: the best of ``calls`` calls of about
    ``seconds`` each, and of every earlier measurement in this process."""
    from .. import _core

    loop = getattr(_core, loop_name)
    sized = () if nbytes is None else (nbytes,)

    def run(iterations):
        return loop(dtype, *sized, iterations, threads)

    iterations = 1 << 4
    while True:  # calibrate one call to about `seconds`
        units, sec = run(iterations)
        if sec >= seconds / 4 or iterations >= 1 << 40:
            break
        iterations *= 4
    iterations = max(1, int(iterations * seconds / max(sec, 1e-9)))
    rate = max(u / max(s, 1e-9) for u, s in (run(iterations) for _ in range(calls))) / 1e9
    key = (loop_name, _core.isa(), np.dtype(dtype).name, threads, *sized)
    _best_seen[key] = max(rate, _best_seen.get(key, 0.0))
    return _best_seen[key]


def fma_peak(dtype, threads: int) -> float:
    """GFLOP/s of the register-only FMA loop of the current instruction set."""
    return _best_rate("fma_peak", dtype, threads)


def microkernel_peak(dtype, threads: int) -> float:
    """GFLOP/s of the GEMM micro-kernel on cache-resident packed operands: the register peak's
    FMAs plus the loads a tile needs, the ceiling of any GEMM built on it."""
    return _best_rate("microkernel_peak", dtype, threads)


def read_bandwidth(nbytes: int, threads: int, dtype=np.float32) -> float:
    """GB/s that ``threads`` threads read, each a buffer of its own of ``nbytes`` over and over,
    every other pass backwards as a step alternates its chunks (``_core.read_peak``): what the
    caches that hold that many bytes deliver, the limit of a step whose weights (``nbytes`` per
    thread) stay there or come from there at every step."""
    return _best_rate("read_peak", dtype, threads, nbytes=int(nbytes))


def measure_limits(threads: int) -> None:
    """Both limits in both dtypes, once: the main job calls this before its benchmarks, so that
    the limits it reports are the best of the run's start and end."""
    for dtype in (np.float32, np.float64):
        fma_peak(dtype, threads)
        microkernel_peak(dtype, threads)


def beside_peak_loop(run, flops: float, dtype, threads: int, repeat: int) -> tuple[dict, Timed]:
    """``run`` (a call of ``flops`` FLOPs) and the register-FMA loop doing as many FLOPs, timed
    in the same interleaved rounds: ({"peak_gflops": the loop's median rate, "fraction": the
    call's median rate over it}, the call's ``Timed``). Both see the same machine. A host that
    takes part of the CPU away for a while slows both alike, where against the best peak of
    the run (``_best_seen``) it counts against the code: on the Zen 3 VM a register-only loop
    alone ran at 80-94 % of its own fastest rate over 8 s, with stretches at half speed
    (``bench/fma_steadiness.c``; docs/DESIGN.md, "How speed is established")."""
    from .. import _core

    probe = 1 << 10
    flops_per_iteration = _core.fma_peak(dtype, probe, threads)[0] / probe
    iterations = max(1, round(flops / flops_per_iteration))
    timed = time_interleaved({"call": run, "loop": lambda: _core.fma_peak(dtype, iterations, threads)}, repeat)
    loop_rate = iterations * flops_per_iteration / timed["loop"].median
    return {"peak_gflops": loop_rate / 1e9, "fraction": flops / timed["call"].median / loop_rate}, timed["call"]


def against_limits(gflops: float, peak: float, ceiling: float, best_gflops: float, beside: dict) -> dict:
    """A rate (the median round's) as a fraction of the register peak and of the micro-kernel's
    ceiling, and the fastest round's fraction of the peak: the limits are the best the run saw
    (``_best_seen``), and contention only slows a round, so on a shared host the median's
    fraction is the machine's load as much as the code's and the best round's is the code's.
    ``beside``: ``beside_peak_loop``'s, the same call against the peak loop timed beside it."""
    return {
        "gflops": gflops,
        "fraction": gflops / peak,
        "of_ceiling": gflops / ceiling,
        "best_gflops": best_gflops,
        "best_fraction": best_gflops / peak,
        "beside": beside,
    }


def describe(op: str, v: dict) -> str:
    """One ``against_limits`` entry as the report prints it."""
    return (
        f"{op} {v['gflops']:.1f} GFLOP/s = {100 * v['fraction']:.0f}%"
        f" ({100 * v['of_ceiling']:.0f}% of the micro-kernel's; fastest round {100 * v['best_fraction']:.0f}%;"
        f" {100 * v['beside']['fraction']:.0f}% of the peak loop timed beside it)"
    )


def fraction_of_peak(results, default: str, threads: int, repeat: int) -> dict:
    """{dtype name: {"peak", "ceiling", op: ``against_limits(..)``}} for the ``large``
    shape: float32 from the main table's ``results`` when it has it, float64 timed here."""
    out: dict[str, dict] = {}
    for dtype in (np.float32, np.float64):
        name = np.dtype(dtype).name
        entry: dict = {"peak": fma_peak(dtype, threads), "ceiling": microkernel_peak(dtype, threads)}
        for op in runners.OPS:
            flops = runners.flops("large", op)
            run = runners.pyrnn_runner(default, "large", op, dtype=dtype)
            beside, timed = beside_peak_loop(run, flops, dtype, threads, repeat)
            if dtype is np.float32 and "large" in results and default in results["large"]:
                m = results["large"][default][op]  # the main table's rounds
                g, best = m["gflops"], m["best_gflops"]
            else:
                g, best = (flops / sec / 1e9 for sec in (timed.median, timed.best))
            entry[op] = against_limits(g, entry["peak"], entry["ceiling"], best, beside)
        out[name] = entry
    return out


def print_fraction_of_peak(frac, isa: str, threads: int, default: str) -> None:
    """``fraction_of_peak``'s entries, one line per dtype (and a warning where the micro-kernel
    beat the register peak: a peak measured on a busy CPU)."""
    print(
        f"\nlarge vs the register-FMA peak ({isa}, {threads} thread(s); limits: best of the run's start and end;"
        f" and against the peak loop doing as many FLOPs in the same interleaved rounds), {default} backend:"
    )
    for name, e in frac.items():
        cells = ", ".join(describe(op, e[op]) for op in runners.OPS)
        print(
            f"  {name}: peak {e['peak']:.1f} GFLOP/s, micro-kernel on cached operands {e['ceiling']:.1f}"
            f" ({100 * e['ceiling'] / e['peak']:.0f}%); {cells}"
        )
        if e["ceiling"] > e["peak"]:
            print(f"  WARNING: {name} {BUSY_PEAK_WARNING}")


# Seconds between one callable's block of calls and the next one's in the step table when
# torch's cell is in it: torch runs its cell's OpenMP regions on the process's libgomp (with a
# source build, the one pyrnn_fast's sequence calls use: the first loaded serves both; README,
# "OpenMP runtimes"), whose worker then spins for ~8 ms on a CPU that the step's helper wants
# (the Zen 4 VM, thirty-eighth session: that worker took 70-90 % of a CPU through every row of
# the table, and the step read float32 H = 256 4.7 µs, float64 H = 128 4.2, against 2.9 and 2.1
# with OMP_WAIT_POLICY=passive). So each block is timed mostly out of the others' spin.
STEP_SETTLE_S = 0.02


def _interleaved_us(impls: dict, calls=2000, rounds=7, settle_s=0.0) -> dict:
    """µs per call of each zero-argument callable, the rounds interleaved: ``{name: {"median":
    µs, "fastest": µs}}`` over the rounds; each block of calls starts ``settle_s`` after the one
    before ends (untimed)."""
    for fn in impls.values():
        for _ in range(100):
            fn()
    times: dict[str, list[float]] = {name: [] for name in impls}
    for _ in range(rounds):
        for name, fn in impls.items():
            if settle_s > 0:
                time.sleep(settle_s)
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            times[name].append((time.perf_counter() - t0) / calls)
    return {name: {"median": float(np.median(t)) * 1e6, "fastest": min(t) * 1e6} for name, t in times.items()}


def _step_impls(H: int, backend: str | None, peers, dtype) -> dict:
    """One streaming step of N = 1, D = STEP_INPUT, hidden size H, per implementation, all from
    the same weights: ``prf.RNN.step``, the NumPy one-liner and (if importable) torch.nn.RNNCell;
    and a step of hidden size CALL_SIZE, about the cost of a call alone (CALL_NAME)."""
    import pyrnn_fast as prf

    layer = prf.RNN(STEP_INPUT, H, stateful=True, dtype=dtype, seed=0, backend=backend)
    call = prf.RNN(STEP_INPUT, CALL_SIZE, stateful=True, dtype=dtype, seed=0, backend=backend)
    Wx, Wh, b = (layer.params[k] for k in ("Wx_l0", "Wh_l0", "b_l0"))
    x = np.random.default_rng(0).standard_normal((1, STEP_INPUT)).astype(dtype)
    h = np.zeros((1, H), dtype)

    def numpy_step():
        nonlocal h
        h = np.tanh(x @ Wx + h @ Wh + b)

    impls = {"prf.RNN.step": lambda: layer.step(x), "numpy one-liner": numpy_step}
    if "torch" in peers:
        import torch

        cell = torch.nn.RNNCell(STEP_INPUT, H).to(getattr(torch, np.dtype(dtype).name))
        tx = torch.from_numpy(x)
        th = torch.zeros((1, H), dtype=tx.dtype)

        def torch_step():
            nonlocal th
            with torch.no_grad():
                th = cell(tx, th)

        impls["torch.nn.RNNCell"] = torch_step
    impls[CALL_NAME] = lambda: call.step(x)
    return impls


def step_weight_bytes(H: int, dtype) -> int:
    """Bytes of a step's weights [Wx; Wh] (STEP_INPUT + H rows of H), which it reads at every step."""
    return (STEP_INPUT + H) * H * np.dtype(dtype).itemsize


def weights_read_us(nbytes: int, dtype, threads: int) -> float:
    """µs the read loop takes to read ``nbytes`` once, split evenly between ``threads`` threads
    (``read_bandwidth`` of each one's share, which is the rate of all of them together)."""
    return nbytes / read_bandwidth(-(-nbytes // threads), threads, dtype) / 1e3


def step_read_us(H: int, dtype, threads: int) -> float:
    """µs the read loop takes to read a step's weights once (``weights_read_us``), on one thread
    or split between ``threads``, whichever is faster: with a call's cost added, about the
    least a step can take. With two threads a step splits its weights only from 160 KB of them
    (step.hpp, config.hpp's kMinStepCallBytesPerThread), and a team costs its start and end
    besides: for smaller weights the bound is looser."""
    nbytes = step_weight_bytes(H, dtype)
    return min(weights_read_us(nbytes, dtype, t) for t in sorted({1, max(1, threads)}))


def step_bound(numpy_us: float, call_us: float, read_us: float, step_us: float) -> tuple[float, float]:
    """(NumPy's one-liner over a call plus the read: about the most NumPy / step could be, the
    read being the best rate the run saw and the call as timed; that least time over the
    step's: how near the step came, 1 at the limit)."""
    least = call_us + read_us
    return numpy_us / least, least / step_us


LINE_EXCHANGES = 20000  # line_round_trip_ns: 2-8 ms on the Zen 4 VM


def line_round_trip_ns() -> float | None:
    """ns of a cache line's round trip between the first two CPUs this thread may use, now
    (``_core.line_round_trip_ns``, as the step table's other compiled-backend figures); None
    where it cannot be measured (one CPU, threads not pinned, no round within a second)."""
    from .. import _core

    return _core.line_round_trip_ns(LINE_EXCHANGES)


def step_latency(backend: str | None, peers, dtype=np.float32, threads: int = 1) -> tuple[dict, dict, dict]:
    """``({H: {impl: {"median": µs, "fastest": µs}}}, {H: [ns before, ns after]}, {H: µs})``:
    per step (see ``_step_impls``), the median and the fastest of interleaved rounds per size,
    which start SETTLE_SECONDS after the size's layer is made, each block of calls after a pause
    (STEP_SETTLE_S) when torch's cell is among them; a cache line's
    round trip between two CPUs (``line_round_trip_ns``, None where it cannot be measured)
    before and after each size's rounds; and the read loop's time for each size's weights on
    up to ``threads`` threads (``step_read_us``), the best of a measurement before the rows and
    one after them (a moment's contention would make the bound too slow: seen, a step at 135 %
    of it), neither during a row's rounds (the read loop's threads would spin through them:
    every row starts SETTLE_SECONDS after its layer is made). That round trip is what a step's second thread pays at
    its start, barrier and end, and under a virtual machine it moves between ~100 ns and ~400
    for minutes at a time (README, "Backends, instruction sets and threads")."""
    settle_s = STEP_SETTLE_S if "torch" in peers else 0.0
    rows, trips = {}, {}
    for H in STEP_SIZES:
        step_read_us(H, dtype, threads)  # (read_bandwidth keeps the best: this and the one below)
    for H in STEP_SIZES:
        impls = _step_impls(H, backend, peers, dtype)
        # The layer's constructor ran np.linalg.qr (its orthogonal Wh), which NumPy's OpenBLAS
        # runs on its threads from H = 128 on; its idle worker then spins ~0.1 s (2^28 cycles)
        # on the CPU the step's helper uses, and the whole row's rounds fit in that time at
        # float32 H = 256 (Zen 4 VM, fortieth session: the step 4.7-4.8 µs in the median round
        # without this pause, 2.6-2.7 with it). Not the NumPy one-liner: OpenBLAS runs its
        # (1, H) x (H, H) products on the calling thread.
        time.sleep(SETTLE_SECONDS)
        before = line_round_trip_ns()
        rows[H] = _interleaved_us(impls, settle_s=settle_s)
        if settle_s > 0:
            time.sleep(settle_s)  # (torch's OpenMP worker spins a while after its block)
        trips[H] = [before, line_round_trip_ns()]
    return rows, trips, {H: step_read_us(H, dtype, threads) for H in STEP_SIZES}


def print_step_latency(lat, threads: int, dtype_name: str, trips: dict | None = None, reads: dict | None = None):
    """``step_latency``'s table: the median rounds, and the NumPy one-liner's time over
    ``RNN.step``'s in the median and in the fastest rounds; with ``reads`` (its third result)
    the read loop's time for the weights, the one-liner over a call plus that read (about the
    most a step could be ahead of it: ``step_bound``), and that least time over the step's (how
    near the step is);
    with ``trips`` (its second) each row's line round trips before/after. A shared host only
    ever slows a round, and a step on two threads waits for the helper's virtual CPU whenever
    the host has taken it away (docs/DESIGN.md): the fastest rounds show the machine without
    that."""
    names = list(next(iter(lat.values())))
    print(f"\nstreaming step latency (µs, N=1, D={STEP_INPUT}, {dtype_name}, {threads} thread(s), median of 7 rounds;")
    print(
        "  read: µs to read the step's weights at the best rate the read loop saw; bound: numpy / (call + read),"
        " about the most numpy/step could be;\n  of bound: (call + read) / step, 100% at that limit;"
        " line ns: a cache line's round trip between two CPUs before/after the row: a second thread's cost)"
    )
    head = f"  {'H':>5} " + " ".join(f"{n:>17}" for n in names)
    head += f" {'read':>7} {'numpy/step':>11} {'bound':>7} {'of bound':>9} {'(fastest rounds)':>17}"
    print(head + f" {'line ns':>10}")
    for H, row in lat.items():
        ratio, fastest = (row["numpy one-liner"][k] / row["prf.RNN.step"][k] for k in ("median", "fastest"))
        cells = " ".join(f"{row[n]['median']:>17.2f}" for n in names)
        read_us = (reads or {}).get(H)
        read, bound, of_bound = "-", "-", "-"  # without the read loop's time or the call's
        near = None
        if read_us is not None and CALL_NAME in row:
            most, near = step_bound(
                row["numpy one-liner"]["median"], row[CALL_NAME]["median"], read_us, row["prf.RNN.step"]["median"]
            )
            read, bound, of_bound = f"{read_us:.2f}", f"{most:.2f}x", f"{100 * near:.0f}%"
        line = "/".join("-" if ns is None else f"{ns:.0f}" for ns in (trips or {}).get(H, [None, None]))
        print(f"  {H:>5} {cells} {read:>7} {ratio:>10.2f}x {bound:>7} {of_bound:>9} {fastest:>16.2f}x {line:>10}")
        if near is not None and near > 1:
            print(f"  WARNING: H = {H}: {BUSY_READ_WARNING}")


__all__ = [
    "fma_peak",
    "microkernel_peak",
    "read_bandwidth",
    "weights_read_us",
    "step_read_us",
    "step_bound",
    "measure_limits",
    "against_limits",
    "describe",
    "fraction_of_peak",
    "print_fraction_of_peak",
    "line_round_trip_ns",
    "step_latency",
    "print_step_latency",
]
