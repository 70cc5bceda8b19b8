"""``python -m pyrnn_fast``: a self-check of every backend against the reference, then a benchmark.

    python -m pyrnn_fast [--threads N] [--shapes tiny,typical] [--repeat K]
                         [--backends cpp,numpy] [--no-peers] [--json PATH] [--plot PATH]
                         [--allow-fallback]

Prints the machine and versions; checks every backend's forward and all five gradients against
``pyrnn_fast._reference`` (float64 and float32, tanh and relu); times each backend and, when
installed, PyTorch's ``nn.RNN`` and a jitted JAX ``lax.scan`` on the shapes of DESIGN.md
(interleaved, shape by shape); and reports ms, GFLOP/s and speed-ups. Exits with status 1 if
the self-check failed, and with status 2 (printing the ImportError) without running anything if
the compiled backend ``cpp`` cannot be imported, unless ``--allow-fallback`` asks to benchmark
the fallback backends anyway. Its last line says which backend and instruction set ran.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import sys

import numpy as np

import pyrnn_fast as prf

from . import _backends, _bench, _reference
from ._backends import get_backend

TOLERANCE = {"float64": 1e-10, "float32": 1e-4}
CHECK_SHAPES = [(6, 3, 5, 7), (0, 2, 3, 4), (9, 1, 4, 8)]  # (T, N, D, H): plain, T = 0, N = 1
BUSY = 0.05  # other processes' share of the CPU above which timings are flagged


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m pyrnn_fast", description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, help="threads for every implementation (default: all cores)")
    p.add_argument("--shapes", default=",".join(_bench.SHAPES),
                   help=f"comma-separated shape names from {list(_bench.SHAPES)} (default: all)")
    p.add_argument("--repeat", type=int, default=5, help="timing rounds per measurement (default 5)")
    p.add_argument("--backends", help=f"comma-separated pyrnn_fast backends to time (default: all of {prf.backends()})")
    p.add_argument("--no-peers", action="store_true", help="do not time torch / jax")
    p.add_argument("--json", metavar="PATH", help="write every measurement to this JSON file")
    p.add_argument("--plot", metavar="PATH", help="write a PNG bar chart of the default backend's speed-ups")
    p.add_argument("--allow-fallback", action="store_true",
                   help="run even if the compiled backend 'cpp' cannot be imported (default: fail, "
                        "so that a broken build is never benchmarked as if it were the package)")
    args = p.parse_args(argv)
    if "cpp" not in prf.backends() and not args.allow_fallback:
        p.exit(2, f"{p.prog}: error: the compiled backend 'cpp' is not available: pyrnn_fast._core could not "
                  f"be imported ({_backends._core_error}).\nReinstall the package (pip install --force-reinstall "
                  f"pyrnn-fast, or pip install . from a clone), or pass --allow-fallback to benchmark "
                  f"{', '.join(prf.backends())} instead.\n")
    args.shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
    for s in args.shapes:
        if s not in _bench.SHAPES:
            p.error(f"--shapes: unknown shape {s!r}; expected some of {list(_bench.SHAPES)}")
    args.backends = prf.backends() if args.backends is None else [b.strip() for b in args.backends.split(",") if b.strip()]
    for b in args.backends:
        if b not in prf.backends():
            p.error(f"--backends: {b!r} is not available; available: {prf.backends()}")
    if args.threads is not None and not 1 <= args.threads <= (os.cpu_count() or 1):
        p.error(f"--threads: expected 1..{os.cpu_count()}, got {args.threads}")
    if args.repeat < 1:
        p.error("--repeat: expected >= 1")
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            p.error("--plot needs matplotlib, which is not installed (pip install matplotlib)")
    return args


def ensure_threads(threads):
    """Re-exec this command with the environment and CPU affinity of ``limit_threads(threads)``,
    unless that is already in place (the env marker says so): NumPy's BLAS has loaded already."""
    if threads is None or (os.environ.get(_bench.THREADS_ENV) == str(threads) and _bench.num_threads() == threads):
        return
    _bench.limit_threads(threads)
    sys.stdout.flush()
    os.execv(sys.executable, [sys.executable, "-m", "pyrnn_fast", *sys.argv[1:]])


