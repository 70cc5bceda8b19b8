"""``python -m pyrnn_fast``: a self-check of every backend against the reference, then a benchmark.

    python -m pyrnn_fast [--threads N] [--shapes tiny,typical] [--cells rnn,lstm,gru] [--repeat K]
                         [--backends cpp,numpy] [--no-peers] [--json PATH] [--plot PATH]
                         [--allow-fallback]

Prints the machine and versions; checks every backend's forward and all gradients against
the NumPy references (float64 and float32; tanh and relu; LSTM and GRU); times each backend
and, when installed, PyTorch's ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU`` and a jitted JAX
``lax.scan`` of the same cell on the shapes of docs/DESIGN.md (interleaved, shape by shape);
and reports ms, GFLOP/s and speed-ups. Exits with status 1 if
the self-check failed, and with status 2 (printing the ImportError) without running anything if
the compiled backend ``cpp`` cannot be imported, unless ``--allow-fallback`` asks to benchmark
the fallback backends anyway. Its last line says which backend and instruction set ran.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

import pyrnn_fast as prf

from .. import _backends
from . import gated, limits, runners, timing
from .plot import write_plot
from .report import machine_info, print_info, print_shape, ran_line, summarize
from .selfcheck import TOLERANCE, print_self_check, self_check


def parse_args(argv):
    """The checked options; exits with status 2 on a bad one, or when ``cpp`` is missing
    without ``--allow-fallback``."""
    p = argparse.ArgumentParser(prog="python -m pyrnn_fast", description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, help="threads for every implementation (default: all cores)")
    p.add_argument(
        "--shapes",
        default=",".join(runners.SHAPES),
        help=f"comma-separated shape names from {list(runners.SHAPES)} (default: all)",
    )
    p.add_argument("--cells", default="rnn,lstm,gru", help="comma-separated cells from rnn, lstm, gru (default: all)")
    p.add_argument("--repeat", type=int, default=5, help="timing rounds per measurement (default 5)")
    p.add_argument("--backends", help=f"comma-separated pyrnn_fast backends to time (default: all of {prf.backends()})")
    p.add_argument("--no-peers", action="store_true", help="do not time torch / jax")
    p.add_argument("--json", metavar="PATH", help="write every measurement to this JSON file")
    p.add_argument("--plot", metavar="PATH", help="write a PNG bar chart of the default backend's speed-ups")
    p.add_argument(
        "--allow-fallback",
        action="store_true",
        help="run even if the compiled backend 'cpp' cannot be imported (default: fail, "
        "so that a broken build is never benchmarked as if it were the package)",
    )
    args = p.parse_args(argv)
    if "cpp" not in prf.backends() and not args.allow_fallback:
        p.exit(
            2,
            f"{p.prog}: error: the compiled backend 'cpp' is not available: pyrnn_fast._core could not "
            f"be imported ({_backends._core_error}).\nReinstall the package (pip install --force-reinstall "
            f"pyrnn-fast, or pip install . from a clone), or pass --allow-fallback to benchmark "
            f"{', '.join(prf.backends())} instead.\n",
        )
    try:  # a bad PYRNN_FAST_BACKEND: the library's ValueError names it; an error line here
        _backends.get_backend(None)
    except ValueError as e:
        p.error(str(e))
    args.shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
    for s in args.shapes:
        if s not in runners.SHAPES:
            p.error(f"--shapes: unknown shape {s!r}; expected some of {list(runners.SHAPES)}")
    args.cells = [c.strip().lower() for c in args.cells.split(",") if c.strip()]
    for c in args.cells:
        if c not in ("rnn", *gated.GATES):
            p.error(f"--cells: unknown cell {c!r}; expected some of ['rnn', 'lstm', 'gru']")
    names = [] if args.backends is None else [b for b in args.backends.split(",") if b.strip()]
    try:  # as PYRNN_FAST_BACKEND reads them: any case, spaces around (an unknown one said so)
        args.backends = (
            prf.backends()
            if args.backends is None
            else [_backends._backend_name(b, "--backends", False) for b in names]
        )
    except ValueError as unknown:
        p.error(str(unknown))
    for b in args.backends:
        if b not in prf.backends():
            p.error(f"--backends: {b!r} is not available; available: {prf.backends()}")
    # Listed but broken (a numba that fails to import): an error if asked for by name, else said.
    args.backends, broken = loadable(args.backends)
    for b, why in broken.items():
        if names:
            p.error(f"--backends: {why}")
        print(f"{p.prog}: {b} skipped: {why}", file=sys.stderr)
    for option, chosen in (("--shapes", args.shapes), ("--cells", args.cells), ("--backends", args.backends)):
        if not chosen:  # "--backends=" would time nothing for minutes
            p.error(f"{option}: expected at least one name")
    # The CPUs this process may run on (taskset, a container's CPU set), not os.cpu_count():
    # ensure_threads re-execs until the affinity holds that many, which more could never reach.
    usable = timing.num_threads()
    if args.threads is not None and not 1 <= args.threads <= usable:
        p.error(f"--threads: expected 1..{usable} (the CPUs this process may run on), got {args.threads}")
    if args.repeat < 1:
        p.error("--repeat: expected >= 1")
    for option, path in (("--json", args.json), ("--plot", args.plot)):
        # Checked now, not when the run (minutes) is over and would be lost.
        if not path:
            continue
        folder = os.path.dirname(os.path.abspath(path))
        if os.path.isdir(path) or not os.path.isdir(folder) or not os.access(folder, os.W_OK):
            p.error(f"{option}: cannot write {path!r} (is its folder there and writable?)")
    if args.plot and "rnn" not in args.cells:  # the chart is the vanilla cell's; it was skipped without a word
        p.error("--plot: charts the vanilla cell's results; add rnn to --cells")
    if args.plot and _backends.get_backend(None).name not in args.backends:  # an empty chart otherwise
        p.error("--plot: charts the default backend's speed-ups; add it to --backends")
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            p.error("--plot needs matplotlib, which is not installed (pip install matplotlib)")
    return args


def ensure_threads(threads):
    """Re-exec this command with the environment and CPU affinity of ``limit_threads(threads)``,
    unless that is already in place (the env marker says so): NumPy's BLAS has loaded already."""
    if threads is None or (os.environ.get(timing.THREADS_ENV) == str(threads) and timing.num_threads() == threads):
        return
    timing.limit_threads(threads)
    sys.stdout.flush()
    os.execv(sys.executable, [sys.executable, "-m", "pyrnn_fast", *sys.argv[1:]])


