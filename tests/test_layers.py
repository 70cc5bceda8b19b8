"""The layers: prf.RNN against torch.nn.RNN, finite differences, state, streaming and lengths,
prf.TimeRNN against a textbook implementation, and the interop/save/load helpers."""
from __future__ import annotations

import itertools
import subprocess
import sys

import numpy as np
import pytest

import pyrnn_fast as prf

# Tolerances, relative to the largest magnitude of the expected array:
# - float64 vs torch float64: both compute the same sums in different orders (torch's MKL/
#   own GEMMs vs ours) and their own tanh; rounding errors are ~1e-15 per operation and grow
#   by a small factor through 3 stacked layers and T steps of a contracting recurrence.
#   1e-10 leaves orders of magnitude of margin yet would catch any real bug (O(1e-3) or more).
# - float32 vs torch float32: the same argument with eps = 6e-8; each side is off by ~1e-6 on
#   these small sums, so 1e-5 is the bound (the one DESIGN.md promises for float32).
# - Two runs of our own code that group the same samples differently (segments vs one sample
#   alone): only GEMM blocking differs, so float64 agrees to 1e-12.
TOL = {np.dtype(np.float64): 1e-10, np.dtype(np.float32): 1e-5}
SELF_TOL = 1e-12


def close(actual, expected, tol, what=""):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape}, expected {expected.shape}"
    if expected.size == 0:
        return
    scale = max(float(np.max(np.abs(expected))), 1e-30)
    err = float(np.max(np.abs(actual.astype(np.float64) - expected.astype(np.float64)))) / scale
    assert err <= tol, f"{what}: relative error {err:.2e} > {tol:.0e}"


def rng_arrays(seed, *shapes, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(dtype) for s in shapes]


# --- parity with torch.nn.RNN ------------------------------------------------------------

T_, N_, D_, H_ = 6, 5, 3, 4
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
    return (out.detach().numpy(), h_n.detach().numpy(), xt.grad.numpy(),
            None if h0t is None else h0t.grad.numpy(), grads)


@pytest.mark.parametrize("num_layers,bidirectional,use_lengths,use_h0,time_major,activation,bias,dtype",
                         list(itertools.product((1, 3), (False, True), (False, True), (False, True), (False, True),
                                                ("tanh", "relu"), (True, False), (np.float64, np.float32))))
def test_parity_with_torch(num_layers, bidirectional, use_lengths, use_h0, time_major, activation, bias, dtype):
    torch = pytest.importorskip("torch")
    tdtype = {np.float32: torch.float32, np.float64: torch.float64}[dtype]
    torch.manual_seed(0)
    module = torch.nn.RNN(D_, H_, num_layers=num_layers, nonlinearity=activation, bias=bias,
                          batch_first=not time_major, bidirectional=bidirectional, dtype=tdtype)
    layer = prf.RNN.from_torch(module)
    assert layer.time_major == time_major and layer.dtype == dtype and layer.num_layers == num_layers

    dirs = 2 if bidirectional else 1
    x, h0, dout, dh_n = rng_arrays(1, (T_, N_, D_), (num_layers * dirs, N_, H_), (T_, N_, dirs * H_),
                                   (num_layers * dirs, N_, H_), dtype=dtype)
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
    for name, ours, theirs in (("out", out, t_out), ("h_n", h_n, t_hn), ("dx", dx, t_dx), ("dh0", layer.dh0, t_dh0),
                               ("dWh_l1_reverse", layer.grads["Wh_l1_reverse"], t_grads["weight_hh_l1_reverse"].T)):
        close(ours, theirs, TOL[np.dtype(np.float64)], name)