def _version(dist):
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_info(threads, peers) -> dict:
    """CPU model, ISA, thread counts and versions."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    info = {
        "pyrnn_fast": prf.__version__, "numpy": np.__version__, "python": platform.python_version(),
        "backends": prf.backends(), "default_backend": get_backend(None).name, "isa": prf.isa(),
        "threads": threads, "kernel_threads": prf.get_num_threads(), "cpus": os.cpu_count(), "cpu_model": cpu,
        "numba": _version("numba"), "torch": _version("torch"), "jax": _version("jax"), "peers": peers,
        "loadavg": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    if "torch" in peers:
        import torch

        torch.set_num_threads(threads)
        info["torch_threads"] = torch.get_num_threads()
    return info


def ran_line(info, timed) -> str:
    """One line saying which pyrnn_fast backend (and kernel ISA) ran: what CI checks."""
    default = info["default_backend"]
    isa = f" (kernel ISA {info['isa']})" if default == "cpp" else ""
    line = f"pyrnn_fast default backend: {default}{isa}; timed: {', '.join(timed)}"
    if "cpp" not in info["backends"]:
        line += f"  [FALLBACK: the compiled backend is not available: {_backends._core_error}]"
    return line


def print_info(info):
    print(f"pyrnn_fast {info['pyrnn_fast']}  numpy {info['numpy']}  python {info['python']}")
    print(f"backends: {', '.join(info['backends'])} (default {info['default_backend']});  kernel ISA: {info['isa']}")
    print(f"CPU: {info['cpu_model']} ({info['cpus']} CPUs);  threads: {info['threads']} "
          f"(pyrnn_fast kernel {info['kernel_threads']}" + (f", torch {info['torch_threads']}" if "torch_threads" in info else "") + ")")
    peers = [f"{name} {info[name]}" for name in ("numba", "torch", "jax") if info[name]]
    print(f"optional: {', '.join(peers) or 'none'};  peers timed: {', '.join(info['peers']) or 'none'}")


# --- self-check -----------------------------------------------------------------------------

def _rel_err(got, ref) -> float:
    """max |got - ref| / max |ref| (inf on a shape mismatch, 0 for empty arrays)."""
    got, ref = np.asarray(got), np.asarray(ref)
    if got.shape != ref.shape:
        return float("inf")
    if ref.size == 0:
        return 0.0
    scale = max(float(np.max(np.abs(ref))), np.finfo(np.float64).tiny)
    return float(np.max(np.abs(got.astype(np.float64) - ref))) / scale


def self_check(backends) -> tuple[dict, bool]:
    """Max relative error of each backend, per dtype, over CHECK_SHAPES × (tanh, relu) × (hs, h_last,
    5 grads), against the float64 reference run on the same (dtype-rounded) inputs. Returns
    ``({backend: {dtype: err}}, ok)``; a wrong result dtype counts as an infinite error."""
    errors = {name: {dt: 0.0 for dt in TOLERANCE} for name in backends}
    rng = np.random.default_rng(1)
    for T, N, D, H in CHECK_SHAPES:
        raw = [rng.standard_normal(s) for s in ((T, N, D), (D, H), (H, H), (H,), (N, H), (T, N, H), (N, H))]
        raw[1] /= np.sqrt(D)
        raw[2] *= 0.9 / np.sqrt(H)
        for dt in TOLERANCE:
            x, Wx, Wh, b, h0, dhs, dh_last = (a.astype(dt) for a in raw)
            ref_in = [a.astype(np.float64) for a in (x, Wx, Wh, b, h0, dhs, dh_last)]
            for act in ("tanh", "relu"):
                hs_ref, h_last_ref = _reference.rnn_forward(*ref_in[:5], activation=act)
                hs_in = hs_ref.astype(dt)  # both backward passes see the same hs
                grads_ref = _reference.rnn_backward(ref_in[5], ref_in[0], ref_in[1], ref_in[2], hs_in.astype(np.float64),
                                                    ref_in[4], dh_last=ref_in[6], activation=act)
                for name in backends:
                    hs, h_last = prf.rnn_forward(x, Wx, Wh, b, h0, activation=act, time_major=True, backend=name)
                    g = prf.rnn_backward(dhs, x, Wx, Wh, hs_in, h0, dh_last=dh_last, activation=act,
                                         time_major=True, backend=name)
                    outs = [hs, h_last, *g]
                    errs = [_rel_err(o, r) if o.dtype == dt else float("inf")
                            for o, r in zip(outs, [hs_ref, h_last_ref, *grads_ref])]
                    errors[name][dt] = max(errors[name][dt], *errs)
    ok = all(errors[name][dt] <= TOLERANCE[dt] for name in backends for dt in TOLERANCE)
    return errors, ok


def print_self_check(errors):
    print("\nself-check against pyrnn_fast._reference (shapes T,N,D,H = "
          f"{', '.join('x'.join(map(str, s)) for s in CHECK_SHAPES)}; tanh+relu; hs, h_last and all 5 grads)")
    print(f"  {'backend':<8}" + "".join(f"{dt + ' max rel err':>24}" for dt in TOLERANCE))
    for name, per_dtype in errors.items():
        cells = [f"{err:.1e} {'ok' if err <= TOLERANCE[dt] else 'FAIL (> %.0e)' % TOLERANCE[dt]}"
                 for dt, err in per_dtype.items()]
        print(f"  {name:<8}" + "".join(f"{c:>24}" for c in cells))


# --- benchmark ------------------------------------------------------------------------------

def benchmark_shape(shape, impls, repeat) -> tuple[dict, float | None]:
    """Time every (impl, op) of one shape, interleaved. Returns ``{impl: {op: measurement}}`` and
    the share of the CPU that other processes used meanwhile."""
    runners = {(impl, op): _bench.make_runner(impl, shape, op) for impl in impls for op in _bench.OPS}
    since = _bench.cpu_snapshot()
    timed = _bench.time_interleaved(runners, repeat=repeat)
    out = {impl: {} for impl in impls}
    load = _bench.other_load(since)
    for (impl, op), (sec, rounds) in timed.items():
        out[impl][op] = {"ms": sec * 1e3, "gflops": _bench.flops(shape, op) / sec / 1e9, "rounds": rounds}
    for op in _bench.OPS:
        peer_ms = {p: out[p][op]["ms"] for p in _bench.PEERS if p in out}
        best_peer = min(peer_ms, key=peer_ms.get) if peer_ms else None
        for impl in impls:
            m = out[impl][op]
            m["vs_numpy"] = out["numpy"][op]["ms"] / m["ms"] if "numpy" in out else None
            m["best_peer"] = best_peer
            m["vs_best_peer"] = peer_ms[best_peer] / m["ms"] if best_peer else None
    return out, load


def _ratio(r):
    return "-" if r is None else f"{r:.2f}x"


def print_shape(shape, res, load):
    T, N, D, H = _bench.SHAPES[shape]
    fl = {op: _bench.flops(shape, op) / 1e9 for op in _bench.OPS}
    print(f"\n{shape}: T={T} N={N} D={D} H={H}  ({fl['forward']:.3g} GFLOP forward, {fl['fwd+bwd']:.3g} fwd+bwd)"
          "   speed-up = other's time / this row's time")
    head = f"  {'impl':<7}" + "".join(f" | {op + ' ms':>13} {'GFLOP/s':>8} {'vs numpy':>8} {'vs peer':>15}" for op in _bench.OPS)
    print(head)
    print("  " + "-" * (len(head) - 2))
    for impl, ops in res.items():
        cells = []
        for op in _bench.OPS:
            m = ops[op]
            peer = "-" if m["best_peer"] is None else f"{_ratio(m['vs_best_peer'])} ({m['best_peer']})"
            ms = f"{m['ms']:.3f}" + ("*" if m["rounds"] == 1 else "")
            cells.append(f" | {ms:>13} {m['gflops']:>8.1f} {_ratio(m['vs_numpy']):>8} {peer:>15}")
        print(f"  {impl:<7}" + "".join(cells))
    if any(ops[op]["rounds"] == 1 for ops in res.values() for op in _bench.OPS):
        print("  * one round only (slow call)")
    if load is not None and load > BUSY:
        print(f"  WARNING: other processes used {100 * load:.0f}% of the CPU meanwhile: these timings are unreliable")


def summarize(res, default) -> dict:
    """The default backend's speed-up over the best of torch, jax and the numpy reference, per op."""
    out = {}
    for op in _bench.OPS:
        others = {k: res[k][op]["ms"] for k in ("torch", "jax", "numpy") if k in res and k != default}
        if default not in res or not others:
            continue
        best = min(others, key=others.get)
        out[op] = {"vs": best, "among": sorted(others), "speedup": others[best] / res[default][op]["ms"]}
    return out


