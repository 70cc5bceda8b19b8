"""What the main job prints: the machine and versions, each shape's table, the summary line
and which backend ran."""

from __future__ import annotations

import importlib.metadata
import os
import platform

import numpy as np

import pyrnn_fast as prf

from .. import _backends
from . import gated, runners

BUSY = 0.05  # other processes' share of the CPU above which timings are flagged


def _version(dist):
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_info(threads, peers) -> dict:
    """CPU model, ISA, thread counts, versions and the load average. With torch among the
    peers it also sets torch's thread count to ``threads``."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    info = {
        "pyrnn_fast": prf.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "backends": prf.backends(),
        "default_backend": _backends.get_backend(None).name,
        "isa": prf.isa(),
        "flush_subnormals": prf.get_flush_subnormals(),
        "threads": threads,
        "kernel_threads": prf.get_num_threads(),
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "numba": _version("numba"),
        "torch": _version("torch"),
        "jax": _version("jax"),
        "peers": peers,
        "loadavg": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    info["numpy_blas_threads"] = numpy_blas_threads()
    if "torch" in peers:
        import torch

        torch.set_num_threads(threads)
        info["torch_threads"] = torch.get_num_threads()
    return info


def numpy_blas_threads():
    """The thread count of NumPy's bundled BLAS (threadpoolctl, when installed), else None (also
    for a BLAS whose path does not name numpy: a system or conda one)."""
    try:
        import threadpoolctl  # type: ignore[import-untyped]
    except ImportError:
        return None
    pools = [p for p in threadpoolctl.threadpool_info() if p.get("user_api") == "blas" and "numpy" in p["filepath"]]
    return pools[0]["num_threads"] if pools else None


def blas_threads_warning(blas, threads) -> str | None:
    """The warning when NumPy's BLAS (``numpy_blas_threads``) runs another thread count than ours."""
    if blas in (None, threads):
        return None
    return f"WARNING: NumPy's BLAS runs {blas} thread(s), not {threads}"


def ran_line(info, timed) -> str:
    """One line saying which pyrnn_fast backend (and kernel ISA) ran: what CI checks."""
    default = info["default_backend"]
    isa = f" (kernel ISA {info['isa']})" if default == "cpp" else ""
    line = f"pyrnn_fast default backend: {default}{isa}; timed: {', '.join(timed)}"
    if "cpp" not in info["backends"]:
        line += f"  [FALLBACK: the compiled backend is not available: {_backends._core_error}]"
    return line


def print_info(info):
    """The machine lines of ``machine_info``, and a warning when NumPy's BLAS runs another thread count."""
    print(f"pyrnn_fast {info['pyrnn_fast']}  numpy {info['numpy']}  python {info['python']}")
    subnormals = "flushed to 0" if info["flush_subnormals"] else "IEEE"
    print(
        f"backends: {', '.join(info['backends'])} (default {info['default_backend']});  kernel ISA: {info['isa']};  "
        f"subnormals: {subnormals}"
    )
    print(
        f"CPU: {info['cpu_model']} ({info['cpus']} CPUs);  threads: {info['threads']} "
        f"(pyrnn_fast kernel {info['kernel_threads']}"
        + (f", torch {info['torch_threads']}" if "torch_threads" in info else "")
        + (f", NumPy's BLAS {info['numpy_blas_threads']}" if info.get("numpy_blas_threads") else "")
        + ")"
    )
    warning = blas_threads_warning(info.get("numpy_blas_threads"), info["threads"])
    if warning:
        print(warning)
    peers = [f"{name} {info[name]}" for name in ("numba", "torch", "jax") if info[name]]
    print(f"optional: {', '.join(peers) or 'none'};  peers timed: {', '.join(info['peers']) or 'none'}")


def _ratio(r):
    return "-" if r is None else f"{r:.2f}x"


def print_shape(shape, res, load, cell="rnn", repeat=None):
    """One shape's table of `cell` (``benchmark_shape``'s results); a star marks fewer than
    ``repeat`` rounds, and a warning a ``load`` of other processes above BUSY."""
    T, N, D, H = runners.SHAPES[shape]
    fl = {op: gated.flops(cell, shape, op) / 1e9 for op in runners.OPS}
    name = "" if cell == "rnn" else f"{cell.upper()} "
    print(
        f"\n{name}{shape}: T={T} N={N} D={D} H={H}  ({fl['forward']:.3g} GFLOP forward, {fl['fwd+bwd']:.3g} fwd+bwd)"
        "   speed-up = other's time / this row's time"
    )
    head = f"  {'impl':<7}" + "".join(
        f" | {op + ' ms':>13} {'GFLOP/s':>8} {'vs numpy':>8} {'vs peer':>15}" for op in runners.OPS
    )
    print(head)
    print("  " + "-" * (len(head) - 2))
    for impl, ops in res.items():
        cells = []
        for op in runners.OPS:
            m = ops[op]
            peer = "-" if m["best_peer"] is None else f"{_ratio(m['vs_best_peer'])} ({m['best_peer']})"
            ms = f"{m['ms']:.3f}" + ("*" if repeat and m["rounds"] < repeat else "")
            cells.append(f" | {ms:>13} {m['gflops']:>8.1f} {_ratio(m['vs_numpy']):>8} {peer:>15}")
        print(f"  {impl:<7}" + "".join(cells))
    if repeat and any(ops[op]["rounds"] < repeat for ops in res.values() for op in runners.OPS):
        print(f"  * fewer than {repeat} rounds (slow call)")
    if load is not None and load > BUSY:
        print(f"  WARNING: other processes used {100 * load:.0f}% of the CPU meanwhile: these timings are unreliable")


def summarize(res, default) -> dict:
    """The default backend's speed-up over the best of torch, jax and the numpy reference, per op."""
    out = {}
    for op in runners.OPS:
        others = {k: res[k][op]["ms"] for k in ("torch", "jax", "numpy") if k in res and k != default}
        if default not in res or not others:
            continue
        best = min(others, key=lambda k: others[k])
        out[op] = {"vs": best, "among": sorted(others), "speedup": others[best] / res[default][op]["ms"]}
    return out