def test_to_torch_round_trip():
    torch = pytest.importorskip("torch")
    layer = prf.RNN(D_, H_, num_layers=2, bidirectional=True, activation="relu", time_major=True,
                    dtype=np.float64, seed=3)
    for k, v in layer.params.items():  # non-zero biases, so that their export is tested
        if k.startswith("b_"):
            v[...] = np.random.default_rng(4).standard_normal(v.shape)
    module = layer.to_torch()
    assert isinstance(module, torch.nn.RNN) and module.batch_first is False and module.nonlinearity == "relu"
    assert module.weight_ih_l0.dtype == torch.float64 and module.bidirectional and module.num_layers == 2
    assert not module.bias_hh_l1_reverse.detach().numpy().any()
    np.testing.assert_array_equal(module.weight_ih_l1.detach().numpy(), layer.params["Wx_l1"].T)
    np.testing.assert_array_equal(module.bias_ih_l0_reverse.detach().numpy(), layer.params["b_l0_reverse"])
    x = rng_arrays(5, (T_, N_, D_))[0]
    out, h_n = layer(x)
    t_out, t_hn = module(torch.tensor(x))
    close(out, t_out.detach().numpy(), TOL[np.dtype(np.float64)], "out")
    close(h_n, t_hn.detach().numpy(), TOL[np.dtype(np.float64)], "h_n")
    back = prf.RNN.from_torch(module)
    for k, v in layer.params.items():
        np.testing.assert_array_equal(back.params[k], v)
    assert (back.time_major, back.activation, back.dtype) == (True, "relu", np.float64)
    assert not layer.eval().to_torch().training and layer.train().to_torch().training


def test_from_torch_folds_biases_and_rejects_other_modules():
    torch = pytest.importorskip("torch")
    torch.manual_seed(2)
    module = torch.nn.RNN(3, 4, dtype=torch.float64).eval()
    layer = prf.RNN.from_torch(module)
    expected = (module.bias_ih_l0 + module.bias_hh_l0).detach().numpy()
    np.testing.assert_allclose(layer.params["b_l0"], expected, rtol=1e-15)
    assert layer.training is False and layer.time_major is True
    with pytest.raises(TypeError, match="module"):
        prf.RNN.from_torch(torch.nn.GRU(3, 4))
    with pytest.raises(TypeError, match="dtype"):
        prf.RNN.from_torch(torch.nn.RNN(3, 4, dtype=torch.float16))


def test_import_does_not_import_torch(tmp_path):
    code = ("import sys, pyrnn_fast as prf; prf.RNN(2, 3); "
            "assert 'torch' not in sys.modules and 'numba' not in sys.modules, 'imported'")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr


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
    base = prf.RNN(D, H, num_layers=2, bidirectional=True, dropout=0.4, activation=activation,
                   dtype=np.float64, seed=11)
    rng = np.random.default_rng(12)
    weights = {k: rng.standard_normal(v.shape) * 0.6 for k, v in base.params.items()}

    def loss(weights, x, h0):
        layer = prf.RNN(D, H, num_layers=2, bidirectional=True, dropout=0.4, activation=activation,
                        dtype=np.float64, seed=11)
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
    assert not dx[1].any() and not dx[2, 2:].any()   # past the lengths x has no influence
    np.testing.assert_array_equal(layer.dh0[:, 1], w_hn[:, 1])  # length 0: h_n = h0


# --- dropout, modes, seeds -------------------------------------------------------------------

def test_dropout_only_in_training_and_reproducible():
    x = rng_arrays(0, (4, 5, 3))[0]
    a = prf.RNN(3, 6, num_layers=3, dropout=0.5, seed=1)
    b = prf.RNN(3, 6, num_layers=3, dropout=0.5, seed=1)
    plain = prf.RNN(3, 6, num_layers=3, seed=1)
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], plain.params[k])  # dropout draws from its own stream
    out_a, _ = a(x)
    out_b, _ = b(x)
    np.testing.assert_array_equal(out_a, out_b)
    out_plain, _ = plain(x)
    assert not np.allclose(out_a, out_plain)
    out_eval, _ = a.eval()(x)
    np.testing.assert_array_equal(out_eval, out_plain)
    assert a.train() is a and a.training


def test_dropout_one_layer_is_a_no_op_and_probability_one_zeroes():
    x = rng_arrays(0, (2, 3, 3))[0]
    one = prf.RNN(3, 4, dropout=0.9, seed=0)
    ref = prf.RNN(3, 4, seed=0)
    np.testing.assert_array_equal(one(x)[0], ref(x)[0])
    full = prf.RNN(3, 4, num_layers=2, dropout=1.0, bias=False, seed=0)
    out, _ = full(x)
    assert not out.any()  # layer 1 sees zeros, has no bias, and starts from zeros


