"""prf.LSTM and prf.GRU: against torch.nn.LSTM / torch.nn.GRU (every option, packed sequences),
Keras's equations for its weight layout, and the layer machinery they share with prf.RNN
(state, streaming step, save/load, dropout, repr)."""

from __future__ import annotations

import inspect
import itertools
import warnings

import numpy as np
import pytest

import pyrnn_fast as prf
from helpers import D_, H_, N_, SELF_TOL, T_, TOL, close, rng_arrays

LENGTHS = np.array([6, 3, 1, 3, 5])
CELLS = {"LSTM": prf.LSTM, "GRU": prf.GRU}


def torch_run(module, x, state, lengths, dout, dstate):
    """out, final state parts, dx, gradients w.r.t. the initial state parts and the parameters."""
    import torch
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    bf = module.batch_first
    xt = torch.tensor(x, requires_grad=True)
    st = None if state is None else [torch.tensor(s, requires_grad=True) for s in state]
    module.zero_grad()
    arg = None if st is None else (st[0] if len(st) == 1 else tuple(st))
    inp = (
        xt if lengths is None else pack_padded_sequence(xt, torch.tensor(lengths), batch_first=bf, enforce_sorted=False)
    )
    out, final = module(inp, arg)
    if lengths is not None:
        out, _ = pad_packed_sequence(out, batch_first=bf, total_length=x.shape[1 if bf else 0])
    final = list(final) if isinstance(final, tuple) else [final]
    loss = (out * torch.tensor(dout)).sum() + sum((f * torch.tensor(d)).sum() for f, d in zip(final, dstate))
    loss.backward()
    grads = {name: p.grad.numpy() for name, p in module.named_parameters()}
    d0 = None if st is None else [s.grad.numpy() for s in st]
    return out.detach().numpy(), [f.detach().numpy() for f in final], xt.grad.numpy(), d0, grads


@pytest.mark.parametrize("cell", sorted(CELLS))
@pytest.mark.parametrize(
    "num_layers,bidirectional,use_lengths,use_state,time_major,bias,dtype",
    [
        c
        for c in itertools.product(
            (1, 2), (False, True), (False, True), (False, True), (False, True), (True, False), (np.float64, np.float32)
        )  # fmt: skip
        if c[0] == 2 or c[-1] == np.float64  # every option at 2 layers, 1 layer in float64
    ],
)
def test_parity_with_torch(cell, num_layers, bidirectional, use_lengths, use_state, time_major, bias, dtype):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    module = getattr(torch.nn, cell)(
        D_, H_, num_layers=num_layers, bias=bias, batch_first=not time_major, bidirectional=bidirectional,
        dtype={np.float32: torch.float32, np.float64: torch.float64}[dtype],
    )  # fmt: skip
    layer = CELLS[cell].from_torch(module)
    dirs = 2 if bidirectional else 1
    parts = 2 if cell == "LSTM" else 1
    sshape = (num_layers * dirs, N_, H_)
    x, dout, *rest = rng_arrays(3, (T_, N_, D_), (T_, N_, dirs * H_), *[sshape] * (2 * parts), dtype=dtype)
    state, dstate = rest[:parts], rest[parts:]
    if not time_major:
        x, dout = np.ascontiguousarray(x.transpose(1, 0, 2)), np.ascontiguousarray(dout.transpose(1, 0, 2))
    lengths = LENGTHS if use_lengths else None
    t_out, t_final, t_dx, t_d0, t_grads = torch_run(module, x, state if use_state else None, lengths, dout, dstate)

    given = (tuple(state) if cell == "LSTM" else state[0]) if use_state else None
    out, final = layer(x, given, lengths=lengths)
    final = list(final) if cell == "LSTM" else [final]
    dx = layer.backward(dout, *dstate)
    tol = TOL[np.dtype(dtype)]
    close(out, t_out, tol, "out")
    close(dx, t_dx, tol, "dx")
    for name, ours, theirs in zip(("h_n", "c_n"), final, t_final):
        assert ours.dtype == dtype
        close(ours, theirs, tol, name)
    if use_state:
        for name, theirs in zip(("dh0", "dc0"), t_d0):
            close(getattr(layer, name), theirs, tol, name)
    for k in (f"l{l}{s}" for l in range(num_layers) for s in layer._suffixes):
        close(layer.grads[f"Wx_{k}"], t_grads[f"weight_ih_{k}"].T, tol, f"dWx_{k}")
        close(layer.grads[f"Wh_{k}"], t_grads[f"weight_hh_{k}"].T, tol, f"dWh_{k}")
        if not bias:
            assert not any(n.startswith(("b_", "bh_")) for n in layer.params)
        elif cell == "GRU":  # b = bias_ih, bh = bias_hh: each its own gradient
            close(layer.grads[f"b_{k}"], t_grads[f"bias_ih_{k}"], tol, f"db_{k}")
            close(layer.grads[f"bh_{k}"], t_grads[f"bias_hh_{k}"], tol, f"dbh_{k}")
        else:  # b = bias_ih + bias_hh
            close(layer.grads[f"b_{k}"], t_grads[f"bias_ih_{k}"], tol, f"db_{k}")
            close(layer.grads[f"b_{k}"], t_grads[f"bias_hh_{k}"], tol, f"db_{k} (hh)")


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_to_torch_computes_the_same(cell):
    torch = pytest.importorskip("torch")
    layer = CELLS[cell](D_, H_, num_layers=2, bidirectional=True, dtype=np.float64, seed=4)
    for v in layer.params.values():  # non-zero biases, so that their placement matters
        v += np.random.default_rng(5).standard_normal(v.shape) * 0.1
    module = layer.to_torch()
    assert isinstance(module, getattr(torch.nn, cell)) and module.batch_first
    (x,) = rng_arrays(6, (N_, T_, D_))
    out, _ = layer(x)
    close(out, module(torch.tensor(x))[0].detach().numpy(), TOL[np.dtype(np.float64)], "out")


