"""prf.RNN's interop and files: to/from torch, Keras weights, save/load (RNN.load's validation is
in test_load.py), and that importing the package imports neither torch nor numba."""

from __future__ import annotations

import copy
import pickle
import subprocess
import sys

import numpy as np
import pytest

import pyrnn_fast as prf
from helpers import D_, H_, N_, T_, TOL, close, rng_arrays


def test_to_torch_round_trip():
    torch = pytest.importorskip("torch")
    layer = prf.RNN(
        D_, H_, num_layers=2, bidirectional=True, activation="relu", time_major=True, dtype=np.float64, seed=3
    )
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
    code = (
        "import sys, pyrnn_fast as prf; prf.RNN(2, 3); "
        "assert 'torch' not in sys.modules and 'numba' not in sys.modules, 'imported'"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr


def test_save_and_load(tmp_path):
    layer = prf.RNN(
        3,
        4,
        num_layers=2,
        bidirectional=True,
        activation="relu",
        bias=False,
        dropout=0.25,
        time_major=True,
        stateful=True,
        dtype=np.float64,
        seed=np.int64(9),  # a NumPy int (from rng.integers, say): the saved config is JSON
    )
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


def test_save_refuses_what_load_would_and_load_names_a_bad_backend(tmp_path):
    """Found by a review: save() wrote a params entry of the user's own, or a parameter rebound
    to another shape, into a file load() then refused (the checkpoint lost, found out when
    needed); load(backend="cuda") blamed a good file, and backend=5 was not a TypeError."""
    layer = prf.GRU(3, 4, seed=0)
    good = tmp_path / "good.npz"
    layer.save(good)
    layer.params["Wx_l0_momentum"] = np.zeros((3, 12), np.float32)
    with pytest.raises(ValueError, match=r"^params: 'Wx_l0_momentum' is not a parameter of this layer"):
        layer.save(tmp_path / "extra.npz")
    del layer.params["Wx_l0_momentum"]
    layer.params["Wh_l0"] = np.zeros((4, 4), np.float32)
    with pytest.raises(ValueError, match=r"^Wh_l0: expected shape \(4, 12\), got \(4, 4\)"):
        layer.save(tmp_path / "shape.npz")
    assert not (tmp_path / "extra.npz").exists() and not (tmp_path / "shape.npz").exists()
    with pytest.raises(ValueError, match=r"^backend: expected one of"):
        prf.GRU.load(good, backend="cuda")
    with pytest.raises(TypeError, match=r"^backend: expected a str or None, got int"):
        prf.GRU.load(good, backend=5)


@pytest.mark.parametrize("rebind", [lambda W: W.astype(">f4"), lambda W: W.tolist()])
def test_to_torch_of_a_parameter_rebound_to_another_byte_order_or_a_list(rebind):
    """The layer's calls take a parameter rebound to a big-endian array or a list; to_torch
    failed on them (torch's error naming no parameter; an AttributeError for the list)."""
    torch = pytest.importorskip("torch")
    layer = prf.GRU(3, 4, seed=0)
    layer.params["Wh_l0"] = rebind(layer.params["Wh_l0"])
    module = layer.to_torch()
    np.testing.assert_array_equal(module.weight_hh_l0.detach().numpy(), np.asarray(layer.params["Wh_l0"]).T)
    x = np.ones((1, 2, 3), np.float32)
    close(layer(x)[0], module(torch.tensor(x))[0].detach().numpy(), TOL[np.dtype(np.float32)], "out")


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


@pytest.mark.parametrize("cls", [prf.RNN, prf.LSTM, prf.GRU])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_parameters_start_on_a_cache_line(cls, dtype, tmp_path):
    """The streaming step reads the weights in place with 64-byte vector loads: the layers keep
    their parameters aligned to 64 bytes, from the constructor and from load, and
    `params[k][...] = v` (what from_torch and from_keras_weights do) keeps them there."""
    layer = cls(5, 9, num_layers=2, bidirectional=cls is not prf.RNN, dtype=dtype, seed=0)
    path = tmp_path / "layer.npz"
    layer.save(path)
    loaded = cls.load(path)
    copied = copy.deepcopy(layer)  # pickle and deepcopy rebuild the arrays in NumPy's buffers
    unpickled = pickle.loads(pickle.dumps(layer))
    for a in (*layer.params.values(), *loaded.params.values(), *copied.params.values(), *unpickled.params.values()):
        assert a.ctypes.data % 64 == 0 and a.flags.c_contiguous and a.flags.writeable and a.dtype == dtype
    for k in layer.params:
        for other in (loaded, copied, unpickled):
            np.testing.assert_array_equal(other.params[k], layer.params[k])


def test_a_shallow_copy_leaves_the_originals_parameters_alone():
    """copy.copy(layer) realigned parameters in the original's own params dict (which the copy
    shares): a user's array that is not 64-byte aligned was replaced there by a copy, and the
    user's in-place updates of it no longer reached the original layer (found by a review)."""
    layer = prf.RNN(4, 8, seed=0)
    mine = np.empty(8 * 8 + 1, np.float32)[1:].reshape(8, 8)  # 4 bytes off a 64-byte boundary
    mine[...] = 0.1
    assert mine.ctypes.data % 64
    layer.params["Wh_l0"] = mine
    copied = copy.copy(layer)
    assert layer.params["Wh_l0"] is mine
    mine *= 0
    np.testing.assert_array_equal(layer.params["Wh_l0"], mine)
    assert copied.params["Wh_l0"].ctypes.data % 64 == 0  # the copy's own, aligned
