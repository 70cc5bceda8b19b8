"""prf.RNN's construction and contract: shapes, layouts, dtypes, parameter names, initialisation,
repr, and the errors for bad arguments."""

from __future__ import annotations

import types

import numpy as np
import pytest

import pyrnn_fast as prf


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


def test_no_bias_and_param_names():
    layer = prf.RNN(2, 3, num_layers=2, bidirectional=True, bias=False)
    assert list(layer.params) == [
        "Wx_l0",
        "Wh_l0",
        "Wx_l0_reverse",
        "Wh_l0_reverse",
        "Wx_l1",
        "Wh_l1",
        "Wx_l1_reverse",
        "Wh_l1_reverse",
    ]
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


def test_bad_input_errors():
    with pytest.raises(ValueError, match="activation"):
        prf.RNN(2, 3, activation="sigmoid")
    with pytest.raises(TypeError, match="dtype"):
        prf.RNN(2, 3, dtype=np.float16)
    with pytest.raises(ValueError, match="num_layers"):
        prf.RNN(2, 3, num_layers=0)
    with pytest.raises(ValueError, match="dropout"):
        prf.RNN(2, 3, dropout=1.5)
    with pytest.raises(TypeError, match="^dropout: expected a probability in \\[0, 1\\], got str$"):
        prf.RNN(2, 3, dropout="0.5")
    with pytest.raises(TypeError, match="^dtype: expected float32 or float64, got None$"):
        prf.RNN(2, 3, dtype=None)  # NumPy's None would be float64
    for bad, err in (("a", TypeError), (-1, ValueError), ([1, 2], TypeError), (1.0, TypeError)):
        with pytest.raises(err, match="^seed: expected an int >= 0"):
            prf.LSTM(2, 3, seed=bad)
    layer = prf.GRU(2, 3, seed=np.int64(7))
    assert type(layer.seed) is int and layer.seed == 7  # saved as JSON (a NumPy int was not)
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


def _build(make, **options):
    """A layer of class `make` (D = 3, H = 4): a textbook one from weights, else from sizes."""
    if make.startswith("Time"):
        G = 4 if make == "TimeLSTM" else 1
        return getattr(prf, make)(np.ones((3, 4 * G)), np.ones((4, 4 * G)), np.ones(4 * G), **options)
    return getattr(prf, make)(3, 4, **options)


@pytest.mark.parametrize("make", ["RNN", "LSTM", "GRU", "TimeRNN", "TimeLSTM"])
def test_a_backend_that_is_none_of_ours_is_an_error_when_the_layer_is_made(make):
    """A typo in `backend` fails where the layer is made, naming the argument, not at its first
    call; a known name is taken as written (availability is the call's to check)."""

    def build(backend):
        return _build(make, backend=backend)

    with pytest.raises(ValueError, match=r"^backend: expected one of \['cpp', 'numba', 'numpy'\] or None, got 'gpu'"):
        build("gpu")
    with pytest.raises(TypeError, match=r"^backend: expected a str or None, got int"):
        build(3)
    assert build(" NumPy ").backend == " NumPy "
    assert build(None).backend is None


@pytest.mark.parametrize("make", ["RNN", "LSTM", "GRU"])
def test_a_keyword_the_layer_does_not_take_is_an_error_naming_it(make):
    """A misspelt option must not build a layer without it (the gated cells' constructor takes
    the cells' own options as keywords and once dropped any it did not know), and `activation`
    is the vanilla cell's only."""
    cls = getattr(prf, make)
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'num_layer'"):
        cls(4, 8, num_layer=2)
    if make != "RNN":
        with pytest.raises(TypeError, match=rf"^{make}\(\) got an unexpected keyword argument 'activation'$"):
            cls(4, 8, activation="relu")
    assert cls(4, 8, num_layers=2).num_layers == 2


@pytest.mark.parametrize("make", ["RNN", "LSTM", "GRU", "TimeRNN", "TimeLSTM"])
def test_a_yes_no_option_that_is_not_a_bool_is_an_error_naming_it(make):
    """bool() would read the string "False" as True and take any array or None as an answer:
    a yes/no option takes True or False (a NumPy bool too), anything else is a TypeError naming
    it, for the layers, their train(mode), and the functional API's time_major and workspace."""
    names = ["stateful"] if make.startswith("Time") else ["bias", "bidirectional", "time_major", "stateful"]

    def build(**flag):
        return _build(make, **flag)

    for name in names:
        for bad in ("False", 0, 1, None, np.array([True])):
            with pytest.raises(TypeError, match=rf"^{name}: expected a bool, got {type(bad).__name__}$"):
                build(**{name: bad})
        assert getattr(build(**{name: np.bool_(True)}), name) is True
        assert getattr(build(**{name: False}), name) is False
    if not make.startswith("Time"):
        layer = build()
        with pytest.raises(TypeError, match=r"^mode: expected a bool, got str$"):
            layer.train("eval")
        assert layer.train(np.bool_(False)).training is False


