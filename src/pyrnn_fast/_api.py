"""The public functional API: validation, the big GEMMs, and one call into a backend's kernel.

    forward:  XW = X·Wx + b (one GEMM), then hs = kernel.forward(XW, Wh, h0) (the recurrence)
    backward: dA = kernel.backward(dhs, hs, Wh, dh_last), then
              dWx = Xᵀ·dA, dx = dA·Wxᵀ, dWh = H_prevᵀ·dA, db = Σ dA   (one GEMM or sum each)

Every backend runs through this one path, so backends differ only in the recurrence.
"""
from __future__ import annotations

from typing import Any, Literal, NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ._backends import get_backend

Activation = Literal["tanh", "relu"]
_ACTIVATIONS = ("tanh", "relu")
_SUPPORTED_KINDS = "biuf"  # bool, signed, unsigned, float


class RNNGrads(NamedTuple):
    """Gradients from ``rnn_backward``; each has the shape of what it is the gradient of."""

    dx: NDArray[np.floating[Any]]
    dWx: NDArray[np.floating[Any]]
    dWh: NDArray[np.floating[Any]]
    db: NDArray[np.floating[Any]]
    dh0: NDArray[np.floating[Any]]


def _check_activation(activation) -> str:
    if not isinstance(activation, str) or activation not in _ACTIVATIONS:
        raise ValueError(f"activation: expected one of {_ACTIVATIONS}, got {activation!r}")
    return activation


def _as_arrays(required: tuple, **named) -> dict:
    """np.asarray each non-None input and reject what the library cannot compute with: a
    missing required argument, non-numeric objects, and dtypes other than real numbers."""
    out: dict[str, np.ndarray | None] = {}
    for name, a in named.items():
        if a is None:
            if name in required:
                raise TypeError(f"{name}: expected an array, got None")
            out[name] = None
            continue
        try:
            arr = np.asarray(a)
        except Exception as e:  # ragged lists and the like
            raise TypeError(f"{name}: cannot be converted to a numeric array ({e})") from None
        if arr.dtype.kind not in _SUPPORTED_KINDS:
            what = type(a).__name__ if arr.dtype.kind == "O" and arr.ndim == 0 else f"dtype {arr.dtype}"
            raise TypeError(f"{name}: expected a real numeric array (float32 or float64), got {what}")
        out[name] = arr
    return out


def _result_dtype(arrays: dict) -> np.dtype:
    dtype = np.result_type(*[a.dtype for a in arrays.values() if a is not None], np.float32)
    if dtype not in (np.float32, np.float64):
        names = [n for n, a in arrays.items() if a is not None and a.dtype.itemsize > 8]
        raise TypeError(f"{', '.join(names) or 'inputs'}: dtype {dtype} is not supported; use float32 or float64")
    return dtype


def _expect_shape(name: str, a: np.ndarray, expected: tuple, meaning: str) -> None:
    if a.shape != expected:
        raise ValueError(f"{name}: expected shape {meaning} = {expected}, got {a.shape}")


def _check_ndim(name: str, a: np.ndarray, ndim: int, meaning: str) -> None:
    if a.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D array {meaning}, got shape {a.shape}")


def _validate(arrays: dict, time_major: bool) -> tuple[int, int, int, int]:
    """Check every shape against x, Wx and Wh; returns (T, N, D, H)."""
    x, Wx, Wh = arrays["x"], arrays["Wx"], arrays["Wh"]
    layout = "(T, N, D)" if time_major else "(N, T, D)"
    _check_ndim("x", x, 3, layout)
    _check_ndim("Wx", Wx, 2, "(D, H)")
    _check_ndim("Wh", Wh, 2, "(H, H)")
    if time_major:
        T, N, D = x.shape
    else:
        N, T, D = x.shape
    H = Wx.shape[1]
    _expect_shape("Wx", Wx, (D, H), f"(D, H) with D = x.shape[2]")
    _expect_shape("Wh", Wh, (H, H), f"(H, H) with H = Wx.shape[1]")
    seq = (T, N, H) if time_major else (N, T, H)
    seq_meaning = "(T, N, H)" if time_major else "(N, T, H)"
    for name, expected, meaning in (("b", (H,), "(H,)"), ("h0", (N, H), "(N, H)"), ("dh_last", (N, H), "(N, H)"),
                                    ("hs", seq, seq_meaning), ("dhs", seq, seq_meaning)):
        if arrays.get(name) is not None:
            _expect_shape(name, arrays[name], expected, meaning)
    return T, N, D, H