def write_plot(results, default, path, threads):
    """A PNG bar chart: the default backend's speed-up over each peer, per shape, forward and fwd+bwd."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    others = [k for k in ("torch", "jax", "numpy") if k != default and any(k in r for r in results.values())]
    shapes = list(results)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    width = 0.8 / max(len(others), 1)
    for ax, op in zip(axes, _bench.OPS):
        for i, other in enumerate(others):
            xs, ys = [], []
            for j, shape in enumerate(shapes):
                r = results[shape]
                if other in r and default in r:
                    xs.append(j + (i - (len(others) - 1) / 2) * width)
                    ys.append(r[other][op]["ms"] / r[default][op]["ms"])
            bars = ax.bar(xs, ys, width, label=f"vs {other}" + (" (reference)" if other == "numpy" else ""))
            ax.bar_label(bars, fmt="%.3g", fontsize=7)
        ax.axhline(1, color="k", lw=0.8)
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(ticker.LogLocator(subs=(1, 2, 5)))
        ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}x"))
        ax.yaxis.set_minor_formatter(ticker.NullFormatter())
        ax.set_xticks(range(len(shapes)), shapes)
        ax.set_title(op)
        ax.grid(axis="y", which="both", alpha=0.3)
    axes[0].set_ylabel(f"speed-up of pyrnn_fast[{default}] (log scale)")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"pyrnn_fast {prf.__version__} ({default}) vs peers, float32, {threads} thread(s)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    ensure_threads(args.threads)
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)  # show progress when piped
    threads = args.threads or _bench.num_threads()
    prf.set_num_threads(threads)
    peers = [] if args.no_peers else _bench.available_peers()
    info = machine_info(threads, peers)
    print_info(info)
    print(ran_line(info, args.backends))

    errors, ok = self_check(prf.backends())
    print_self_check(errors)

    default = info["default_backend"]
    impls = list(args.backends) + peers
    print(f"\nbenchmark: float32, time-major, median of {args.repeat} interleaved rounds; "
          "fwd+bwd = forward + backward of sum(hs), every gradient")
    results, summary, loads = {}, {}, {}
    for shape in args.shapes:
        res, load = benchmark_shape(shape, impls, args.repeat)
        results[shape], loads[shape] = res, load
        print_shape(shape, res, load)
        summary[shape] = s = summarize(res, default)
        if s:
            among = "/".join(next(iter(s.values()))["among"])
            print(f"  => {default} vs the best of {among}: " +
                  ", ".join(f"{op} {v['speedup']:.2f}x (vs {v['vs']})" for op, v in s.items()))

    peak = _bench.sgemm_peak(threads)
    print(f"\nsgemm peak (1024x1024 float32, {threads} thread(s)): numpy {peak['numpy']:.1f} GFLOP/s"
          + (f", jax {peak['jax']:.1f}" if peak["jax"] else "") + f" -> {peak['max']:.1f} GFLOP/s"
          + (f" (pyrnn_fast's own GEMM: {peak['cpp']:.1f})" if peak["cpp"] else ""))
    if "large" in results and default in results["large"]:
        g = results["large"][default]["forward"]["gflops"]
        print(f"{default} forward on large: {g:.1f} GFLOP/s = {100 * g / peak['max']:.0f}% of the sgemm peak")

    if args.json:
        with open(args.json, "w") as f:
            json.dump({"info": info, "self_check": {"errors": errors, "tolerance": TOLERANCE, "ok": ok},
                       "repeat": args.repeat, "sgemm_peak": peak,
                       "shapes": {s: {"dims": _bench.SHAPES[s], "gflop": {op: _bench.flops(s, op) / 1e9 for op in _bench.OPS},
                                      "results": results[s], "summary": summary[s],
                                      "other_processes_cpu_share": loads[s]} for s in results}},
                      f, indent=1)
        print(f"wrote {args.json}")
    if args.plot:
        write_plot(results, default, args.plot, threads)
        print(f"wrote {args.plot}")
    print(f"\n{ran_line(info, args.backends)}")
    if not ok:
        print("\nSELF-CHECK FAILED: a backend differs from the reference beyond tolerance", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
