"""prf.RNN against torch.nn.RNN (every option), finite differences, and every backend against
the NumPy reference backend."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import pyrnn_fast as prf
from helpers import D_, H_, N_, SELF_TOL, T_, TOL, close, rng_arrays

# --- parity with torch.nn.RNN ----------------------------------------------------------------

LENGTHS = np.array([6, 3, 1, 3, 5])  # a repeat, the maximum T, the minimum 1 (packing forbids 0)


def torch_forward_backward(module, x, h0, lengths, dout, dh_n):
    """out, h_n, dx, dh0 and every parameter's gradient from torch, packed when lengths given."""
    import torch
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    bf = module.batch_first
    xt = torch.tensor(x, requires_grad=True)
    h0t = None if h0 is None else torch.tensor(h0, requires_grad=True)
    module.zero_grad()
    if lengths is None:
        out, h_n = module(xt, h0t)
    else:
        packed = pack_padded_sequence(xt, torch.tensor(lengths), batch_first=bf, enforce_sorted=False)
        out_p, h_n = module(packed, h0t)
        out, _ = pad_packed_sequence(out_p, batch_first=bf, total_length=x.shape[1 if bf else 0])
    loss = (out * torch.tensor(dout)).sum() + (h_n * torch.tensor(dh_n)).sum()
    loss.backward()
    grads = {name: p.grad.numpy() for name, p in module.named_parameters()}
    return (
        out.detach().numpy(),
        h_n.detach().numpy(),
        xt.grad.numpy(),
        None if h0t is None else h0t.grad.numpy(),
        grads,
    )


@pytest.mark.parametrize(
    "num_layers,bidirectional,use_lengths,use_h0,time_major,activation,bias,dtype",
    list(
        itertools.product(
            (1, 3),
            (False, True),
            (False, True),
            (False, True),
            (False, True),
            ("tanh", "relu"),
            (True, False),
            (np.float64, np.float32),
        )
    ),
)
def test_parity_with_torch(num_layers, bidirectional, use_lengths, use_h0, time_major, activation, bias, dtype):
    torch = pytest.importorskip("torch")
    tdtype = {np.float32: torch.float32, np.float64: torch.float64}[dtype]
    torch.manual_seed(0)
    module = torch.nn.RNN(
        D_,
        H_,
        num_layers=num_layers,
        nonlinearity=activation,
        bias=bias,
        batch_first=not time_major,
        bidirectional=bidirectional,
        dtype=tdtype,
    )
    layer = prf.RNN.from_torch(module)
    assert layer.time_major == time_major and layer.dtype == dtype and layer.num_layers == num_layers

    dirs = 2 if bidirectional else 1
    x, h0, dout, dh_n = rng_arrays(
        1, (T_, N_, D_), (num_layers * dirs, N_, H_), (T_, N_, dirs * H_), (num_layers * dirs, N_, H_), dtype=dtype
    )
    if not time_major:
        x, dout = np.ascontiguousarray(x.transpose(1, 0, 2)), np.ascontiguousarray(dout.transpose(1, 0, 2))
    h0 = h0 if use_h0 else None
    lengths = LENGTHS if use_lengths else None

    t_out, t_hn, t_dx, t_dh0, t_grads = torch_forward_backward(module, x, h0, lengths, dout, dh_n)
    out, h_n = layer(x, h0, lengths=lengths)
    dx = layer.backward(dout, dh_n)
    tol = TOL[np.dtype(dtype)]
    for name, ours, theirs in (("out", out, t_out), ("h_n", h_n, t_hn), ("dx", dx, t_dx)):
        assert ours.dtype == dtype, name
        close(ours, theirs, tol, name)
    if use_h0:
        close(layer.dh0, t_dh0, tol, "dh0")
    for l, sfx in itertools.product(range(num_layers), ("", "_reverse") if bidirectional else ("",)):
        k = f"l{l}{sfx}"
        close(layer.grads[f"Wx_{k}"], t_grads[f"weight_ih_{k}"].T, tol, f"dWx_{k}")
        close(layer.grads[f"Wh_{k}"], t_grads[f"weight_hh_{k}"].T, tol, f"dWh_{k}")
        if bias:  # b = b_ih + b_hh, so each receives dL/db
            close(layer.grads[f"b_{k}"], t_grads[f"bias_ih_{k}"], tol, f"db_{k}")
            close(layer.grads[f"b_{k}"], t_grads[f"bias_hh_{k}"], tol, f"db_{k} (hh)")
        else:
            assert f"b_{k}" not in layer.grads and f"b_{k}" not in layer.params