def keras_lstm(x, kernel, recurrent, bias):
    """Keras's LSTM step equations, its gate order [i, f, c, o], one sample at a time."""
    H = recurrent.shape[0]
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    out = np.zeros(x.shape[:2] + (H,))
    for n in range(x.shape[0]):
        h, c = np.zeros(H), np.zeros(H)
        for t in range(x.shape[1]):
            z = x[n, t] @ kernel + h @ recurrent + bias
            i, f, cc, o = sig(z[:H]), sig(z[H : 2 * H]), np.tanh(z[2 * H : 3 * H]), sig(z[3 * H :])
            c = f * c + i * cc
            h = out[n, t] = o * np.tanh(c)
    return out


def keras_gru(x, kernel, recurrent, bias):
    """Keras's GRU(reset_after=True) step equations, its gate order [z, r, h], bias (2, 3H)."""
    H = recurrent.shape[0]
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    out = np.zeros(x.shape[:2] + (H,))
    for n in range(x.shape[0]):
        h = np.zeros(H)
        for t in range(x.shape[1]):
            xi = x[n, t] @ kernel + bias[0]
            hi = h @ recurrent + bias[1]
            z = sig(xi[:H] + hi[:H])
            r = sig(xi[H : 2 * H] + hi[H : 2 * H])
            hh = np.tanh(xi[2 * H :] + r * hi[2 * H :])
            h = out[n, t] = z * h + (1 - z) * hh
    return out


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_keras_weights(cell):
    G = 4 if cell == "LSTM" else 3
    x, kernel, recurrent = rng_arrays(7, (N_, T_, D_), (D_, G * H_), (H_, G * H_))
    (bias,) = rng_arrays(8, (G * H_,) if cell == "LSTM" else (2, G * H_))
    layer = CELLS[cell].from_keras_weights([kernel, recurrent, bias])
    assert layer.dtype == np.float64 and not layer.time_major
    expected = (keras_lstm if cell == "LSTM" else keras_gru)(x, kernel, recurrent, bias)
    close(layer(x)[0], expected, 1e-12, "out")


