"""Why gated cells: the vanilla RNN's gradients vanish over long sequences, the LSTM's and the
GRU's do not. Trains four models with pyrnn_fast on the adding problem, whose answer depends
on a step near the start of a long sequence, and saves one PNG with (a) the norm of
dLoss/dh_t against the distance from the loss, at initialisation and after training, and (b)
the training curves.

    python examples/vanishing_gradients.py                # T = 100, ~2 min on 2 cores
    python examples/vanishing_gradients.py --fast         # a tiny run (what the tests do)

The adding problem (Hochreiter & Schmidhuber 1997): each step carries (value, marker) with
value ~ U(0, 1); two steps are marked, one among the first 10, one in the second half; the
target is the sum of the two marked values. Always answering the mean (1.0) gives an MSE of
1/6 ~ 0.167; a model that learned the task goes well below it.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

import numpy as np

import pyrnn_fast as prf

MODELS = {  # name: (layer class, options)
    "RNN tanh": (prf.RNN, {"activation": "tanh"}),
    "RNN relu": (prf.RNN, {"activation": "relu"}),
    "LSTM": (prf.LSTM, {}),
    "GRU": (prf.GRU, {}),
}


def adding_batch(rng, N, T):
    x = np.zeros((N, T, 2), np.float32)
    x[:, :, 0] = rng.uniform(0, 1, (N, T))
    first = rng.integers(0, min(10, T // 2), N)
    second = rng.integers(T // 2, T, N)
    x[np.arange(N), first, 1] = x[np.arange(N), second, 1] = 1
    y = x[np.arange(N), first, 0] + x[np.arange(N), second, 0]
    return x, y[:, None]


def run_states(layer, x, h0=None, c0=None):
    """The one-layer model's hidden states over x (N, T, D) from (h0, c0), with what backward
    needs: (hs, extra) by the functional API on the layer's own parameters."""
    p = [layer.params[f"{k}_l0"] for k in layer._param_kinds]
    if isinstance(layer, prf.LSTM):
        out = prf.lstm_forward(x, *p, h0=h0, c0=c0)
        return out.hs, out
    if isinstance(layer, prf.GRU):
        out = prf.gru_forward(x, *p, h0=h0)
        return out.hs, out
    hs, _ = prf.rnn_forward(x, *p, h0=h0, activation=layer.activation)
    return hs, None


def grad_norms(layer, x, dh_T, distances):
    """‖dL/dh_t‖ (mean over the batch) for t = T - 1 - d, d in `distances`, where the loss
    depends only on h_T (its gradient dh_T): the backward of steps t+1 .. T-1 started from
    h_t (and c_t) gives dL/dh_t as its dh0."""
    hs, extra = run_states(layer, x)
    cs = extra.workspace._cs if isinstance(layer, prf.LSTM) else None  # cell states (T, N, H), time-major
    p = [layer.params[f"{k}_l0"] for k in layer._param_kinds]
    Wx, Wh = p[0], p[1]
    T = x.shape[1]
    out = []
    for d in distances:
        t = T - 1 - d
        xs, h_t = x[:, t + 1 :], hs[:, t]
        if isinstance(layer, prf.LSTM):
            c_t = cs[t]
            sub_hs, sub = run_states(layer, xs, h_t, c_t)
            g = prf.lstm_backward(np.zeros_like(sub_hs), xs, Wx, Wh, sub_hs, sub.workspace, h_t, c_t, dh_last=dh_T)
        elif isinstance(layer, prf.GRU):
            sub_hs, sub = run_states(layer, xs, h_t)
            g = prf.gru_backward(np.zeros_like(sub_hs), xs, Wx, Wh, sub_hs, sub.workspace, h_t, dh_last=dh_T)
        else:
            sub_hs, _ = run_states(layer, xs, h_t)
            g = prf.rnn_backward(
                np.zeros_like(sub_hs), xs, Wx, Wh, sub_hs, h_t, dh_last=dh_T, activation=layer.activation
            )
        out.append(float(np.linalg.norm(g.dh0, axis=1).mean()))
    return np.array(out)


class Model:
    """A one-layer recurrent layer and a linear read-out of its last state, trained by Adam."""

    def __init__(self, cls, options, hidden, seed):
        self.layer = cls(2, hidden, seed=seed, **options)
        rng = np.random.default_rng(seed)
        self.params = dict(self.layer.params, V=(rng.standard_normal((hidden, 1)) / hidden**0.5).astype(np.float32))
        self.params["c"] = np.zeros(1, np.float32)
        self.m = {k: np.zeros_like(v) for k, v in self.params.items()}
        self.v = {k: np.zeros_like(v) for k, v in self.params.items()}
        self.t = 0

    def loss_and_dh(self, x, y):
        """The MSE, the gradient w.r.t. h_T, and the read-out's gradients."""
        out, _ = self.layer(x)
        h_T = out[:, -1]
        err = h_T @ self.params["V"] + self.params["c"] - y
        d = 2 * err / err.size
        return float(np.mean(err**2)), d @ self.params["V"].T, {"V": h_T.T @ d, "c": d.sum(axis=0)}, out

    def train_step(self, x, y, lr, clip=1.0):
        loss, dh_T, grads, out = self.loss_and_dh(x, y)
        dout = np.zeros_like(out)
        dout[:, -1] = dh_T
        self.layer.backward(dout)
        grads.update(self.layer.grads)
        norm = np.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in grads.values()))
        scale = min(1.0, clip / (norm + 1e-12))  # gradient-norm clipping
        self.t += 1
        for k, g in grads.items():  # Adam, in place (the layer's params are the same arrays)
            g = g * scale
            self.m[k] = 0.9 * self.m[k] + 0.1 * g
            self.v[k] = 0.999 * self.v[k] + 0.001 * g * g
            mh, vh = self.m[k] / (1 - 0.9**self.t), self.v[k] / (1 - 0.999**self.t)
            self.params[k] -= (lr * mh / (np.sqrt(vh) + 1e-8)).astype(np.float32)
        return loss