# --- state: stateful chunks, step, lengths -----------------------------------------------------

@pytest.mark.parametrize("time_major", [False, True])
def test_stateful_chunks_equal_one_long_sequence(time_major):
    T, N, D, H = 9, 3, 2, 5
    x, h0 = rng_arrays(20, (N, T, D), (2, N, H))
    full = prf.RNN(D, H, num_layers=2, dtype=np.float64, seed=5)
    chunked = prf.RNN(D, H, num_layers=2, dtype=np.float64, seed=5, stateful=True, time_major=time_major)
    out_full, hn_full = full(x, h0)
    outs, t0 = [], 0
    for i, t1 in enumerate((4, 7, 9)):
        chunk = x[:, t0:t1] if not time_major else np.ascontiguousarray(x[:, t0:t1].transpose(1, 0, 2))
        out, h_n = chunked(chunk, h0 if i == 0 else None)
        outs.append(out if not time_major else out.transpose(1, 0, 2))
        np.testing.assert_array_equal(chunked.state, h_n)
        t0 = t1
    close(np.concatenate(outs, axis=1), out_full, SELF_TOL, "out")
    close(h_n, hn_full, SELF_TOL, "h_n")

    # truncated BPTT: the last chunk's backward is that of a plain layer started from the carried state
    plain = prf.RNN(D, H, num_layers=2, dtype=np.float64, seed=5, time_major=time_major)
    carried = rng_arrays(21, (2, N, H))[0]
    chunked.state = carried.copy()
    last = x[:, 7:] if not time_major else np.ascontiguousarray(x[:, 7:].transpose(1, 0, 2))
    dout = rng_arrays(22, last.shape[:2] + (H,))[0]
    chunked(last)
    dx = chunked.backward(dout)
    plain(last, carried)
    np.testing.assert_array_equal(dx, plain.backward(dout))
    for k in plain.grads:
        np.testing.assert_array_equal(chunked.grads[k], plain.grads[k])
    np.testing.assert_array_equal(chunked.dh0, plain.dh0)

    chunked.reset_state()
    assert chunked.state is None
    np.testing.assert_array_equal(chunked(x[:, :4] if not time_major else x[:, :4].transpose(1, 0, 2))[1],
                                  full(x[:, :4])[1])
    with pytest.raises(ValueError, match="reset_state"):
        chunked(np.zeros((N + 1, 2, D)) if not time_major else np.zeros((2, N + 1, D)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_step_equals_whole_sequence(dtype):
    T, N, D, H = 7, 2, 3, 4
    x = rng_arrays(30, (N, T, D), dtype=dtype)[0]
    whole = prf.RNN(D, H, num_layers=3, activation="relu", dtype=dtype, seed=6)
    out, h_n = whole(x)
    stream = prf.RNN(D, H, num_layers=3, activation="relu", dtype=dtype, seed=6, stateful=True)
    tol = SELF_TOL if dtype == np.float64 else 1e-6  # same arithmetic, other GEMM blocking
    first, _ = stream(x[:, :3])                  # __call__ and step share the state
    state = stream.state
    for t in range(3, T):
        y = stream.step(x[:, t])
        assert y.shape == (N, H) and y.dtype == dtype
        close(y, out[:, t], tol, f"step {t}")
        assert not np.shares_memory(y, stream.state)
    assert stream.state is state                 # updated in place, never reallocated
    close(stream.state, h_n, tol, "state")
    close(first, out[:, :3], tol, "first chunk")

    fresh = prf.RNN(D, H, num_layers=3, activation="relu", dtype=dtype, seed=6, stateful=True)
    ys = np.stack([fresh.step(x[:, t]) for t in range(T)], axis=1)
    close(ys, out, tol, "steps from zeros")


def test_step_errors():
    with pytest.raises(ValueError, match="bidirectional"):
        prf.RNN(2, 3, bidirectional=True, stateful=True).step(np.zeros((1, 2)))
    with pytest.raises(ValueError, match="stateful"):
        prf.RNN(2, 3).step(np.zeros((1, 2)))
    layer = prf.RNN(2, 3, stateful=True)
    with pytest.raises(ValueError, match="x_t"):
        layer.step(np.zeros((1, 5)))
    layer.step(np.zeros((1, 2)))
    with pytest.raises(ValueError, match="reset_state"):
        layer.step(np.zeros((2, 2)))


@pytest.mark.parametrize("time_major", [False, True])
def test_lengths_equal_each_sample_alone(time_major):
    T, N, D, H = 6, 6, 3, 4
    lengths = np.array([0, 5, 2, 5, 6, 3])
    x, h0, dout, dh_n = rng_arrays(40, (N, T, D), (4, N, H), (N, T, 2 * H), (4, N, H))
    layer = prf.RNN(D, H, num_layers=2, bidirectional=True, dtype=np.float64, seed=7, time_major=time_major)

    def tm(a):
        return np.ascontiguousarray(a.transpose(1, 0, 2)) if time_major else a

    before = (x.copy(), h0.copy(), lengths.copy())
    out, h_n = layer(tm(x), h0, lengths)
    for a, b in zip((x, h0, lengths), before):  # inputs are never modified
        np.testing.assert_array_equal(a, b)
    out = tm(out)
    dx = tm(layer.backward(tm(dout), dh_n))
    grads = {k: v.copy() for k, v in layer.grads.items()}
    dh0 = layer.dh0.copy()
    summed = {k: np.zeros_like(v) for k, v in grads.items()}
    for n, L in enumerate(lengths):
        o, hn = layer(tm(x[n:n + 1, :L]), h0[:, n:n + 1])
        close(out[n:n + 1, :L], tm(o), SELF_TOL, f"out[{n}]")
        assert not out[n, L:].any()
        close(h_n[:, n:n + 1], hn, SELF_TOL, f"h_n[{n}]")
        d = layer.backward(tm(dout[n:n + 1, :L]), dh_n[:, n:n + 1])
        close(dx[n:n + 1, :L], tm(d), SELF_TOL, f"dx[{n}]")
        assert not dx[n, L:].any()
        close(dh0[:, n:n + 1], layer.dh0, SELF_TOL, f"dh0[{n}]")
        for k in summed:
            summed[k] += layer.grads[k]
    for k in grads:
        close(grads[k], summed[k], SELF_TOL, k)
    np.testing.assert_array_equal(h_n[:, 0], h0[:, 0])


def test_lengths_validation():
    layer = prf.RNN(2, 3)
    x = np.zeros((3, 4, 2), np.float32)
    for bad, err, match in (([1, 2], ValueError, r"\(N,\)"), ([1, -1, 2], ValueError, "0 <= lengths"),
                            ([1, 5, 2], ValueError, "0 <= lengths"), ([1.0, 2.0, 3.0], TypeError, "integer"),
                            ([[1, 2, 3]], ValueError, r"\(N,\)")):
        with pytest.raises(err, match=match):
            layer(x, lengths=bad)
    out, h_n = layer(x, lengths=np.array([0, 4, 2], np.uint8))
    assert out.shape == (3, 4, 3)


# --- shapes, dtypes, edge cases, errors --------------------------------------------------------

def test_shapes_layout_and_dtype_casting():
    layer = prf.RNN(3, 4, num_layers=2, bidirectional=True, seed=0)
    x = np.random.default_rng(0).standard_normal((5, 7, 3))  # float64 in, float32 layer
    out, h_n = layer(x)
    assert out.shape == (5, 7, 8) and h_n.shape == (4, 5, 4)
    assert out.dtype == np.float32 and h_n.dtype == np.float32
    dx = layer.backward(np.ones_like(out))
    assert dx.shape == x.shape and dx.dtype == np.float32
    tm = prf.RNN(3, 4, num_layers=2, bidirectional=True, seed=0, time_major=True)
    out_tm, h_n_tm = tm(x.transpose(1, 0, 2))
    np.testing.assert_array_equal(out_tm, out.transpose(1, 0, 2))
    np.testing.assert_array_equal(h_n_tm, h_n)
    # the top layer's last forward state is out[:, -1, :H]; the reverse's is out[:, 0, H:]
    np.testing.assert_array_equal(h_n[2], out[:, -1, :4])
    np.testing.assert_array_equal(h_n[3], out[:, 0, 4:])


def test_zero_length_sequence_and_empty_batch():
    layer = prf.RNN(3, 4, num_layers=2, bidirectional=True, dtype=np.float64, seed=0)
    h0 = np.random.default_rng(0).standard_normal((4, 2, 4))
    out, h_n = layer(np.zeros((2, 0, 3)), h0)
    assert out.shape == (2, 0, 8)
    np.testing.assert_array_equal(h_n, h0)
    dh_n = np.ones((4, 2, 4))
    dx = layer.backward(np.zeros((2, 0, 8)), dh_n)
    assert dx.shape == (2, 0, 3)
    np.testing.assert_array_equal(layer.dh0, dh_n)
    assert not any(g.any() for g in layer.grads.values())
    out, h_n = layer(np.zeros((2, 3, 3)), h0, lengths=[0, 0])
    assert not out.any()
    np.testing.assert_array_equal(h_n, h0)
    out, h_n = layer(np.zeros((0, 3, 3)))
    assert out.shape == (0, 3, 8) and h_n.shape == (4, 0, 4)


def test_grads_are_overwritten_in_place_not_accumulated():
    layer = prf.RNN(2, 3, num_layers=2, seed=0)
    x = np.random.default_rng(0).standard_normal((2, 4, 2))
    out, _ = layer(x)
    ids = {k: id(v) for k, v in layer.grads.items()}
    layer.backward(np.ones_like(out))
    first = {k: v.copy() for k, v in layer.grads.items()}
    layer.backward(np.ones_like(out))
    for k, v in layer.grads.items():
        np.testing.assert_array_equal(v, first[k])
        assert id(v) == ids[k]
    assert set(layer.grads) == set(layer.params)


def test_no_bias_and_param_names():
    layer = prf.RNN(2, 3, num_layers=2, bidirectional=True, bias=False)
    assert list(layer.params) == ["Wx_l0", "Wh_l0", "Wx_l0_reverse", "Wh_l0_reverse",
                                  "Wx_l1", "Wh_l1", "Wx_l1_reverse", "Wh_l1_reverse"]
    assert layer.params["Wx_l1"].shape == (6, 3)
    assert layer.num_params() == 2 * (2 * 3 + 9) + 2 * (6 * 3 + 9)


def test_initialisation_and_repr():
    layer = prf.RNN(5, 8, num_layers=2, bidirectional=True, seed=42)
    limit = np.sqrt(6 / (5 + 8))
    assert np.abs(layer.params["Wx_l0"]).max() <= limit and np.abs(layer.params["Wx_l0"]).max() > limit / 2
    assert np.abs(layer.params["Wx_l1"]).max() <= np.sqrt(6 / (16 + 8))
    Wh = layer.params["Wh_l1_reverse"].astype(np.float64)
    np.testing.assert_allclose(Wh.T @ Wh, np.eye(8), atol=1e-6)
    assert not layer.params["b_l0"].any()
    assert all(v.dtype == np.float32 for v in layer.params.values())
    again = prf.RNN(5, 8, num_layers=2, bidirectional=True, seed=42)
    other = prf.RNN(5, 8, num_layers=2, bidirectional=True, seed=43)
    np.testing.assert_array_equal(again.params["Wh_l0"], layer.params["Wh_l0"])
    assert not np.array_equal(other.params["Wh_l0"], layer.params["Wh_l0"])
    assert layer.num_params() == 2 * (5 * 8 + 64 + 8) + 2 * (16 * 8 + 64 + 8)
    text = repr(layer)
    assert "Wx_l1_reverse (16, 8)" in text and "Wh_l0 (8, 8)" in text and f"{layer.num_params():,}" in text
    assert "num_layers=2" in text and "bidirectional=True" in text


def test_save_and_load(tmp_path):
    layer = prf.RNN(3, 4, num_layers=2, bidirectional=True, activation="relu", bias=False, dropout=0.25,
                    time_major=True, stateful=True, dtype=np.float64, seed=9)
    path = tmp_path / "rnn.npz"
    layer.save(path)
    back = prf.RNN.load(path)
    assert back._config() == layer._config()
    for k, v in layer.params.items():
        np.testing.assert_array_equal(back.params[k], v)
        assert back.params[k].dtype == np.float64
    x = np.random.default_rng(0).standard_normal((5, 2, 3))
    np.testing.assert_array_equal(back.eval()(x)[0], layer.eval()(x)[0])
    with np.load(path, allow_pickle=False) as f:  # a plain .npz: config + one array per weight
        assert set(f.files) == {"__config__"} | set(layer.params)


@pytest.mark.parametrize("bias", [True, False])
def test_from_keras_weights(bias):
    rng = np.random.default_rng(0)
    kernel, rec, b = rng.standard_normal((3, 5)), rng.standard_normal((5, 5)) * 0.3, rng.standard_normal(5)
    weights = [kernel.astype(np.float32), rec.astype(np.float32)] + ([b.astype(np.float32)] if bias else [])
    layer = prf.RNN.from_keras_weights(weights)
    assert layer.dtype == np.float32 and layer.num_layers == 1 and layer.bias == bias
    x = rng.standard_normal((2, 4, 3)).astype(np.float32)
    out, h_n = layer(x)
    hs, h_last = prf.rnn_forward(x, *weights)
    np.testing.assert_array_equal(out, hs)
    np.testing.assert_array_equal(h_n[0], h_last)
    with pytest.raises(ValueError, match="recurrent_kernel"):
        prf.RNN.from_keras_weights([kernel, rec[:4]])
    with pytest.raises(ValueError, match="bias"):
        prf.RNN.from_keras_weights([kernel, rec, b[:2]])
    with pytest.raises(ValueError, match="weights"):
        prf.RNN.from_keras_weights([kernel])


def test_bad_input_errors():
    with pytest.raises(ValueError, match="activation"):
        prf.RNN(2, 3, activation="sigmoid")
    with pytest.raises(TypeError, match="dtype"):
        prf.RNN(2, 3, dtype=np.float16)
    with pytest.raises(ValueError, match="num_layers"):
        prf.RNN(2, 3, num_layers=0)
    with pytest.raises(ValueError, match="dropout"):
        prf.RNN(2, 3, dropout=1.5)
    layer = prf.RNN(2, 3, num_layers=2)
    with pytest.raises(ValueError, match="x"):
        layer(np.zeros((4, 5, 3)))
    with pytest.raises(ValueError, match="x"):
        layer(np.zeros((4, 2)))
    with pytest.raises(TypeError, match="x"):
        layer(np.zeros((1, 2, 2), complex))
    with pytest.raises(ValueError, match=r"h0.*\(2, 4, 3\)"):
        layer(np.zeros((4, 5, 2)), np.zeros((1, 4, 3)))
    with pytest.raises(RuntimeError, match="forward"):
        layer.backward(np.zeros((4, 5, 3)))
    layer(np.zeros((4, 5, 2)))
    with pytest.raises(ValueError, match="dout"):
        layer.backward(np.zeros((4, 5, 6)))
    with pytest.raises(ValueError, match="dh_n"):
        layer.backward(np.zeros((4, 5, 3)), np.zeros((1, 4, 3)))


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


# --- TimeRNN against the textbook ----------------------------------------------------------------

class TextbookRNN:
    """One time step, as written in the textbook."""

    def __init__(self, Wx, Wh, b):
        self.params = [Wx, Wh, b]
        self.grads = [np.zeros_like(Wx), np.zeros_like(Wh), np.zeros_like(b)]
        self.cache = None

    def forward(self, x, h_prev):
        Wx, Wh, b = self.params
        t = np.dot(h_prev, Wh) + np.dot(x, Wx) + b
        h_next = np.tanh(t)
        self.cache = (x, h_prev, h_next)
        return h_next

    def backward(self, dh_next):
        Wx, Wh, b = self.params
        x, h_prev, h_next = self.cache
        dt = dh_next * (1 - h_next ** 2)
        db = np.sum(dt, axis=0)
        dWh = np.dot(h_prev.T, dt)
        dh_prev = np.dot(dt, Wh.T)
        dWx = np.dot(x.T, dt)
        dx = np.dot(dt, Wx.T)
        self.grads[0][...] = dWx
        self.grads[1][...] = dWh
        self.grads[2][...] = db
        return dx, dh_prev


class TextbookTimeRNN:
    """The textbook's TimeRNN (with the dtype of the parameters instead of a fixed 'f')."""

    def __init__(self, Wx, Wh, b, stateful=False):
        self.params = [Wx, Wh, b]
        self.grads = [np.zeros_like(Wx), np.zeros_like(Wh), np.zeros_like(b)]
        self.layers = None
        self.h, self.dh = None, None
        self.stateful = stateful

    def set_state(self, h):
        self.h = h

    def reset_state(self):
        self.h = None

    def forward(self, xs):
        Wx, Wh, b = self.params
        N, T, D = xs.shape
        D, H = Wx.shape
        self.layers = []
        hs = np.empty((N, T, H), dtype=Wx.dtype)
        if not self.stateful or self.h is None:
            self.h = np.zeros((N, H), dtype=Wx.dtype)
        for t in range(T):
            layer = TextbookRNN(*self.params)
            self.h = layer.forward(xs[:, t, :], self.h)
            hs[:, t, :] = self.h
            self.layers.append(layer)
        return hs

    def backward(self, dhs):
        Wx, Wh, b = self.params
        N, T, H = dhs.shape
        D, H = Wx.shape
        dxs = np.empty((N, T, D), dtype=Wx.dtype)
        dh = 0
        grads = [0, 0, 0]
        for t in reversed(range(T)):
            layer = self.layers[t]
            dx, dh = layer.backward(dhs[:, t, :] + dh)
            dxs[:, t, :] = dx
            for i, grad in enumerate(layer.grads):
                grads[i] += grad
        for i, grad in enumerate(grads):
            self.grads[i][...] = grad
        self.dh = dh
        return dxs


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("stateful", [False, True])
def test_time_rnn_matches_the_textbook(dtype, stateful):
    N, T, D, H = 3, 5, 4, 6
    rng = np.random.default_rng(50)
    Wx, Wh, b = (rng.standard_normal((D, H)) / 2).astype(dtype), (rng.standard_normal((H, H)) / 3).astype(dtype), \
        (rng.standard_normal(H) / 4).astype(dtype)
    ours = prf.TimeRNN(Wx.copy(), Wh.copy(), b.copy(), stateful=stateful)
    book = TextbookTimeRNN(Wx.copy(), Wh.copy(), b.copy(), stateful=stateful)
    grads_ids = [id(g) for g in ours.grads]
    tol = SELF_TOL if dtype == np.float64 else 1e-5  # the same sums in another order
    for it in range(3):  # three chunks, an SGD step after each, as the textbook's trainer does
        xs = rng.standard_normal((N, T, D)).astype(dtype)
        dhs = rng.standard_normal((N, T, H)).astype(dtype)
        if it == 1:
            h = rng.standard_normal((N, H)).astype(dtype)
            ours.set_state(h.copy())
            book.set_state(h.copy())
        hs = ours.forward(xs)
        close(hs, book.forward(xs), tol, f"hs {it}")
        assert hs.dtype == dtype
        close(ours.h, book.h, tol, f"h {it}")
        dxs = ours.backward(dhs)
        close(dxs, book.backward(dhs), tol, f"dxs {it}")
        close(ours.dh, book.dh, tol, f"dh {it}")
        for i in range(3):
            close(ours.grads[i], book.grads[i], tol, f"grads[{i}] {it}")
            ours.params[i] -= 0.1 * ours.grads[i]   # in place, the textbook SGD
            book.params[i] -= 0.1 * book.grads[i]
    assert [id(g) for g in ours.grads] == grads_ids
    ours.reset_state()
    book.reset_state()
    assert ours.h is None
    xs = rng.standard_normal((N, T, D)).astype(dtype)
    close(ours.forward(xs), book.forward(xs), tol, "after reset")