def _prepare(named: dict, required: tuple, time_major) -> tuple[dict, np.dtype, tuple]:
    if not isinstance(time_major, (bool, np.bool_)):
        raise TypeError(f"time_major: expected a bool, got {type(time_major).__name__}")
    arrays = _as_arrays(required, **named)
    dtype = _result_dtype(arrays)
    dims = _validate(arrays, bool(time_major))
    return arrays, dtype, dims


def _tm(a: np.ndarray, time_major: bool) -> np.ndarray:
    """The time-major view of a sequence array in the caller's layout."""
    return a if time_major else a.transpose(1, 0, 2)


# --- the layouts the kernels take ------------------------------------------------------
# The compiled kernels address an array in place when bindings.cpp's checked() accepts it:
# native byte order, data and strides aligned to the element size, no negative stride (axes
# of length <= 1 are never stepped along) and, for all but the GEMMs' weight operand, a
# contiguous last axis. Zero strides (np.broadcast_to) are fine for inputs. Every other
# layout NumPy can make (negative or odd strides, unaligned, byte-swapped, a field of a
# packed structured array) is copied here, once, so that the binding's checks (kept as the
# out-of-bounds guard) never fail for a user's array. The Python backends take the same
# arrays, so every backend sees the same values.

def _addressable(a: np.ndarray, unit_last: bool) -> bool:
    if a.size == 0:  # copying is free, and NumPy calls any empty array aligned
        return False
    if not (a.dtype.isnative and a.flags.aligned):  # aligned: the data pointer (and strides)
        return False
    if any(n > 1 and (s < 0 or s % a.itemsize) for n, s in zip(a.shape, a.strides)):
        return False
    return not unit_last or a.shape[-1] <= 1 or a.strides[-1] == a.itemsize


def _in_kernel_layout(a: ArrayLike, dtype: np.dtype, unit_last: bool = True) -> np.ndarray:
    """`a` as a `dtype` array the kernels can address: itself (or np.asarray's dtype
    conversion) when they can, else a C-contiguous copy."""
    a = np.asarray(a, dtype=dtype)
    return a if _addressable(a, unit_last) else np.array(a, order="C")


def _kernel_matrix(a: ArrayLike | None, dtype: np.dtype) -> np.ndarray | None:
    """A C-contiguous aligned native matrix (or None). Matrices are small next to the
    sequences; one layout for them (C) keeps Numba from compiling a variant per layout."""
    if a is None:
        return None
    a = np.asarray(a, dtype=dtype)
    return a if a.flags.c_contiguous and _addressable(a, True) else np.array(a, order="C")


def _kernel_seq(a: ArrayLike, dtype: np.dtype) -> np.ndarray:
    """A sequence array (T, N, ·) the kernels can address in place: strided views such as
    the transposed batch-major layout are kept, other layouts copied."""
    return _in_kernel_layout(a, dtype, unit_last=True)


def _kernel_weights(Wx: ArrayLike, dtype: np.dtype) -> np.ndarray:
    """Wx for the GEMMs, which take any non-negative strides (Fortran order stays a view)."""
    return _in_kernel_layout(Wx, dtype, unit_last=False)


def _forward_into(kernel, x_tm, Wx, Wh, b, h0, hs_tm, act, dtype):
    """hs_tm = the recurrence over the time-major x_tm, for validated inputs of `dtype`
    (x_tm and h0 already as the kernels take them). XW doubles as the output: the kernel
    overwrites xw[t] with h_t once it has read it."""
    kernel.rows_gemm(x_tm, _kernel_weights(Wx, dtype), _kernel_matrix(b, dtype), hs_tm)
    kernel.forward(hs_tm, _kernel_matrix(Wh, dtype), h0, hs_tm, act)


