"""Weights from and to other libraries: ``torch.nn.RNN``, ``LSTM``, ``GRU`` (both ways) and
Keras's ``SimpleRNN``, ``LSTM``, ``GRU(reset_after=True)``.
torch is imported lazily, inside the functions: it is never a dependency."""

from __future__ import annotations

import numpy as np

from ._checks import _check_real


def _torch_class(cls):
    import torch  # lazily: torch is never a dependency

    return {"RNN": torch.nn.RNN, "LSTM": torch.nn.LSTM, "GRU": torch.nn.GRU}[cls._name]


def from_torch(cls, module, backend):
    """What ``RNN.from_torch`` (LSTM's, GRU's) does, for the layer class ``cls``."""
    import torch

    expected = _torch_class(cls)
    if not isinstance(module, expected):
        raise TypeError(f"module: expected a torch.nn.{cls._name}, got {type(module).__name__}")
    if getattr(module, "proj_size", 0):
        raise ValueError(f"module: proj_size = {module.proj_size} (an LSTM with projections) is not supported")

    def param(name):
        t = getattr(module, name, None)
        if not isinstance(t, torch.Tensor):  # deleted, or replaced by something else
            raise ValueError(f"module: {name} is missing or not a tensor (a torch.nn.{cls._name} like it has one)")
        return t

    dtypes = {torch.float32: np.float32, torch.float64: np.float64}
    w0 = param("weight_ih_l0")
    if w0.dtype not in dtypes:
        raise TypeError(f"module: dtype {w0.dtype} is not supported; use float32 or float64")
    if any(p.is_meta for p in module.parameters()):
        raise ValueError("module: its parameters are on the 'meta' device (no data to copy); materialise it first")
    options = dict(activation=module.nonlinearity) if cls._name == "RNN" else {}
    layer = cls(
        module.input_size,
        module.hidden_size,
        num_layers=module.num_layers,
        **options,
        bias=module.bias,
        bidirectional=module.bidirectional,
        dropout=0.0,  # set below: a one-layer dropout was torch's to warn of, when it was made
        time_major=not module.batch_first,
        dtype=dtypes[w0.dtype],
        backend=backend,
    )
    layer.dropout = float(module.dropout)
    layer.training = bool(module.training)

    shapes = dict(layer._param_shapes())

    def arr(name, ours):  # torch's parameter `name`, which becomes our `ours` (transposed)
        t = param(name)
        expected = shapes[ours][::-1]
        if tuple(t.shape) != expected:  # named as in the module, not as it becomes here
            raise ValueError(
                f"module: {name} has shape {tuple(t.shape)}, expected {expected} (for its input_size "
                f"{module.input_size}, hidden_size {module.hidden_size})"
            )
        return t.detach().cpu().to(torch.float64).numpy()

    weights = {}
    for layer_idx in range(layer.num_layers):
        for suffix in layer._suffixes:
            k = f"l{layer_idx}{suffix}"
            weights[f"Wx_{k}"] = arr(f"weight_ih_{k}", f"Wx_{k}").T
            weights[f"Wh_{k}"] = arr(f"weight_hh_{k}", f"Wh_{k}").T
            if not layer.bias:
                continue
            bias_ih, bias_hh = arr(f"bias_ih_{k}", f"b_{k}"), arr(f"bias_hh_{k}", f"b_{k}")
            if "bh" in layer._param_kinds:  # GRU: the recurrent bias is inside r ⊙ (h·Wh + bh)
                weights[f"b_{k}"], weights[f"bh_{k}"] = bias_ih, bias_hh
            else:  # folded in float64, then rounded once to the layer's dtype
                weights[f"b_{k}"] = bias_ih + bias_hh
    layer._set_params(weights)
    return layer