def test_keras_gru_reset_before_is_refused():
    kernel, recurrent, bias = rng_arrays(9, (D_, 3 * H_), (H_, 3 * H_), (3 * H_,))
    with pytest.raises(ValueError, match="reset_after=False"):
        prf.GRU.from_keras_weights([kernel, recurrent, bias])
    with pytest.raises(ValueError, match=r"weights\[0\] \(kernel\): expected shape \(D, 4H\)"):
        prf.LSTM.from_keras_weights([np.zeros((3, 6)), np.zeros((1, 6))])
    # A Keras LSTM's weights (H = 3) given to the GRU: its kernel fits a GRU of H = 4, and the
    # message is about the recurrent kernel that does not, not about reset_after.
    with pytest.raises(
        ValueError, match=r"^weights\[1\] \(recurrent_kernel\): expected shape \(4, 12\), got \(3, 12\)$"
    ):
        prf.GRU.from_keras_weights([np.zeros((2, 12)), np.zeros((3, 12)), np.zeros(12)])


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_to_torch_checks_the_parameters_and_from_torch_a_meta_module(cell):
    """to_torch exports only what the layer would run (torch's copy_ had broadcast a scalar bias
    or a (1, 3H) Wx into the module, and a removed Wh was an AttributeError); a module on the
    'meta' device has no data: an error naming the module, not torch's."""
    torch = pytest.importorskip("torch")
    layer = CELLS[cell](3, 5)
    layer.params["b_l0"] = np.float32(0.5)
    with pytest.raises(ValueError, match=r"^b_l0: expected shape"):
        layer.to_torch()
    del layer.params["Wh_l0"]
    with pytest.raises(ValueError, match="Wh_l0"):
        layer.to_torch()
    module = getattr(torch.nn, cell)(4, 6, device="meta")
    with pytest.raises(ValueError, match=r"^module: its parameters are on the 'meta' device"):
        CELLS[cell].from_torch(module)


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_stateful_chunks_and_steps_equal_one_call(cell):
    layer = CELLS[cell](D_, H_, num_layers=2, dtype=np.float64, seed=1)
    (x,) = rng_arrays(10, (N_, T_, D_))
    out, final = layer(x)
    final = final if cell == "LSTM" else (final,)
    chunked = CELLS[cell](D_, H_, num_layers=2, dtype=np.float64, stateful=True, seed=1)
    outs = [chunked(x[:, :2])[0], chunked(x[:, 2:])[0]]
    close(np.concatenate(outs, axis=1), out, SELF_TOL, "chunked out")
    for a, b in zip(chunked._state_parts(), final):
        close(a, b, SELF_TOL, "carried state")
    stream = CELLS[cell](D_, H_, num_layers=2, dtype=np.float64, stateful=True, seed=1)
    steps = np.stack([stream.step(x[:, t]) for t in range(T_)], axis=1)
    close(steps, out, SELF_TOL, "steps")
    for a, b in zip(stream._state_parts(), final):
        close(a, b, SELF_TOL, "stepped state")
    stream.reset_state()
    assert stream.state is None
    with pytest.raises(ValueError, match="step: a bidirectional layer"):
        CELLS[cell](D_, H_, bidirectional=True, stateful=True).step(x[:, 0])
    with pytest.raises(ValueError, match=f"step: the layer must be stateful \\({cell}"):
        CELLS[cell](D_, H_).step(x[:, 0])


