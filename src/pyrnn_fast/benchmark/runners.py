"""What the benchmark runs: the named shapes, their inputs and FLOP counts, and runners
(zero-argument callables doing one forward or forward+backward) for each pyrnn_fast backend
and the peers, PyTorch's CPU ``nn.RNN`` and a jitted JAX ``lax.scan`` with the input
projection hoisted. torch, jax and numba are imported lazily, inside the functions that need
them, so importing this module costs only NumPy.
"""

from __future__ import annotations

import importlib
import math
import os
import time

import numpy as np

from .._backends import backends, get_backend
from .timing import SETTLE_SECONDS, best_seconds, num_threads

#: (T, N, D, H) of each named benchmark shape.
SHAPES = {
    "stream": (1000, 1, 32, 128),  # latency-bound
    "typical": (100, 32, 128, 256),
    "large": (50, 128, 512, 1024),  # compute-bound
    "tiny": (8, 16, 8, 32),  # call-overhead-bound
}
OPS = ("forward", "fwd+bwd")
PEERS = ("torch", "jax")


def dims(shape) -> tuple[int, int, int, int]:
    """(T, N, D, H) of a shape given by name (a key of ``SHAPES``) or as a tuple."""
    return SHAPES[shape] if isinstance(shape, str) else tuple(shape)


def make_inputs(shape, dtype=np.float32, seed=0):
    """Time-major inputs ``(x, Wx, Wh, b, h0)`` for a shape, reproducible from ``seed``.

    x (T, N, D) ~ N(0, 1); Wx (D, H) ~ U(±1/sqrt(D)); Wh (H, H) = 0.9 × a random orthogonal
    matrix, so the recurrence neither explodes nor dies out; b (H,) small; h0 (N, H) zeros.
    """
    T, N, D, H = dims(shape)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((T, N, D))
    Wx = rng.uniform(-1, 1, (D, H)) / math.sqrt(max(D, 1))
    q, r = np.linalg.qr(rng.standard_normal((H, H)))
    Wh = 0.9 * q * np.sign(np.diag(r))
    b = 0.1 * rng.standard_normal(H)
    h0 = np.zeros((N, H))
    return tuple(np.ascontiguousarray(a, dtype=dtype) for a in (x, Wx, Wh, b, h0))


def _check_op(op: str) -> None:
    if op not in OPS:
        raise ValueError(f"op: expected one of {OPS}, got {op!r}")


def flops(shape, op: str) -> float:
    """Floating-point operations of one call: forward = 2·T·N·H·(D+H) (input GEMM + recurrence);
    fwd+bwd = 3 × forward (backward = recurrence GEMM + dWh, dWx and dx GEMMs)."""
    T, N, D, H = dims(shape)
    _check_op(op)
    fwd = 2.0 * T * N * H * (D + H)
    return fwd if op == "forward" else 3.0 * fwd


# --- runners: zero-argument callables that do one forward or forward+backward ----------


def pyrnn_runner(backend: str, shape, op: str, seed=0, dtype=np.float32):
    """One call of pyrnn_fast with ``backend`` (forward, or forward then backward of sum(hs))."""
    import pyrnn_fast as prf

    _check_op(op)
    x, Wx, Wh, b, h0 = make_inputs(shape, dtype=dtype, seed=seed)
    dhs = np.ones(x.shape[:2] + Wh.shape[1:], dtype)  # d sum(hs) / d hs, made once like the inputs

    def run():
        out = prf.rnn_forward(x, Wx, Wh, b, h0, time_major=True, backend=backend)
        if op == "forward":
            return out
        hs = out[0]
        return prf.rnn_backward(dhs, x, Wx, Wh, hs, h0, time_major=True, backend=backend)

    return _keeping_openmp_nesting(run) if backend == "numba" else run


def _keeping_openmp_nesting(fn):
    """``fn`` with the OpenMP nesting setting of the calling thread restored after each call.

    Numba's OpenMP threading layer turns nested parallelism on (max-active-levels 1 -> 255) in
    libgomp it loads by the name ``libgomp.so.1``: the one already loaded under that soname
    (PyTorch's, or ours in a source build), else the system's. PyTorch's CPU ops on that
    runtime then run their parallel regions nested and create threads for each one: measured,
    ``torch.nn.RNN`` on `typical` went from 13 to 270 ms for the rest of the process. The main
    job times everything in one process, so the numba runner puts the setting back, in the
    runtime that ``libgomp.so.1`` names (loaded here if nothing has loaded it yet, as numba
    would: the repaired wheel's own copy has another name, and numba never touches it).
    """
    import ctypes

    try:  # a source build's kernels load libgomp.so.1 (the one numba will share)
        from .. import _core  # noqa: F401
    except ImportError:
        pass
    try:  # no libgomp.so.1 on this system: numba has no OpenMP layer to run here either
        gomp = ctypes.CDLL("libgomp.so.1", mode=os.RTLD_LAZY)
        get_levels, set_levels = gomp.omp_get_max_active_levels, gomp.omp_set_max_active_levels
    except (OSError, AttributeError):
        return fn

    def run():
        levels = get_levels()
        try:
            return fn()
        finally:
            set_levels(levels)

    return run