def to_torch(layer):
    """What ``RNN.to_torch`` (LSTM's, GRU's) does."""
    import torch

    # The layer's own check first (a rebound or removed parameter is an error naming it, as
    # for a call): torch's copy_ would broadcast a wrong shape into the module without a word.
    params = layer._check_own_params("to_torch copies")
    for name in ("input_size", "hidden_size"):  # a layer this library computes (empty), torch's refuses
        if getattr(layer, name) == 0:
            raise ValueError(f"{name}: torch.nn.{layer._name} needs at least 1, the layer has 0")

    dtype = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}[layer.dtype]
    options = dict(nonlinearity=layer.activation) if layer._name == "RNN" else {}
    module = _torch_class(type(layer))(
        layer.input_size,
        layer.hidden_size,
        num_layers=layer.num_layers,
        **options,
        bias=layer.bias,
        batch_first=not layer.time_major,
        dropout=0.0,  # set below: a one-layer dropout was the layer's to warn of, when it was made
        bidirectional=layer.bidirectional,
        dtype=dtype,
    )
    module.dropout = float(layer.dropout)

    def put(name, a):
        # In the layer's dtype: a parameter rebound to another byte order or dtype (which the
        # layer's calls take) is not one torch.from_numpy takes.
        getattr(module, name).copy_(torch.from_numpy(np.ascontiguousarray(a, dtype=layer.dtype)))

    with torch.no_grad():
        for layer_idx in range(layer.num_layers):
            for suffix in layer._suffixes:
                k = f"l{layer_idx}{suffix}"
                W = dict(zip(layer._param_kinds, layer._weights(params, layer_idx, suffix)))
                put(f"weight_ih_{k}", np.asarray(W["Wx"]).T)
                put(f"weight_hh_{k}", np.asarray(W["Wh"]).T)
                if layer.bias:
                    put(f"bias_ih_{k}", W["b"])
                    if "bh" in W:
                        put(f"bias_hh_{k}", W["bh"])
                    else:
                        getattr(module, f"bias_hh_{k}").zero_()
    module.train(layer.training)
    return module


# Keras's layers and the order of their gate blocks in ours: ours[j] = keras[_KERAS_BLOCKS[j]].
_KERAS = {"RNN": ("SimpleRNN", 1), "LSTM": ("LSTM", 4), "GRU": ("GRU(reset_after=True)", 3)}
_KERAS_BLOCKS = {"GRU": (1, 0, 2)}  # Keras's GRU is [z, r, h], ours [r, z, n]


def from_keras_weights(cls, weights, activation, time_major, stateful, dtype, backend):
    """What ``RNN.from_keras_weights`` (LSTM's, GRU's) does, for the layer class ``cls``."""
    keras_name, G = _KERAS[cls._name]
    gh = "H" if G == 1 else f"{G}H"
    if not isinstance(weights, (list, tuple)):
        raise TypeError(
            f"weights: expected a list [kernel, recurrent_kernel(, bias)] as a Keras {keras_name}'s "
            f"get_weights() returns, got {type(weights).__name__}"
        )
    weights = list(weights)
    if len(weights) not in (2, 3):
        raise ValueError(
            f"weights: expected [kernel, recurrent_kernel, bias] or [kernel, recurrent_kernel], "
            f"got {len(weights)} arrays"
        )
    names = ("kernel", "recurrent_kernel", "bias")
    arrays = [_check_real(f"weights[{i}] ({names[i]})", w) for i, w in enumerate(weights)]
    kernel = arrays[0]
    if kernel.ndim != 2 or kernel.shape[1] % G:
        raise ValueError(f"weights[0] (kernel): expected shape (D, {gh}), got {kernel.shape}")
    D, H = kernel.shape[0], kernel.shape[1] // G
    # Checked in order, before a layer is made: another cell's weights (an LSTM's, whose bias is
    # (4H',)) fail at their recurrent kernel, not taken for a reset_after=False GRU at the bias.
    expected = [(D, G * H), (H, G * H), (2, G * H) if cls._name == "GRU" else (G * H,)]
    for i, (a, shape) in enumerate(zip(arrays, expected)):
        if a.shape == shape:
            continue
        if i == 2 and cls._name == "GRU" and a.shape == (G * H,):
            raise ValueError(
                f"weights[2] (bias): shape {a.shape} is a Keras GRU with reset_after=False, another cell "
                f"(the reset gate before the recurrent product); expected reset_after=True's bias (2, {gh})"
            )
        raise ValueError(f"weights[{i}] ({names[i]}): expected shape {shape}, got {a.shape}")
    if dtype is None:
        dtype = kernel.dtype if kernel.dtype in (np.float32, np.float64) else np.float32
    options = dict(activation=activation) if cls._name == "RNN" else {}
    layer = cls(
        D, H, **options, bias=len(arrays) == 3, time_major=time_major, stateful=stateful, dtype=dtype, backend=backend
    )
    blocks = _KERAS_BLOCKS.get(cls._name)

    def ours(a):  # Keras's gate blocks (last axis) in our order
        if blocks is None:
            return a
        return np.concatenate([a[..., j * H : (j + 1) * H] for j in blocks], axis=-1)

    params = {"Wx_l0": ours(kernel), "Wh_l0": ours(arrays[1])}
    if len(arrays) == 3:
        bias = ours(arrays[2])
        if cls._name == "GRU":
            params["b_l0"], params["bh_l0"] = bias[0], bias[1]
        else:
            params["b_l0"] = bias
    layer._set_params(params)
    return layer
