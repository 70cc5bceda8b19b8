"""pyrnn_fast next to PyTorch: one OpenMP runtime or two, and what that costs.

A source build of pyrnn_fast links the system's ``libgomp.so.1``; torch's wheel bundles its own
``torch/lib/libgomp.so.1`` with the same soname, so the loader keeps whichever loads first and
both libraries share one runtime (one thread pool). The auditwheel-repaired (manylinux) wheel
bundles ``pyrnn_fast.libs/libgomp-<hash>.so.1.0.0`` under a new soname: next to torch, the
process then has two OpenMP runtimes, each with its own pool, whose idle threads spin for a
while after a parallel region (libgomp's default wait policy) and can take the cores that the
other library's next call needs.

Times the ``typical`` shape (T=100, N=32, D=128, H=256, float32, time-major) forward of
pyrnn_fast (cpp) and of ``torch.nn.RNN``, each on idle cores and right after a call of the
other, with 2 threads for both (or ``--threads``). Each build runs in its own child process:

    python bench/omp_runtimes.py                      # the pyrnn_fast this Python imports
    python bench/omp_runtimes.py DIR [DIR ...]        # one child per DIR holding a pyrnn_fast
                                                      # (e.g. an unpacked wheel), side by side
    python bench/omp_runtimes.py --passes 3 DIR DIR   # alternate them 3 times (the machine's
                                                      # load drifts; compare within a pass)

Needs torch (``pip install torch==2.13.0``). Prints the CPU, the ISA and the libgomp files
each process has mapped.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

CHILD = "--child"


def libgomps() -> list[str]:
    """The OpenMP runtimes this process has mapped (one path per distinct file)."""
    with open("/proc/self/maps") as f:
        paths = {line.split()[-1] for line in f if "libgomp" in line}
    return sorted(paths)


def child(threads: int, rounds: int) -> dict:
    import numpy as np

    import pyrnn_fast as prf
    from pyrnn_fast.benchmark import runners

    # isort: split
    import torch  # after pyrnn_fast, as `import pyrnn_fast` then `import torch` in a script

    prf.set_num_threads(threads)
    torch.set_num_threads(threads)
    shape = runners.SHAPES["typical"]
    x, Wx, Wh, b, h0 = (a.astype(np.float32) for a in runners.make_inputs(shape))
    ours = lambda: prf.rnn_forward(x, Wx, Wh, b, h0, time_major=True, backend="cpp")  # noqa: E731
    theirs = runners.torch_runner(shape, "forward")
    ours(), theirs()

    def timed(fn):
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    t = {"ours idle": [], "ours after torch": [], "torch idle": [], "torch after ours": []}
    for _ in range(rounds):
        time.sleep(0.3)  # every pool's idle threads have gone to sleep
        ours()  # warm
        t["ours idle"].append(timed(ours))
        theirs()
        t["ours after torch"].append(timed(ours))
        time.sleep(0.3)
        theirs()
        t["torch idle"].append(timed(theirs))
        ours()
        t["torch after ours"].append(timed(theirs))
    return {
        "pyrnn_fast": os.path.dirname(prf.__file__),
        "isa": prf.isa(),
        "torch": torch.__version__,
        "libgomp": libgomps(),
        "ms": {k: 1e3 * statistics.median(v) for k, v in t.items()},
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("dirs", nargs="*", help="directories each holding a pyrnn_fast package (default: the installed one)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--passes", type=int, default=1, help="run every DIR this many times, alternating")
    p.add_argument(CHILD, action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.threads, args.rounds)))
        return
    with open("/proc/cpuinfo") as f:
        cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "?")
    print(
        f"CPU: {cpu} ({os.cpu_count()} CPUs); threads {args.threads}; 'typical' forward, "
        f"median of {args.rounds} rounds; ratio = time right after the other library's call / time on idle cores"
    )
    for d in (args.dirs or [None]) * args.passes:
        env = dict(os.environ)
        if d is not None:
            env["PYTHONPATH"] = os.path.abspath(d) + os.pathsep + env.get("PYTHONPATH", "")
        out = subprocess.run(
            [sys.executable, __file__, CHILD, "--threads", str(args.threads), "--rounds", str(args.rounds)],
            env=env,
            capture_output=True,
            text=True,
        )
        if out.returncode:
            sys.exit(out.stderr)
        r = json.loads(out.stdout.splitlines()[-1])
        ms = r["ms"]
        print(
            f"\npyrnn_fast from {r['pyrnn_fast']} (ISA {r['isa']}), torch {r['torch']}; "
            f"load average {os.getloadavg()[0]:.1f}"
        )
        print(f"  OpenMP runtimes mapped ({len(r['libgomp'])}): " + ", ".join(r["libgomp"]))
        print(
            f"  pyrnn_fast: {ms['ours idle']:6.2f} ms idle, {ms['ours after torch']:6.2f} ms right after torch "
            f"({ms['ours after torch'] / ms['ours idle']:.2f}x)"
        )
        print(
            f"  torch:      {ms['torch idle']:6.2f} ms idle, {ms['torch after ours']:6.2f} ms right after pyrnn_fast "
            f"({ms['torch after ours'] / ms['torch idle']:.2f}x)"
        )


if __name__ == "__main__":
    main()
