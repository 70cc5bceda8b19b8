"""The main job's ``--plot``: a PNG bar chart of the default backend's speed-ups (matplotlib,
imported only here)."""

from __future__ import annotations

import pyrnn_fast as prf

from .runners import OPS


def write_plot(results, default, path, threads):
    """A PNG bar chart: the default backend's speed-up over each peer and the numpy reference,
    per shape, forward and fwd+bwd."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    others = [k for k in ("torch", "jax", "numpy") if k != default and any(k in r for r in results.values())]
    shapes = list(results)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    width = 0.8 / max(len(others), 1)
    for ax, op in zip(axes, OPS):
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