@pytest.mark.parametrize("forward", [prf.rnn_forward, prf.lstm_forward, prf.gru_forward])
def test_the_functional_apis_yes_no_options_take_bools_only(forward):
    G = {prf.rnn_forward: 1, prf.lstm_forward: 4, prf.gru_forward: 3}[forward]
    x, Wx, Wh = np.ones((2, 3, 5), np.float32), np.ones((5, 4 * G), np.float32), np.ones((4, 4 * G), np.float32)
    names = ["time_major"] + (["workspace"] if G > 1 else [])
    for name in names:
        with pytest.raises(TypeError, match=rf"^{name}: expected a bool, got str$"):
            forward(x, Wx, Wh, **{name: "False"})
        forward(x, Wx, Wh, **{name: np.bool_(True)})


@pytest.mark.parametrize("params", [types.MappingProxyType, lambda d: list(d.values()), None])
def test_params_that_is_not_a_dict_is_an_error_naming_it(params):
    layer = prf.RNN(2, 3, stateful=True)
    layer.params = params(dict(layer.params)) if params else None
    with pytest.raises(TypeError, match="params: expected a dict"):
        layer(np.ones((1, 2, 2)))
    with pytest.raises(TypeError, match="params: expected a dict"):
        layer.step(np.ones((1, 2)))
    # also once the compiled stepper is kept (its own "Stepper.step: expected (x, params: dict, state)")
    layer = prf.RNN(2, 3, stateful=True, backend="cpp")
    layer.step(np.ones((1, 2), np.float32))
    layer.params = params(dict(layer.params)) if params else None
    with pytest.raises(TypeError, match="params: expected a dict"):
        layer.step(np.ones((1, 2), np.float32))


@pytest.mark.parametrize("change", ["num_layers", "bidirectional", "bias", "hidden_size"])
def test_the_parameter_checks_follow_a_changed_configuration(change):
    """Every call checks the parameters against the shapes the configuration implies, which
    are kept between calls: a configuration changed after construction is seen (the parameter
    it now needs, or one of another shape, named), not checked against the old shapes."""
    layer = prf.GRU(3, 4)
    x = np.ones((2, 5, 3), np.float32)
    layer(x)
    expected = {
        "num_layers": (2, r"params: 'Wx_l1' is missing"),
        "bidirectional": (True, r"params: 'Wx_l0_reverse' is missing"),
        "bias": (False, None),  # the biases are then not read: the call runs
        "hidden_size": (5, r"Wx_l0: expected shape \(3, 15\)"),
    }
    value, message = expected[change]
    for name in ("b_l0", "bh_l0"):  # (biases that change the result: the bias case can fail)
        layer.params[name][:] = 0.5
    setattr(layer, change, value)
    if message is None:
        assert np.array_equal(layer(x)[0], prf.gru_forward(x, layer.params["Wx_l0"], layer.params["Wh_l0"]).hs)
    else:
        with pytest.raises(ValueError, match=message):
            layer(x)


@pytest.mark.parametrize("activation", [np.array("tanh"), np.array(["tanh", "relu"]), b"tanh"])
def test_an_activation_that_is_not_a_str_is_an_error_naming_it(activation):
    with pytest.raises(ValueError, match=r"activation: expected one of \('tanh', 'relu'\), got"):
        prf.RNN(2, 3, activation=activation)


def test_save_takes_bytes_paths_and_names_a_bad_path(tmp_path):
    layer = prf.GRU(2, 3, seed=0)
    path = tmp_path / "g.npz"
    layer.save(bytes(path))
    np.testing.assert_array_equal(prf.GRU.load(path).params["Wh_l0"], layer.params["Wh_l0"])
    np.testing.assert_array_equal(prf.GRU.load(bytes(path)).params["Wh_l0"], layer.params["Wh_l0"])

    class BytesPath:  # an os.PathLike whose __fspath__ gives bytes
        def __fspath__(self):
            return bytes(tmp_path / "h.npz")

    layer.save(BytesPath())
    np.testing.assert_array_equal(prf.GRU.load(tmp_path / "h.npz").params["Wh_l0"], layer.params["Wh_l0"])
    for bad in (5, None):
        with pytest.raises(TypeError, match="path: expected"):
            layer.save(bad)


