"""The gated cells' whole-model reference (_reference_gated) against central finite
differences in float64, every gradient, and the reference's forward against the textbook
equations written out element by element (one sample, one step at a time)."""

import math

import numpy as np
import pytest

from pyrnn_fast import _reference_gated as R


def lstm_problem(rng, T, N, D, H):
    return {
        "x": rng.standard_normal((T, N, D)),
        "Wx": rng.standard_normal((D, 4 * H)) / np.sqrt(D),
        "Wh": rng.standard_normal((H, 4 * H)) / np.sqrt(H),
        "b": rng.standard_normal(4 * H) * 0.3,
        "h0": rng.standard_normal((N, H)) * 0.5,
        "c0": rng.standard_normal((N, H)) * 0.5,
    }


def gru_problem(rng, T, N, D, H):
    return {
        "x": rng.standard_normal((T, N, D)),
        "Wx": rng.standard_normal((D, 3 * H)) / np.sqrt(D),
        "Wh": rng.standard_normal((H, 3 * H)) / np.sqrt(H),
        "b": rng.standard_normal(3 * H) * 0.3,
        "bh": rng.standard_normal(3 * H) * 0.3,
        "h0": rng.standard_normal((N, H)) * 0.5,
    }


def numeric_gradient(loss, params, name, eps=1e-6):
    out = np.zeros_like(params[name])
    for i in np.ndindex(out.shape):
        orig = params[name][i]
        params[name][i] = orig + eps
        up = loss()
        params[name][i] = orig - eps
        down = loss()
        params[name][i] = orig
        out[i] = (up - down) / (2 * eps)
    return out


@pytest.mark.parametrize("T,N,D,H", [(4, 3, 5, 3), (1, 2, 3, 2), (5, 1, 2, 4)])
def test_lstm_reference_gradients(T, N, D, H):
    rng = np.random.default_rng(T * 10 + H)
    p = lstm_problem(rng, T, N, D, H)
    C, Ch, Cc = rng.standard_normal((T, N, H)), rng.standard_normal((N, H)), rng.standard_normal((N, H))

    def loss():  # Σ hs·C + Σ h_last·Ch + Σ c_last·Cc: dhs = C, dh_last = Ch, dc_last = Cc
        hs, h, c, _, _ = R.lstm_model_forward(p["x"], p["Wx"], p["Wh"], p["b"], p["h0"], p["c0"])
        return float(np.sum(hs * C) + np.sum(h * Ch) + np.sum(c * Cc))

    hs, _, _, cs, gates = R.lstm_model_forward(p["x"], p["Wx"], p["Wh"], p["b"], p["h0"], p["c0"])
    grads = R.lstm_model_backward(C, p["x"], p["Wx"], p["Wh"], hs, cs, gates, p["h0"], p["c0"], Ch, Cc)
    for name, g in zip(("x", "Wx", "Wh", "b", "h0", "c0"), grads):
        np.testing.assert_allclose(g, numeric_gradient(loss, p, name), rtol=1e-6, atol=1e-8, err_msg=f"d{name}")


@pytest.mark.parametrize("T,N,D,H", [(4, 3, 5, 3), (1, 2, 3, 2), (5, 1, 2, 4)])
def test_gru_reference_gradients(T, N, D, H):
    rng = np.random.default_rng(T * 10 + H + 1)
    p = gru_problem(rng, T, N, D, H)
    C, Ch = rng.standard_normal((T, N, H)), rng.standard_normal((N, H))

    def loss():
        hs, h, _ = R.gru_model_forward(p["x"], p["Wx"], p["Wh"], p["b"], p["bh"], p["h0"])
        return float(np.sum(hs * C) + np.sum(h * Ch))

    hs, _, gates = R.gru_model_forward(p["x"], p["Wx"], p["Wh"], p["b"], p["bh"], p["h0"])
    grads = R.gru_model_backward(C, p["x"], p["Wx"], p["Wh"], hs, gates, p["h0"], Ch)
    for name, g in zip(("x", "Wx", "Wh", "b", "bh", "h0"), grads):
        np.testing.assert_allclose(g, numeric_gradient(loss, p, name), rtol=1e-6, atol=1e-8, err_msg=f"d{name}")


def sig(v):
    return 1 / (1 + math.exp(-v))


def test_forward_references_follow_the_equations_elementwise():
    """PyTorch's LSTM and GRU equations (torch.nn.LSTM / torch.nn.GRU docs), written with
    scalars, for one sample: the reference's gate order and reset-after form."""
    rng = np.random.default_rng(3)
    T, D, H = 3, 2, 2
    p = lstm_problem(rng, T, 1, D, H)
    hs, _, _, _, _ = R.lstm_model_forward(p["x"], p["Wx"], p["Wh"], p["b"], p["h0"], p["c0"])
    h, c = list(p["h0"][0]), list(p["c0"][0])
    for t in range(T):
        a = [sum(p["x"][t, 0, d] * p["Wx"][d, k] for d in range(D)) + sum(h[j] * p["Wh"][j, k] for j in range(H))
             + p["b"][k] for k in range(4 * H)]  # fmt: skip
        i = [sig(a[j]) for j in range(H)]
        f = [sig(a[H + j]) for j in range(H)]
        g = [math.tanh(a[2 * H + j]) for j in range(H)]
        o = [sig(a[3 * H + j]) for j in range(H)]
        c = [f[j] * c[j] + i[j] * g[j] for j in range(H)]
        h = [o[j] * math.tanh(c[j]) for j in range(H)]
        np.testing.assert_allclose(hs[t, 0], h, rtol=1e-13)

    p = gru_problem(rng, T, 1, D, H)
    hs, _, _ = R.gru_model_forward(p["x"], p["Wx"], p["Wh"], p["b"], p["bh"], p["h0"])
    h = list(p["h0"][0])
    for t in range(T):
        u = [sum(p["x"][t, 0, d] * p["Wx"][d, k] for d in range(D)) + p["b"][k] for k in range(3 * H)]
        v = [sum(h[j] * p["Wh"][j, k] for j in range(H)) + p["bh"][k] for k in range(3 * H)]
        r = [sig(u[j] + v[j]) for j in range(H)]
        z = [sig(u[H + j] + v[H + j]) for j in range(H)]
        n = [math.tanh(u[2 * H + j] + r[j] * v[2 * H + j]) for j in range(H)]
        h = [(1 - z[j]) * n[j] + z[j] * h[j] for j in range(H)]
        np.testing.assert_allclose(hs[t, 0], h, rtol=1e-13)


def test_sigmoid_is_accurate_in_both_tails():
    x = np.array([-800.0, -40.0, -1.0, 0.0, 1.0, 40.0, 800.0, np.nan])
    with np.errstate(over="raise"):  # no overflow on the way
        s = R.sigmoid(x)
    expected = [0.0, math.exp(-40) / (1 + math.exp(-40)), sig(-1.0), 0.5, sig(1.0), 1.0, 1.0]
    np.testing.assert_allclose(s[:-1], expected, rtol=1e-15)
    assert np.isnan(s[-1])