def progress(name, i, n, loss, start):
    bar = "#" * int(30 * i / n)
    sys.stderr.write(f"\r{name:>8} [{bar:<30}] {i}/{n} loss {loss:.4f} ({time.perf_counter() - start:.0f} s)")
    if i == n:
        sys.stderr.write("\n")
    sys.stderr.flush()


# The README's picture, wherever the script is run from.
DEFAULT_OUT = pathlib.Path(__file__).resolve().parent.parent / "docs" / "vanishing_gradients.png"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--T", type=int, default=100, help="sequence length, >= 2 (default 100)")
    ap.add_argument("--hidden", type=int, default=64, help="hidden units (default 64)")
    ap.add_argument("--batch", type=int, default=64, help="sequences per iteration (default 64)")
    ap.add_argument("--steps", type=int, default=2000, help="training iterations per model (default 2000)")
    ap.add_argument("--lr", type=float, default=3e-3, help="Adam's learning rate (default 3e-3)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(DEFAULT_OUT), help=f"the PNG to write (default {DEFAULT_OUT})")
    ap.add_argument(
        "--fast", action="store_true", help="a tiny run: T 20, hidden 8, batch 16, 20 steps (these four set so)"
    )
    ap.add_argument("--no-plot", action="store_true", help="train and print the summary only (no matplotlib)")
    args = ap.parse_args(argv)
    if args.fast:
        args.T, args.hidden, args.batch, args.steps = 20, 8, 16, 20
    for name, least in (("T", 2), ("hidden", 1), ("batch", 1), ("steps", 1)):  # two marked steps need T >= 2
        if getattr(args, name) < least:
            ap.error(f"--{name}: expected >= {least}, got {getattr(args, name)}")
    if not args.lr > 0:
        ap.error(f"--lr: expected > 0, got {args.lr}")
    if not args.no_plot:  # checked before minutes of training, not when the picture is written
        folder = pathlib.Path(args.out).resolve().parent
        if not folder.is_dir() or pathlib.Path(args.out).is_dir():
            ap.error(f"--out: cannot write {args.out!r} (is its folder there?)")
    plt = None
    if not args.no_plot:
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            sys.exit("the picture needs matplotlib: pip install matplotlib (or the [bench] extra), or pass --no-plot")

    rng = np.random.default_rng(args.seed)
    x_probe, y_probe = adding_batch(rng, args.batch, args.T)
    distances = np.unique(np.linspace(0, args.T - 1, min(args.T, 25)).astype(int))
    summary, curves = [], []
    for name, (cls, options) in MODELS.items():
        model = Model(cls, options, args.hidden, args.seed)
        _, dh_T, _, _ = model.loss_and_dh(x_probe, y_probe)
        initial = grad_norms(model.layer, x_probe, dh_T, distances)
        losses, start = [], time.perf_counter()
        for i in range(1, args.steps + 1):
            losses.append(model.train_step(*adding_batch(rng, args.batch, args.T), args.lr))
            if i % max(1, args.steps // 100) == 0 or i == args.steps:
                progress(name, i, args.steps, np.mean(losses[-50:]), start)
        seconds = time.perf_counter() - start
        _, dh_T, _, _ = model.loss_and_dh(x_probe, y_probe)
        trained = grad_norms(model.layer, x_probe, dh_T, distances)
        curves.append((name, initial, trained, losses))
        test_loss = model.loss_and_dh(*adding_batch(rng, 512, args.T))[0]
        summary.append((name, initial[-1] / initial[0], trained[-1] / trained[0], test_loss, seconds))
    if plt is not None:
        plot(plt, curves, distances, args)
    print("\n‖∂L/∂h_0‖ / ‖∂L/∂h_T-1‖ at initialisation and after training; test MSE (baseline 0.167)")
    print(f"{'model':<9} {'at init':>9} {'trained':>9} {'test MSE':>9} {'train s':>8}")
    for name, ratio0, ratio1, loss, sec in summary:
        print(f"{name:<9} {ratio0:>9.1e} {ratio1:>9.1e} {loss:>9.4f} {sec:>8.1f}")
    return summary


def plot(plt, curves, distances, args):
    """(a) the gradient norms through time, dotted at initialisation; (b) the training curves."""
    fig, (ax_g, ax_l) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, initial, trained, losses in curves:
        (line,) = ax_g.semilogy(distances, trained / trained[0], label=f"{name}, trained")
        ax_g.semilogy(distances, initial / initial[0], ls=":", color=line.get_color(), label=f"{name}, at init")
        smooth = np.convolve(losses, np.ones(25) / 25, mode="valid") if len(losses) >= 25 else losses
        ax_l.plot(smooth, label=name, color=line.get_color())
    ax_g.set(
        xlabel="distance T - 1 - t from the loss (steps)",
        ylabel="‖∂L/∂h_t‖ / ‖∂L/∂h_{T-1}‖",
        title=f"(a) gradient through time (dotted: at initialisation), T = {args.T}",
    )
    ax_l.axhline(1 / 6, color="gray", ls="--", lw=1, label="always 1.0 (MSE 1/6)")
    ax_l.set(
        xlabel="iteration", ylabel="MSE (moving average)", title="(b) training on the adding problem", ylim=(0, 0.35)
    )
    ax_g.legend(fontsize=7, ncol=2)
    ax_l.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out, dpi=90)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