def test_lstm_state_argument():
    layer = prf.LSTM(D_, H_, dtype=np.float64, seed=2)
    (x,) = rng_arrays(11, (N_, T_, D_))
    h0 = np.ones((1, N_, H_)) * 0.5
    out_h, _ = layer(x, (h0, None))  # c0 None: zeros
    out_both, _ = layer(x, (h0, np.zeros((1, N_, H_))))
    np.testing.assert_array_equal(out_h, out_both)
    with pytest.raises(TypeError, match=r"state: expected None or a pair \(h0, c0\)"):
        layer(x, h0)
    with pytest.raises(ValueError, match="c0: expected shape"):
        layer(x, (h0, np.zeros((2, N_, H_))))
    # On a stateful layer a pair is a state given: its None parts are zeros, also both of them
    # ((None, None) had taken the carried state, (h0, None) zeros for c).
    stateful = prf.LSTM(D_, H_, dtype=np.float64, seed=2, stateful=True)
    stateful(x)
    zeros = np.zeros((1, N_, H_))
    np.testing.assert_array_equal(stateful(x, (None, None))[0], layer(x, (zeros, zeros))[0])
    stateful(x)
    np.testing.assert_array_equal(stateful(x, (h0, None))[0], out_h)


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_save_load_round_trip(cell, tmp_path):
    layer = CELLS[cell](D_, H_, num_layers=2, bidirectional=True, dropout=0.25, seed=3, dtype=np.float64)
    layer.save(tmp_path / "layer.npz")
    loaded = CELLS[cell].load(tmp_path / "layer.npz")
    assert repr(loaded) == repr(layer)
    (x,) = rng_arrays(12, (N_, T_, D_))
    np.testing.assert_array_equal(loaded.eval()(x)[0], layer.eval()(x)[0])
    other = "GRU" if cell == "LSTM" else "LSTM"
    with pytest.raises(
        ValueError, match=f"not a pyrnn_fast {other} file: it holds a {cell} layer: use pyrnn_fast.{cell}.load"
    ):
        CELLS[other].load(tmp_path / "layer.npz")
    with pytest.raises(ValueError, match=f"it holds a {cell} layer"):
        prf.RNN.load(tmp_path / "layer.npz")
    rnn = prf.RNN(D_, H_)
    rnn.save(tmp_path / "rnn.npz")
    with pytest.raises(ValueError, match="it holds a RNN layer: use pyrnn_fast.RNN.load"):
        CELLS[cell].load(tmp_path / "rnn.npz")


def test_parameters_initialisation_and_repr():
    lstm = prf.LSTM(3, 5, num_layers=2, seed=0)
    assert lstm.params["Wx_l1"].shape == (5, 20) and lstm.params["b_l0"].shape == (20,)
    np.testing.assert_array_equal(lstm.params["b_l0"][5:10], 1.0)  # the forget gate's bias
    assert not lstm.params["b_l0"][:5].any() and not lstm.params["b_l0"][10:].any()
    for k in range(4):  # each gate block of Wh orthogonal
        w = lstm.params["Wh_l0"][:, 5 * k : 5 * k + 5].astype(np.float64)
        np.testing.assert_allclose(w @ w.T, np.eye(5), atol=1e-6)
    assert lstm.num_params() == (3 * 20 + 5 * 20 + 20) + (5 * 20 + 5 * 20 + 20)  # layer 0 reads D = 3, layer 1 H = 5
    gru = prf.GRU(3, 5, bidirectional=True)
    assert sorted(gru.params) == sorted(f"{p}_l0{s}" for p in ("Wx", "Wh", "b", "bh") for s in ("", "_reverse"))
    text = repr(gru)
    assert text.startswith("GRU(3, 5, num_layers=1, bias=True, bidirectional=True") and "bh_l0 (15,)" in text
    assert gru.num_params() == 2 * (3 * 15 + 5 * 15 + 15 + 15)


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_dropout_only_in_training(cell):
    layer = CELLS[cell](D_, H_, num_layers=2, dropout=0.5, dtype=np.float64, seed=0)
    (x,) = rng_arrays(13, (N_, T_, D_))
    a, _ = layer(x)
    b, _ = layer(x)
    assert not np.allclose(a, b)  # new masks each call
    layer.eval()
    c, _ = layer(x)
    d, _ = layer(x)
    np.testing.assert_array_equal(c, d)


def _lstm_one_step_reference(layer, x, h, c):
    """Every layer's next (h, c) from the reference, in float64."""
    from pyrnn_fast import _reference_gated

    hs_new, cs_new, inp = [], [], x.astype(np.float64)
    for k in range(layer.num_layers):
        b = layer.params.get(f"b_l{k}")
        _, h_k, c_k, _, _ = _reference_gated.lstm_model_forward(
            inp[None],
            layer.params[f"Wx_l{k}"].astype(np.float64),
            layer.params[f"Wh_l{k}"].astype(np.float64),
            None if b is None else b.astype(np.float64),
            h[k].astype(np.float64),
            c[k].astype(np.float64),
        )
        hs_new.append(h_k)
        cs_new.append(c_k)
        inp = h_k
    return np.stack(hs_new), np.stack(cs_new)