def benchmark_shape(shape, impls, repeat, cell="rnn") -> tuple[dict, float | None]:
    """Time every (impl, op) of one shape of `cell`, interleaved. Returns ``{impl: {op:
    measurement}}`` and the share of this process's CPUs that other processes used meanwhile.
    A peer that fails to build or run an op is left out (said on stderr); one of ours raises."""
    calls, failed = {}, {}
    for impl in impls:
        for op in runners.OPS:
            try:
                calls[(impl, op)] = gated.make_runner(impl, cell, shape, op)
            except Exception as e:  # a peer that cannot run this shape: left out, said
                if impl not in runners.PEERS:
                    raise
                failed[(impl, op)] = e
    since = timing.cpu_snapshot()
    timed = timing.time_interleaved(calls, repeat=repeat, errors=failed)
    for (impl, op), error in failed.items():
        if impl not in runners.PEERS:  # ours failing is a bug, not a missing figure
            raise error
        print(f"  {impl} {op} on {shape} failed ({type(error).__name__}: {error}): left out", file=sys.stderr)
    ok = [impl for impl in impls if all((impl, op) in timed for op in runners.OPS)]
    out: dict[str, dict] = {impl: {} for impl in ok}
    load = timing.other_load(since)
    for (impl, op), (sec, rounds, best) in timed.items():
        if impl in out:
            g = gated.flops(cell, shape, op) / 1e9
            out[impl][op] = {"ms": sec * 1e3, "gflops": g / sec, "best_gflops": g / best, "rounds": rounds}
    for op in runners.OPS:
        peer_ms = {p: out[p][op]["ms"] for p in runners.PEERS if p in out}
        best_peer = min(peer_ms, key=lambda k: peer_ms[k]) if peer_ms else None
        for impl in ok:
            m = out[impl][op]
            m["vs_numpy"] = out["numpy"][op]["ms"] / m["ms"] if "numpy" in out else None
            m["best_peer"] = best_peer
            m["vs_best_peer"] = peer_ms[best_peer] / m["ms"] if best_peer else None
    return out, load


def loadable(names) -> tuple[list[str], dict[str, ValueError]]:
    """The backends among `names` that load, and why each other one does not."""
    ok, broken = [], {}
    for name in names:
        try:
            _backends.get_backend(name)
            ok.append(name)
        except ValueError as why:
            broken[name] = why
    return ok, broken