def test_parity_with_torch_when_no_sample_fills_the_batch():
    """Every length < T (the padded tail is all zeros in both), float64, bidirectional, 2 layers."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(1)
    module = torch.nn.RNN(D_, H_, num_layers=2, bidirectional=True, batch_first=True, dtype=torch.float64)
    layer = prf.RNN.from_torch(module)
    lengths = np.array([2, 4, 4, 1, 3])
    x, h0, dout, dh_n = rng_arrays(2, (N_, T_, D_), (4, N_, H_), (N_, T_, 2 * H_), (4, N_, H_))
    t_out, t_hn, t_dx, t_dh0, t_grads = torch_forward_backward(module, x, h0, lengths, dout, dh_n)
    out, h_n = layer(x, h0, lengths)
    dx = layer.backward(dout, dh_n)
    assert not out[:, 4:].any() and not dx[:, 4:].any()
    for name, ours, theirs in (
        ("out", out, t_out),
        ("h_n", h_n, t_hn),
        ("dx", dx, t_dx),
        ("dh0", layer.dh0, t_dh0),
        ("dWh_l1_reverse", layer.grads["Wh_l1_reverse"], t_grads["weight_hh_l1_reverse"].T),
    ):
        close(ours, theirs, TOL[np.dtype(np.float64)], name)


# --- finite differences (float64) ------------------------------------------------------------


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_gradients_match_finite_differences(activation):
    """Two bidirectional layers with dropout between them (training mode), lengths (one of
    them 0), h0 and dh_n: dx, dh0 and every parameter gradient against central differences.
    A layer built with the same seed draws the same dropout mask on its first call, so every
    evaluation of the loss sees the same mask."""
    T, N, D, H = 4, 3, 2, 3
    lengths = np.array([4, 0, 2])
    x, h0, w_out, w_hn = rng_arrays(10, (N, T, D), (4, N, H), (N, T, 2 * H), (4, N, H))
    base = prf.RNN(
        D, H, num_layers=2, bidirectional=True, dropout=0.4, activation=activation, dtype=np.float64, seed=11
    )
    rng = np.random.default_rng(12)
    weights = {k: rng.standard_normal(v.shape) * 0.6 for k, v in base.params.items()}

    def loss(weights, x, h0):
        layer = prf.RNN(
            D, H, num_layers=2, bidirectional=True, dropout=0.4, activation=activation, dtype=np.float64, seed=11
        )
        for k, v in weights.items():
            layer.params[k][...] = v
        out, h_n = layer(x, h0, lengths)
        return float(np.sum(out * w_out) + np.sum(h_n * w_hn)), layer

    _, probe = loss(weights, x, h0)
    assert not np.allclose(probe(x, h0, lengths)[0], probe.eval()(x, h0, lengths)[0]), "dropout drops nothing"
    _, layer = loss(weights, x, h0)
    dx = layer.backward(w_out, w_hn)
    eps = 1e-6

    def numeric(get, set_, shape):
        g = np.zeros(shape)
        for i in np.ndindex(*shape):
            old = get()[i]
            set_(i, old + eps)
            plus = loss(weights, x, h0)[0]
            set_(i, old - eps)
            minus = loss(weights, x, h0)[0]
            set_(i, old)
            g[i] = (plus - minus) / (2 * eps)
        return g

    # central differences: truncation ~eps², rounding ~1e-16·|loss|/eps ~1e-10; relu's kinks
    # are far from these random points. 1e-6 relative is a safe bound that still catches bugs.
    fd_tol = 1e-6
    for k in weights:

        def set_w(i, v, k=k):
            weights[k][i] = v

        close(layer.grads[k], numeric(lambda k=k: weights[k], set_w, weights[k].shape), fd_tol, k)

    def set_x(i, v):
        x[i] = v

    close(dx, numeric(lambda: x, set_x, x.shape), fd_tol, "dx")

    def set_h0(i, v):
        h0[i] = v

    close(layer.dh0, numeric(lambda: h0, set_h0, h0.shape), fd_tol, "dh0")
    assert not dx[1].any() and not dx[2, 2:].any()  # past the lengths x has no influence
    np.testing.assert_array_equal(layer.dh0[:, 1], w_hn[:, 1])  # length 0: h_n = h0


# --- every backend ---------------------------------------------------------------------------


def test_backend_argument():
    x = np.random.default_rng(0).standard_normal((2, 5, 3))
    a = prf.RNN(3, 4, num_layers=2, bidirectional=True, dtype=np.float64, seed=0, backend="numpy")
    b = prf.RNN(3, 4, num_layers=2, bidirectional=True, dtype=np.float64, seed=0)
    close(a(x, lengths=[5, 2])[0], b(x, lengths=[5, 2])[0], SELF_TOL, "out")
    with pytest.raises(ValueError, match="backend"):
        prf.RNN(3, 4, backend="nope")(x)


def test_layer_on_every_backend(backend):
    """Stacked, bidirectional, variable-length forward + backward, and streaming steps, on each
    backend (and instruction set) against the same layer on the NumPy reference backend."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((3, 6, 4))
    dout = rng.standard_normal((3, 6, 2 * 5))
    kw = dict(num_layers=2, bidirectional=True, dtype=np.float64, seed=3)
    ours, ref = prf.RNN(4, 5, backend=backend, **kw), prf.RNN(4, 5, backend="numpy", **kw)
    for layer in (ours, ref):
        layer.out, layer.h_n = layer(x, lengths=[6, 2, 4])
        layer.dx = layer.backward(dout)
    close(ours.out, ref.out, SELF_TOL, "out")
    close(ours.h_n, ref.h_n, SELF_TOL, "h_n")
    close(ours.dx, ref.dx, SELF_TOL, "dx")
    for name in ref.grads:
        close(ours.grads[name], ref.grads[name], SELF_TOL, name)

    kw = dict(num_layers=2, dtype=np.float64, seed=4, stateful=True)
    ours, ref = prf.RNN(4, 5, backend=backend, **kw), prf.RNN(4, 5, backend="numpy", **kw)
    for t in range(x.shape[1]):
        close(ours.step(x[:, t]), ref.step(x[:, t]), SELF_TOL, f"step {t}")