def _gru_one_step_reference(layer, x, h):
    """Every layer's next h from the reference GRU, in float64."""
    from pyrnn_fast import _reference_gated

    new, inp = [], x.astype(np.float64)
    for k in range(layer.num_layers):
        b, bh = (layer.params.get(f"{name}_l{k}") for name in ("b", "bh"))
        _, h_k, _ = _reference_gated.gru_model_forward(
            inp[None],
            layer.params[f"Wx_l{k}"].astype(np.float64),
            layer.params[f"Wh_l{k}"].astype(np.float64),
            None if b is None else b.astype(np.float64),
            None if bh is None else bh.astype(np.float64),
            h[k].astype(np.float64),
        )
        new.append(h_k)
        inp = h_k
    return np.stack(new)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cell", sorted(CELLS))
def test_gated_step_follows_every_change_to_the_layer(cell, backend, dtype, bias):
    """The gated cells' step (on the compiled backend, the step kernel, which checks the
    layer's arrays once and then only x_t) against the reference, after every kind of change
    between steps."""
    D, H, N, G = 5, 37, 3, 4 if cell == "LSTM" else 3
    layer = CELLS[cell](D, H, num_layers=2, bias=bias, stateful=True, dtype=dtype, seed=1, backend=backend)
    rng = np.random.default_rng(3)
    tol = SELF_TOL if dtype == np.float64 else 1e-5

    def check_step(x, what):
        before = layer._state_parts() or (np.zeros((2, N, H), dtype),) * (2 if cell == "LSTM" else 1)
        before = tuple(p.copy() for p in before)
        x64 = np.asarray(x, dtype=dtype)
        if cell == "LSTM":
            expected = _lstm_one_step_reference(layer, x64, *before)
        else:
            expected = (_gru_one_step_reference(layer, x64, *before),)
        y = layer.step(x)
        for part, ref, name in zip(layer._state_parts(), expected, ("h", "c")):
            close(part, ref, tol, f"{what}: {name}")
        close(y, expected[0][-1], tol, f"{what}: output")
        assert y.dtype == dtype, f"{what}: output of dtype {y.dtype}, the layer's is {np.dtype(dtype)}"
        assert not np.shares_memory(y, layer._state_parts()[0])

    x = rng.standard_normal((N, D)).astype(dtype)
    check_step(x, "first step")
    state = layer.state
    check_step(x, "second step")
    assert layer.state is state  # updated in place
    layer.params["Wh_l1"] *= 0.5  # in place
    check_step(x, "after an in-place change")
    layer.params["Wx_l0"] = rng.standard_normal((D, G * H)).astype(dtype)  # rebound
    check_step(x, "after rebinding a parameter")
    if bias:
        layer.params["b_l1"][...] = 0.3  # a bias in place
        check_step(x, "after changing a bias in place")
        last = "bh_l0" if cell == "GRU" else "b_l0"
        layer.params[last] = np.asfortranarray(rng.standard_normal((1, G * H)))[0]  # other dtype, rebound
        check_step(x, "after a bias of another dtype")
    new = rng.standard_normal((2, N, H)).astype(dtype)
    layer.state = (layer.state[0].copy(), new) if cell == "LSTM" else new  # another state
    check_step(x, "after replacing the state")
    if cell == "LSTM":
        layer.state[1][...] = 0.25  # the cell state changed in place
        check_step(x, "after changing c in place")
    check_step(x.astype(np.float64 if dtype == np.float32 else np.float32), "x_t of the other dtype")
    check_step(np.asfortranarray(x), "x_t in Fortran order")
    layer.reset_state()
    check_step(x, "after reset_state")