def main(argv=None) -> int:
    """The main job (module docstring): re-executes itself for ``--threads``; returns the exit
    status, 1 if the self-check failed."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    ensure_threads(args.threads)
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)  # show progress when piped
    threads = args.threads or timing.num_threads()
    prf.set_num_threads(threads)
    peers = [] if args.no_peers else runners.available_peers()
    info = machine_info(threads, peers)
    print_info(info)
    print(ran_line(info, args.backends))

    checked, broken = loadable(prf.backends())  # a listed but broken one is said, not fatal
    for name, why in broken.items():
        print(f"self-check: {name} skipped: {why}")
    errors, ok = self_check(checked)
    print_self_check(errors)
    gated_cells = [c for c in args.cells if c != "rnn"]
    if gated_cells:
        gated_errors, gated_ok = gated.self_check(checked)
        print_self_check(
            gated_errors, "pyrnn_fast._reference_gated", "LSTM and GRU; hs, final states and every gradient"
        )
        errors, ok = {**errors, **gated_errors}, ok and gated_ok

    default = info["default_backend"]
    if default == "cpp":  # the limits, once before the benchmarks too (limits._best_seen)
        limits.measure_limits(threads)
    impls = list(args.backends) + peers
    print(
        f"\nbenchmark: float32, time-major, median of {args.repeat} interleaved rounds; "
        "fwd+bwd = forward + backward of sum(hs), every gradient"
    )
    by_cell: dict[str, tuple[dict, dict, dict]] = {}
    for cell in args.cells:
        results, summary, loads = by_cell.setdefault(cell, ({}, {}, {}))
        for shape in args.shapes:
            res, load = benchmark_shape(shape, impls, args.repeat, cell)
            results[shape], loads[shape] = res, load
            print_shape(shape, res, load, cell, args.repeat)
            summary[shape] = s = summarize(res, default)
            if s:
                among = "/".join(next(iter(s.values()))["among"])
                print(
                    f"  => {default} vs the best of {among}: "
                    + ", ".join(f"{op} {v['speedup']:.2f}x (vs {v['vs']})" for op, v in s.items())
                )
    results, summary, loads = by_cell.get("rnn", ({}, {}, {}))

    peak = runners.sgemm_peak(threads, peers=peers)  # --no-peers: no JAX here either
    print(
        f"\nsgemm peak (1024x1024 float32, {threads} thread(s)): numpy {peak['numpy']:.1f} GFLOP/s"
        + (f", jax {peak['jax']:.1f}" if peak["jax"] else "")
        + f" -> {peak['max']:.1f} GFLOP/s"
        + (f" (pyrnn_fast's own GEMM: {peak['cpp']:.1f})" if peak["cpp"] else "")
    )
    frac, latency, line_trips, step_reads, gated_frac = None, {}, {}, {}, {}
    if default == "cpp":  # the peak loop and the step's fast path are the compiled backend's
        if "rnn" in args.cells:
            frac = limits.fraction_of_peak(results, default, threads, args.repeat)
            limits.print_fraction_of_peak(frac, info["isa"], threads, default)
        peak32 = frac["float32"]["peak"] if frac else limits.fma_peak(np.float32, threads)
        ceiling32 = frac["float32"]["ceiling"] if frac else limits.microkernel_peak(np.float32, threads)
        gated_frac = gated.fraction_of_peak(
            {c: by_cell[c][0] for c in gated_cells}, default, peak32, ceiling32, threads, args.repeat
        )
        if gated_frac and not frac:
            print(
                f"\nlarge vs the register-FMA peak ({info['isa']}, {threads} thread(s); limits: best of the run's"
                f" start and end): {peak32:.1f} GFLOP/s,"
                f" micro-kernel on cached operands {ceiling32:.1f}"
            )
        for cell, e in gated_frac.items():
            print(f"  {cell.upper()} float32: " + ", ".join(limits.describe(op, v) for op, v in e.items()))
        for dtype in ("float32", "float64"):
            latency[dtype], line_trips[dtype], step_reads[dtype] = limits.step_latency(default, peers, dtype, threads)
            limits.print_step_latency(latency[dtype], threads, dtype, line_trips[dtype], step_reads[dtype])

    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "info": info,
                    "self_check": {"errors": errors, "tolerance": TOLERANCE, "ok": ok},
                    "repeat": args.repeat,
                    "sgemm_peak": peak,
                    "fma_peak_fraction": frac,
                    "gated_fma_peak_fraction": gated_frac,
                    "gated": {
                        c: {
                            s: {
                                "gflop": {op: gated.flops(c, s, op) / 1e9 for op in runners.OPS},
                                "results": by_cell[c][0][s],
                                "summary": by_cell[c][1][s],
                                "other_processes_cpu_share": by_cell[c][2][s],
                            }
                            for s in by_cell[c][0]
                        }
                        for c in gated_cells
                    },
                    "step_latency_us": latency,
                    "step_line_round_trip_ns": line_trips,
                    "step_read_us": step_reads,
                    "shapes": {
                        s: {
                            "dims": runners.SHAPES[s],
                            "gflop": {op: runners.flops(s, op) / 1e9 for op in runners.OPS},
                            "results": results[s],
                            "summary": summary[s],
                            "other_processes_cpu_share": loads[s],
                        }
                        for s in results
                    },
                },
                f,
                indent=1,
            )
        print(f"wrote {args.json}")
    if args.plot and results:
        write_plot(results, default, args.plot, threads)
        print(f"wrote {args.plot}")
    print(f"\n{ran_line(info, args.backends)}")
    if not ok:
        print("\nSELF-CHECK FAILED: a backend differs from the reference beyond tolerance", file=sys.stderr)
        return 1
    return 0