def rnn_forward(x: ArrayLike, Wx: ArrayLike, Wh: ArrayLike, b: ArrayLike | None = None, h0: ArrayLike | None = None,
                *, activation: Activation = "tanh", time_major: bool = False,
                backend: str | None = None) -> tuple[NDArray[np.floating[Any]], NDArray[np.floating[Any]]]:
    """Run a vanilla RNN over a whole sequence.

    h_t = act(x_t · Wx + h_{t-1} · Wh + b), h_{-1} = h0 (zeros when None).

    Parameters
    ----------
    x : array (N, T, D), or (T, N, D) with ``time_major=True``
    Wx : array (D, H)
    Wh : array (H, H)
    b : array (H,), optional
    h0 : array (N, H), optional
    activation : 'tanh' (default) or 'relu'
    time_major : bool, the layout of ``x`` and of the returned ``hs``
    backend : 'cpp', 'numba', 'numpy' or None (``$PYRNN_FAST_BACKEND``, else the best available)

    Returns
    -------
    hs : array (N, T, H) (or (T, N, H)), every hidden state
    h_last : array (N, H), the last hidden state (h0, or zeros, when T = 0)

    The result dtype is ``np.result_type(<inputs>, np.float32)`` (float32 stays float32, any
    float64 gives float64, integers give float64), computed natively in that dtype. Inputs
    are never modified.
    """
    act = _check_activation(activation)
    kernel = get_backend(backend)
    arrays, dtype, (T, N, D, H) = _prepare(dict(x=x, Wx=Wx, Wh=Wh, b=b, h0=h0), ("x", "Wx", "Wh"), time_major)
    x = _kernel_seq(arrays["x"], dtype)
    h0 = _kernel_matrix(arrays["h0"], dtype)
    hs = np.empty(x.shape[:2] + (H,), dtype)
    hs_tm = _tm(hs, time_major)
    _forward_into(kernel, _tm(x, time_major), arrays["Wx"], arrays["Wh"], arrays["b"], h0, hs_tm, act, dtype)
    if T > 0:
        h_last = hs_tm[-1].copy()
    else:
        h_last = h0.copy() if h0 is not None else np.zeros((N, H), dtype)
    return hs, h_last


def rnn_backward(dhs: ArrayLike, x: ArrayLike, Wx: ArrayLike, Wh: ArrayLike, hs: ArrayLike,
                 h0: ArrayLike | None = None, *, dh_last: ArrayLike | None = None, activation: Activation = "tanh",
                 time_major: bool = False, backend: str | None = None) -> RNNGrads:
    """Backpropagation through time for ``rnn_forward``.

    Parameters
    ----------
    dhs : array like ``hs``, the gradient of the loss w.r.t. every output
    x, Wx, Wh, h0 : as given to ``rnn_forward`` (b is not needed: hs holds its effect)
    hs : the ``hs`` that ``rnn_forward`` returned
    dh_last : array (N, H), optional, a gradient w.r.t. ``h_last`` added at the last step
    activation, time_major, backend : as for ``rnn_forward``

    Returns
    -------
    RNNGrads(dx, dWx, dWh, db, dh0): db is what a bias would receive, dh0 what the initial
    state receives (also when h0 was None); dh0 equals dh_last (or zeros) when T = 0.
    """
    act = _check_activation(activation)
    kernel = get_backend(backend)
    arrays, dtype, (T, N, D, H) = _prepare(
        dict(dhs=dhs, x=x, Wx=Wx, Wh=Wh, hs=hs, h0=h0, dh_last=dh_last), ("dhs", "x", "Wx", "Wh", "hs"), time_major)
    x = _kernel_seq(arrays["x"], dtype)
    Wx = _kernel_weights(arrays["Wx"], dtype)
    hs = _kernel_seq(arrays["hs"], dtype)
    dhs = _kernel_seq(arrays["dhs"], dtype)
    h0 = _kernel_matrix(arrays["h0"], dtype)
    seq_shape = hs.shape

    da = np.empty(seq_shape, dtype)  # in the caller's layout, C-contiguous
    dh0 = np.empty((N, H), dtype)
    hs_tm, da_tm = _tm(hs, time_major), _tm(da, time_major)
    kernel.backward(_tm(dhs, time_major), hs_tm, _kernel_matrix(arrays["Wh"], dtype),
                    _kernel_matrix(arrays["dh_last"], dtype), da_tm, dh0, act)

    x_tm = _tm(x, time_major)
    dx = np.empty(x.shape, dtype)
    kernel.rows_gemm(da_tm, Wx.T, None, _tm(dx, time_major))       # dx = dA·Wxᵀ
    dWx = np.empty((D, H), dtype)
    kernel.reduce_gemm(x_tm, da_tm, dWx, False)                      # dWx = Xᵀ·dA
    dWh = np.empty((H, H), dtype)
    kernel.reduce_gemm(hs_tm[:-1], da_tm[1:], dWh, False)            # dWh = Σ_t h_{t-1}ᵀ·dA_t
    if h0 is not None and T > 0:
        kernel.reduce_gemm(h0[None], da_tm[:1], dWh, True)
    # Summed in float64: NumPy adds the N*T rows one after another (its pairwise summation
    # is only along a contiguous axis), which in float32 stalls at 2^24 (db = 2^24 instead of
    # 2^25 for 2^25 rows of ones). Measured cost over float32: +2 ms on `large` (0.2 % of its
    # backward), +0.3 ms on `typical` (0.6 %), +0.05 ms on `stream` (2 %).
    db = da.reshape(N * T, H).sum(axis=0, dtype=np.float64).astype(dtype, copy=False)
    return RNNGrads(dx, dWx, dWh, db, dh0)