@pytest.mark.parametrize("cell", ["RNN", *sorted(CELLS)])
@pytest.mark.parametrize("use_lengths", [False, True])
def test_record_false_is_inference(cell, use_lengths, backend):
    """layer(x, record=False): the same outputs and final states (bits) as a recording call,
    the carried state of a stateful layer too; nothing kept for backward, which then raises."""
    make = prf.RNN if cell == "RNN" else CELLS[cell]
    kw = dict(num_layers=2, bidirectional=True, seed=3, backend=backend)
    x = rng_arrays(0, (5, 6, 4))[0]
    lengths = LENGTHS if use_lengths else None
    recording, inference = make(4, 7, **kw), make(4, 7, **kw)
    want_out, want_state = recording(x, None, lengths)
    got_out, got_state = inference(x, None, lengths, record=False)
    np.testing.assert_array_equal(got_out, want_out)
    for got, want in zip(*(s if isinstance(s, tuple) else (s,) for s in (got_state, want_state))):
        np.testing.assert_array_equal(got, want)
    assert recording._cache is not None and inference._cache is None
    with pytest.raises(RuntimeError, match="record=True"):
        inference.backward(np.ones_like(got_out))
    recording.backward(np.ones_like(want_out))  # the recording layer's backward still runs
    with pytest.raises(TypeError, match="record: expected a bool"):
        inference(x, record="no")

    stateful = [make(4, 7, num_layers=1, stateful=True, seed=5, backend=backend) for _ in range(2)]
    for chunk in (x[:, :3], x[:, 3:]):
        a, b = stateful[0](chunk)[0], stateful[1](chunk, record=False)[0]
        np.testing.assert_array_equal(a, b)
    for a, b in zip(stateful[0]._state_parts(), stateful[1]._state_parts()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("cell", ["RNN", "LSTM", "GRU"])
def test_interop_refuses_what_it_would_drop_or_torch_would_refuse(cell):
    """Found by a review: to_torch left an array of the user's in params behind without a word
    (save() refuses it), a module with a parameter deleted was a bare AttributeError, an H = 0
    layer (which this library computes) failed in torch's constructor, and a one-layer dropout,
    accepted silently, warned only in torch's at to_torch."""
    torch = pytest.importorskip("torch")
    make = getattr(prf, cell)
    layer = make(3, 5)
    layer.params["Wx_l0_momentum"] = np.zeros((3, 5))
    with pytest.raises(ValueError, match=r"^params: 'Wx_l0_momentum' is not a parameter of this layer \(to_torch"):
        layer.to_torch()
    for name in ("weight_hh_l1", "weight_ih_l0"):  # (the first one read, for the dtype, too)
        module = getattr(torch.nn, cell)(3, 5, num_layers=2)
        delattr(module, name)
        with pytest.raises(ValueError, match=rf"^module: {name} is missing or not a tensor \(a torch.nn.{cell} "):
            make.from_torch(module)
    module = getattr(torch.nn, cell)(3, 5, num_layers=2)
    G = {"RNN": 1, "LSTM": 4, "GRU": 3}[cell]
    module.weight_hh_l1 = torch.nn.Parameter(torch.zeros(G * 5, 4))
    with pytest.raises(ValueError, match=rf"^module: weight_hh_l1 has shape \({G * 5}, 4\), expected \({G * 5}, 5\)"):
        make.from_torch(module)  # (it had named Wh_l1, which the module does not have)
    for name, sizes in (("input_size", (0, 5)), ("hidden_size", (3, 0))):
        with pytest.raises(ValueError, match=rf"^{name}: torch.nn.{cell} needs at least 1, the layer has 0$"):
            make(*sizes).to_torch()
    with pytest.warns(UserWarning, match=r"^dropout=0.5 has no effect with num_layers=1: dropout acts between"):
        one = make(3, 5, dropout=0.5, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once, by the layer: neither torch's nor ours again
        filters = list(warnings.filters)
        module = one.to_torch()
        back = make.from_torch(module)
        make(3, 5, num_layers=2, dropout=0.5)
        assert warnings.filters == filters  # (process-wide: changing them is not thread-safe)
    assert back.dropout == 0.5 and module.dropout == 0.5
    for name, a in one.params.items():
        np.testing.assert_array_equal(back.params[name], a)


def test_the_dropout_warning_points_at_the_line_that_made_the_layer():
    """Past the library's __init__ and those of subclasses (RNN's own, a user's)."""

    class Mine(prf.RNN):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)

    class Deeper(Mine):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)

    line = inspect.currentframe().f_lineno
    for make in (prf.RNN, prf.LSTM, prf.GRU, Mine, Deeper):
        with pytest.warns(UserWarning, match="no effect with num_layers=1") as seen:
            make(3, 4, dropout=0.5)
        assert (seen[0].filename, seen[0].lineno) == (__file__, line + 3), make.__name__