@pytest.mark.parametrize("make", [prf.RNN, prf.LSTM, prf.GRU])
def test_a_layer_too_large_to_allocate_is_an_error_naming_its_sizes(make):
    """NumPy's "array is too big" / "Maximum allowed dimension exceeded" named no argument."""
    with pytest.raises(ValueError, match=r"^input_size=2, hidden_size=4611686018427387904, num_layers=1: "):
        make(2, 2**62)


def test_a_layer_too_large_for_memory_is_a_memoryerror_naming_its_sizes():
    """NumPy's MemoryError (_ArrayMemoryError) cannot be rebuilt as type(e)(message): that raised
    a TypeError about its constructor. Wh (H, H) float64 here needs 2**59 bytes: no allocator
    gives it (more than any address space), and NumPy's own size limit lets it through."""
    with pytest.raises(MemoryError, match=r"^input_size=0, hidden_size=268435456, num_layers=1: "):
        prf.RNN(0, 2**28)


@pytest.mark.parametrize("backend", prf.backends())
@pytest.mark.parametrize("cell", ["RNN", "LSTM", "GRU"])
def test_a_layer_call_is_the_public_functional_forward_bit_for_bit(cell, backend):
    """The layers call the functional forwards past their checks (``_forward_args``): the
    same bits as the public calls chained by hand, over two calls of a stateful two-layer
    layer, with parameters rebound to Fortran order and to float64 (the layer computes in its
    own dtype: the public calls get the float32 values)."""
    layer = getattr(prf, cell)(5, 7, num_layers=2, seed=1, stateful=True, backend=backend)
    layer.params["Wh_l1"] = np.asfortranarray(layer.params["Wh_l1"])
    layer.params["Wx_l0"] = layer.params["Wx_l0"].astype(np.float64)
    rng = np.random.default_rng(2)
    parts = len(layer._state_names)
    state = [np.zeros((2, 3, 7), np.float32) for _ in range(parts)]
    for _ in range(2):
        x = rng.standard_normal((3, 4, 5)).astype(np.float32)
        out, got = layer(x, record=False) if cell == "LSTM" else layer(x)
        inp, finals = x, []
        for k in range(2):
            W = [np.asarray(layer.params[f"{kind}_l{k}"], np.float32) for kind in layer._param_kinds]
            if cell == "RNN":
                inp, h = prf.rnn_forward(inp, *W, state[0][k], backend=backend)
                finals.append((h,))
            elif cell == "LSTM":
                o = prf.lstm_forward(inp, *W, state[0][k], state[1][k], backend=backend)
                inp, _ = o.hs, finals.append((o.h_last, o.c_last))
            else:
                o = prf.gru_forward(inp, *W, state[0][k], backend=backend)
                inp, _ = o.hs, finals.append((o.h_last,))
        np.testing.assert_array_equal(out, inp)
        got = got if cell == "LSTM" else (got,)
        for p in range(parts):
            np.testing.assert_array_equal(got[p], np.stack([f[p] for f in finals]))
        state = [np.stack([f[p] for f in finals]) for p in range(parts)]


class _ConvertsOnceRight:
    """An array-like whose first conversion is `good` and every later one another shape."""

    def __init__(self, good):
        self.good, self.conversions = good, 0

    def __array__(self, dtype=None, copy=None):
        self.conversions += 1
        return self.good if self.conversions == 1 else np.ones((64, 64), np.float32)


@pytest.mark.parametrize("backend", prf.backends())
@pytest.mark.parametrize("cell", ["RNN", "LSTM", "GRU"])
def test_a_parameter_is_converted_once_per_call(cell, backend):
    """A call computes with the parameters as it checked them: each converted once, so that an
    object converting to another array the second time (or an entry another thread rebinds
    meanwhile) is never used unchecked (found by a review: with numba, whose kernels check no
    sizes, such a Wh was written past its end and the process crashed). Calls and steps."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 4, 2)).astype(np.float32)
    ref = getattr(prf, cell)(2, 8, seed=0, stateful=True, backend=backend)
    layer = getattr(prf, cell)(2, 8, seed=0, stateful=True, backend=backend)
    for step in (False, True):
        layer.params["Wh_l0"] = _ConvertsOnceRight(ref.params["Wh_l0"])
        if step:
            got, expected = layer.step(x[:, 0]), ref.step(x[:, 0])
        else:
            got, expected = layer(x)[0], ref(x)[0]
        assert layer.params["Wh_l0"].conversions == 1
        np.testing.assert_array_equal(got, expected)
