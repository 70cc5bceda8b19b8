"""examples/vanishing_gradients.py: its fast mode runs and writes a PNG, and the gradient norms
it plots are right (against central finite differences of the loss through the model)."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import numpy as np
import pytest

from helpers import load_script

EXAMPLE = pathlib.Path(__file__).resolve().parent.parent / "examples" / "vanishing_gradients.py"


def test_fast_mode_runs(tmp_path):
    """Trains the four models; writes the PNG when matplotlib is installed (the [bench] extra),
    else runs with --no-plot (the test extras have no matplotlib)."""
    try:
        import matplotlib  # noqa: F401

        plot = True
    except ImportError:
        plot = False
    out = tmp_path / "vg.png"
    args = ["--out", str(out)] if plot else ["--no-plot"]
    r = subprocess.run(
        [sys.executable, str(EXAMPLE), "--fast", *args], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stderr
    if plot:
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for name in ("RNN tanh", "RNN relu", "LSTM", "GRU"):
        assert name in r.stdout


@pytest.mark.parametrize("name", ["RNN tanh", "LSTM", "GRU"])
def test_gradient_norms_match_finite_differences(name):
    ex = load_script(EXAMPLE)
    cls, options = ex.MODELS[name]
    layer = cls(2, 3, dtype=np.float64, seed=1, **options)
    for k in layer.params:  # non-zero biases
        layer.params[k] += np.random.default_rng(2).standard_normal(layer.params[k].shape) * 0.1
    x, _ = ex.adding_batch(np.random.default_rng(3), 2, 6)
    x = x.astype(np.float64)
    C = np.random.default_rng(4).standard_normal((2, 3))  # loss = Σ h_T · C, so dL/dh_T = C

    hs, _ = ex.run_states(layer, x)
    norms = ex.grad_norms(layer, x, C, [0, 2, 5])
    eps = 1e-6
    for d, norm in zip([0, 2, 5], norms):
        t = 5 - d  # perturb h_t, run the remaining steps from it
        grad = np.zeros((2, 3))
        for n, j in np.ndindex(2, 3):
            vals = []
            for sign in (1, -1):
                h = hs[:, t].copy()
                h[n, j] += sign * eps
                if name == "LSTM":  # c_t unchanged: dL/dh_t at fixed c_t, what backward's dh0 is
                    c = ex.run_states(layer, x[:, : t + 1])[1].c_last
                    h_end = ex.run_states(layer, x[:, t + 1 :], h, c)[0][:, -1] if t < 5 else h
                else:
                    h_end = ex.run_states(layer, x[:, t + 1 :], h)[0][:, -1] if t < 5 else h
                vals.append(np.sum(h_end * C))
            grad[n, j] = (vals[0] - vals[1]) / (2 * eps)
        assert abs(np.linalg.norm(grad, axis=1).mean() - norm) < 1e-7 * max(1.0, norm), (name, d)


def test_bad_options_are_refused_before_training(tmp_path, capsys):
    """A length that leaves no room for the two marked steps, an empty batch or model, no
    iterations, or a picture that cannot be written: an error at once (they had ended in a
    traceback, a table of NaN, or a FileNotFoundError after minutes of training)."""
    main = load_script(EXAMPLE).main
    for argv, message in (
        (["--T", "1"], "--T: expected >= 2, got 1"),
        (["--batch", "0"], "--batch: expected >= 1, got 0"),
        (["--hidden", "0"], "--hidden: expected >= 1, got 0"),
        (["--steps", "-1"], "--steps: expected >= 1, got -1"),
        (["--lr", "0"], "--lr: expected > 0, got 0.0"),
        (["--out", str(tmp_path / "missing" / "vg.png")], "--out: cannot write"),
    ):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2
        assert message in capsys.readouterr().err