def torch_runner(shape, op: str, seed=0):
    """One call of ``torch.nn.RNN`` (tanh, time-major, float32) with our weights converted."""
    import torch

    _check_op(op)
    torch.set_num_threads(num_threads())
    x, Wx, Wh, b, h0 = make_inputs(shape, seed=seed)
    T, N, D, H = dims(shape)
    rnn = torch.nn.RNN(D, H, nonlinearity="tanh", batch_first=False)
    with torch.no_grad():
        rnn.weight_ih_l0.copy_(torch.from_numpy(Wx.T.copy()))
        rnn.weight_hh_l0.copy_(torch.from_numpy(Wh.T.copy()))
        rnn.bias_ih_l0.copy_(torch.from_numpy(b))
        rnn.bias_hh_l0.zero_()
    xt = torch.from_numpy(x)
    h0t = torch.from_numpy(h0)[None]  # (layers, N, H)
    if op == "forward":

        def forward():
            with torch.no_grad():
                return rnn(xt, h0t)

        return forward

    xt.requires_grad_(True)
    params = [xt, *rnn.parameters()]

    def fwd_bwd():
        for p in params:
            p.grad = None
        out, _ = rnn(xt, h0t)
        out.sum().backward()
        return [p.grad for p in params]

    return fwd_bwd


def _jax():
    """jax, with float32 as the default dtype (x64 off)."""
    import jax

    jax.config.update("jax_enable_x64", False)
    return jax


def jax_runner(shape, op: str, seed=0):
    """One call of a jitted ``lax.scan`` RNN: ``xw = x @ Wx + b`` hoisted, then h = tanh(xw_t + h @ Wh)."""
    _check_op(op)
    jax = _jax()
    jnp = jax.numpy

    def rnn(params, x):
        Wx, Wh, b, h0 = params
        xw = (x @ Wx) + b  # one matmul over all time steps

        def step(h, xw_t):
            h = jnp.tanh(xw_t + h @ Wh)
            return h, h

        _, hs = jax.lax.scan(step, h0, xw)
        return hs

    x, Wx, Wh, b, h0 = (jnp.asarray(a) for a in make_inputs(shape, seed=seed))
    params = (Wx, Wh, b, h0)
    if op == "forward":
        f = jax.jit(rnn)
        return lambda: f(params, x).block_until_ready()

    g = jax.jit(jax.grad(lambda p, x: rnn(p, x).sum(), argnums=(0, 1)))
    return lambda: jax.block_until_ready(g(params, x))


def make_runner(impl: str, shape, op: str, seed=0):
    """The runner for ``impl``: a pyrnn_fast backend name, "torch" or "jax"."""
    if impl == "torch":
        return torch_runner(shape, op, seed)
    if impl == "jax":
        return jax_runner(shape, op, seed)
    return pyrnn_runner(impl, shape, op, seed)


def available_peers() -> list[str]:
    """Which of the peers ("torch", "jax") can be imported."""
    found = []
    for name in PEERS:
        try:
            importlib.import_module(name)
        except Exception:  # ImportError, or a broken install
            continue
        found.append(name)
    return found


def sgemm_peak(threads=None, n=1024, calls=10, peers=None) -> dict:
    """Best GFLOP/s of an n×n float32 matmul with ``np.matmul`` and (when installed) a jitted
    ``jax.numpy.matmul``; returns ``{"numpy": .., "jax": .. or None, "max": .., "threads": ..,
    "cpp": ..}``. "max" (the peak the bar is measured against) is the best of numpy and jax;
    "cpp" is the compiled backend's own GEMM on the same product, for comparison only.

    The thread count is whatever ``limit_threads`` set up; ``threads`` is recorded only.
    """
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((n, n)).astype(np.float32) for _ in range(2))
    gflop = 2.0 * n**3 / 1e9

    def best(fn):
        return gflop / best_seconds(fn, calls)

    out = {"numpy": best(lambda: np.matmul(a, b)), "jax": None, "threads": threads}
    if "jax" in (available_peers() if peers is None else peers):
        time.sleep(SETTLE_SECONDS)  # OpenBLAS's helpers spin ~0.1 s after NumPy's product
        jax = _jax()
        mm = jax.jit(jax.numpy.matmul)
        ja, jb = jax.numpy.asarray(a), jax.numpy.asarray(b)
        out["jax"] = best(lambda: mm(ja, jb).block_until_ready())
    out["max"] = max(v for k, v in out.items() if k in ("numpy", "jax") and v)
    out["cpp"] = None
    if "cpp" in backends():
        c = np.empty((1, n, n), np.float32)
        rows_gemm = get_backend("cpp").rows_gemm
        time.sleep(SETTLE_SECONDS)
        out["cpp"] = best(lambda: rows_gemm(a[None], b, None, c))
    return out
