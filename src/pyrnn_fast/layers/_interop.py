"""Weights from and to other libraries: ``torch.nn.RNN`` (both ways) and Keras's ``SimpleRNN``.
torch is imported lazily, inside the functions: it is never a dependency."""

from __future__ import annotations

import numpy as np

from ._checks import _check_real


def from_torch(cls, module, backend):
    """What ``RNN.from_torch`` does, for the layer class ``cls``."""
    import torch  # lazily: torch is never a dependency

    if not isinstance(module, torch.nn.RNN):
        raise TypeError(f"module: expected a torch.nn.RNN, got {type(module).__name__}")
    dtypes = {torch.float32: np.float32, torch.float64: np.float64}
    w0 = module.weight_ih_l0
    if w0.dtype not in dtypes:
        raise TypeError(f"module: dtype {w0.dtype} is not supported; use float32 or float64")
    layer = cls(
        module.input_size,
        module.hidden_size,
        num_layers=module.num_layers,
        activation=module.nonlinearity,
        bias=module.bias,
        bidirectional=module.bidirectional,
        dropout=float(module.dropout),
        time_major=not module.batch_first,
        dtype=dtypes[w0.dtype],
        backend=backend,
    )
    layer.training = bool(module.training)

    def arr(t):
        return t.detach().cpu().to(torch.float64).numpy()

    weights = {}
    for layer_idx in range(layer.num_layers):
        for suffix in layer._suffixes:
            k = f"l{layer_idx}{suffix}"
            weights[f"Wx_{k}"] = arr(getattr(module, f"weight_ih_{k}")).T
            weights[f"Wh_{k}"] = arr(getattr(module, f"weight_hh_{k}")).T
            if layer.bias:  # folded in float64, then rounded once to the layer's dtype
                weights[f"b_{k}"] = arr(getattr(module, f"bias_ih_{k}")) + arr(getattr(module, f"bias_hh_{k}"))
    layer._set_params(weights)
    return layer


def to_torch(layer):
    """What ``RNN.to_torch`` does."""
    import torch

    dtype = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}[layer.dtype]
    module = torch.nn.RNN(
        layer.input_size,
        layer.hidden_size,
        num_layers=layer.num_layers,
        nonlinearity=layer.activation,
        bias=layer.bias,
        batch_first=not layer.time_major,
        dropout=layer.dropout,
        bidirectional=layer.bidirectional,
        dtype=dtype,
    )
    with torch.no_grad():
        for layer_idx in range(layer.num_layers):
            for suffix in layer._suffixes:
                k = f"l{layer_idx}{suffix}"
                Wx, Wh, b = layer._weights(layer_idx, suffix)
                getattr(module, f"weight_ih_{k}").copy_(torch.from_numpy(np.ascontiguousarray(Wx.T)))
                getattr(module, f"weight_hh_{k}").copy_(torch.from_numpy(np.ascontiguousarray(Wh.T)))
                if layer.bias:
                    getattr(module, f"bias_ih_{k}").copy_(torch.from_numpy(np.asarray(b)))
                    getattr(module, f"bias_hh_{k}").zero_()
    module.train(layer.training)
    return module


def from_keras_weights(cls, weights, activation, time_major, stateful, dtype, backend):
    """What ``RNN.from_keras_weights`` does, for the layer class ``cls``."""
    if not isinstance(weights, (list, tuple)):
        raise TypeError(
            f"weights: expected a list [kernel, recurrent_kernel(, bias)] as get_weights() "
            f"returns, got {type(weights).__name__}"
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
    if kernel.ndim != 2:
        raise ValueError(f"weights[0] (kernel): expected shape (D, H), got {kernel.shape}")
    D, H = kernel.shape
    if dtype is None:
        dtype = kernel.dtype if kernel.dtype in (np.float32, np.float64) else np.float32
    layer = cls(
        D,
        H,
        activation=activation,
        bias=len(arrays) == 3,
        time_major=time_major,
        stateful=stateful,
        dtype=dtype,
        backend=backend,
    )
    params = {"Wx_l0": kernel, "Wh_l0": arrays[1]}
    if len(arrays) == 3:
        params["b_l0"] = arrays[2]
    for i, (k, v) in enumerate(params.items()):
        if v.shape != layer.params[k].shape:
            raise ValueError(f"weights[{i}] ({names[i]}): expected shape {layer.params[k].shape}, got {v.shape}")
    layer._set_params(params)
    return layer
