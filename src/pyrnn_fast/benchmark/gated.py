"""The gated cells in the main job: inputs, FLOP counts and runners for LSTM and GRU on the
vanilla cell's shapes (``runners.SHAPES``), for each pyrnn_fast backend and the peers,
``torch.nn.LSTM`` / ``torch.nn.GRU`` (oneDNN's cells on CPU) and a jitted JAX ``lax.scan`` of
the same cell with the input projection hoisted; and the self-check of every backend's
gated kernels against the whole-model reference. torch and jax are imported lazily."""

from __future__ import annotations

import math

import numpy as np

from .. import _reference_gated
from . import runners
from .limits import against_limits, beside_peak_loop
from .runners import _check_op, _jax, _keeping_openmp_nesting, dims
from .selfcheck import CHECK_SHAPES, relative_error
from .timing import num_threads

GATES = {"lstm": 4, "gru": 3}


def make_inputs(cell, shape, dtype=np.float32, seed=0) -> dict:
    """Time-major inputs of a gated cell, ``{"x", "Wx", "Wh", "b"}`` (and the GRU's "bh"): x
    (T, N, D) ~ N(0, 1), Wx ~ U(±1/sqrt(D)), each gate block of Wh 0.9 × a random orthogonal
    matrix, small biases. No initial states: the runners pass zeros."""
    T, N, D, H = dims(shape)
    G = GATES[cell]
    rng = np.random.default_rng(seed)
    blocks = []
    for _ in range(G):
        q, r = np.linalg.qr(rng.standard_normal((H, H)))
        blocks.append(0.9 * q * np.sign(np.diag(r)))
    p = {
        "x": rng.standard_normal((T, N, D)),
        "Wx": rng.uniform(-1, 1, (D, G * H)) / math.sqrt(max(D, 1)),
        "Wh": np.concatenate(blocks, axis=1) if H else np.zeros((0, 0)),
        "b": 0.1 * rng.standard_normal(G * H),
    }
    if cell == "gru":
        p["bh"] = 0.1 * rng.standard_normal(G * H)
    return {k: np.ascontiguousarray(v, dtype=dtype) for k, v in p.items()}


def flops(cell, shape, op: str) -> float:
    """Floating-point operations of the GEMMs of one call: forward = 2·T·N·G·H·(D+H) (input
    projection + recurrence, G gate blocks); fwd+bwd = 3 × forward. The gates' elementwise
    arithmetic is not counted. Cell "rnn": the vanilla cell's count from ``runners``."""
    if cell == "rnn":
        return runners.flops(shape, op)
    T, N, D, H = dims(shape)
    _check_op(op)
    fwd = 2.0 * T * N * GATES[cell] * H * (D + H)
    return fwd if op == "forward" else 3.0 * fwd


def pyrnn_runner(backend: str, cell, shape, op: str, seed=0, dtype=np.float32):
    """One call of pyrnn_fast's lstm_forward / gru_forward (then its backward of sum(hs))."""
    import pyrnn_fast as prf

    _check_op(op)
    p = make_inputs(cell, shape, dtype, seed)
    x, Wx, Wh, b = p["x"], p["Wx"], p["Wh"], p["b"]
    keep = op != "forward"
    T, N, _, H = dims(shape)
    # Zero initial states passed, as torch (hx=None) and the JAX scan compute from them: with
    # None the kernels skip the t = 0 product and dWh's h0 term, which flops() counts.
    h0, c0 = np.zeros((N, H), dtype), np.zeros((N, H), dtype)
    dhs = np.ones((T, N, H), dtype)  # d sum(hs) / d hs, made once like the inputs

    def run():
        if cell == "lstm":
            lstm = prf.lstm_forward(x, Wx, Wh, b, h0, c0, time_major=True, workspace=keep, backend=backend)
            if keep:
                return prf.lstm_backward(
                    dhs, x, Wx, Wh, lstm.hs, lstm.workspace, h0, c0, time_major=True, backend=backend
                )
            return lstm
        gru = prf.gru_forward(x, Wx, Wh, b, p["bh"], h0, time_major=True, workspace=keep, backend=backend)
        if keep:
            return prf.gru_backward(dhs, x, Wx, Wh, gru.hs, gru.workspace, h0, time_major=True, backend=backend)
        return gru

    return _keeping_openmp_nesting(run) if backend == "numba" else run


def torch_runner(cell, shape, op: str, seed=0):
    """One call of ``torch.nn.LSTM`` / ``torch.nn.GRU`` (time-major, float32) with our weights."""
    import torch

    _check_op(op)
    torch.set_num_threads(num_threads())
    p = make_inputs(cell, shape, seed=seed)
    T, N, D, H = dims(shape)
    module = (torch.nn.LSTM if cell == "lstm" else torch.nn.GRU)(D, H, batch_first=False)
    with torch.no_grad():
        module.weight_ih_l0.copy_(torch.from_numpy(p["Wx"].T.copy()))
        module.weight_hh_l0.copy_(torch.from_numpy(p["Wh"].T.copy()))
        module.bias_ih_l0.copy_(torch.from_numpy(p["b"]))
        module.bias_hh_l0.copy_(torch.from_numpy(p["bh"]) if cell == "gru" else torch.zeros(GATES[cell] * H))
    xt = torch.from_numpy(p["x"])
    if op == "forward":

        def forward():
            with torch.no_grad():
                return module(xt)

        return forward

    xt.requires_grad_(True)
    params = [xt, *module.parameters()]

    def fwd_bwd():
        for q in params:
            q.grad = None
        out, _ = module(xt)
        out.sum().backward()
        return [q.grad for q in params]

    return fwd_bwd


def jax_runner(cell, shape, op: str, seed=0):
    """One call of a jitted ``lax.scan`` of the cell, ``x @ Wx + b`` hoisted out of the scan."""
    _check_op(op)
    jax = _jax()
    jnp = jax.numpy
    T, N, D, H = dims(shape)
    sig = jax.nn.sigmoid

    def lstm(params, x):
        Wx, Wh, b = params
        xw = x @ Wx + b

        def step(state, xw_t):
            h, c = state
            a = xw_t + h @ Wh
            i, f, g, o = sig(a[:, :H]), sig(a[:, H : 2 * H]), jnp.tanh(a[:, 2 * H : 3 * H]), sig(a[:, 3 * H :])
            c = f * c + i * g
            h = o * jnp.tanh(c)
            return (h, c), h

        zeros = jnp.zeros((N, H), x.dtype)
        return jax.lax.scan(step, (zeros, zeros), xw)[1]

    def gru(params, x):
        Wx, Wh, b, bh = params
        xw = x @ Wx + b

        def step(h, u):
            v = h @ Wh + bh
            r = sig(u[:, :H] + v[:, :H])
            z = sig(u[:, H : 2 * H] + v[:, H : 2 * H])
            n = jnp.tanh(u[:, 2 * H :] + r * v[:, 2 * H :])
            h = (1 - z) * n + z * h
            return h, h

        return jax.lax.scan(step, jnp.zeros((N, H), x.dtype), xw)[1]

    p = {k: jnp.asarray(v) for k, v in make_inputs(cell, shape, seed=seed).items()}
    fn = lstm if cell == "lstm" else gru
    params = (p["Wx"], p["Wh"], p["b"]) + ((p["bh"],) if cell == "gru" else ())
    x = p["x"]
    if op == "forward":
        f = jax.jit(fn)
        return lambda: f(params, x).block_until_ready()
    g = jax.jit(jax.grad(lambda q, x: fn(q, x).sum(), argnums=(0, 1)))
    return lambda: jax.block_until_ready(g(params, x))


def make_runner(impl: str, cell, shape, op: str, seed=0):
    """The runner for ``impl`` (a pyrnn_fast backend, "torch" or "jax") on ``cell`` ("lstm",
    "gru", or "rnn": the vanilla cell's runner from ``runners``)."""
    if cell == "rnn":
        return runners.make_runner(impl, shape, op, seed)
    if impl == "torch":
        return torch_runner(cell, shape, op, seed)
    if impl == "jax":
        return jax_runner(cell, shape, op, seed)
    return pyrnn_runner(impl, cell, shape, op, seed)


# --- self-check ------------------------------------------------------------------------------


def self_check(backends) -> tuple[dict, bool]:
    """Max relative error of each backend's LSTM and GRU (outputs, final states and every
    gradient), per dtype, over CHECK_SHAPES, against the whole-model float64 reference on the
    same (dtype-rounded) inputs. Returns ``({"lstm/<backend>": {dtype: err}, ...}, ok)``."""
    import pyrnn_fast as prf

    from .selfcheck import TOLERANCE

    errors: dict[str, dict[str, float]] = {}
    for cell in GATES:
        for backend in backends:
            key = f"{cell}/{backend}"
            errors[key] = {}
            for dtype in TOLERANCE:
                worst = 0.0
                for i, shape in enumerate(CHECK_SHAPES):
                    p = make_inputs(cell, shape, dtype, seed=i)
                    T, N, _, H = shape
                    rng = np.random.default_rng(i)
                    h0 = (0.5 * rng.standard_normal((N, H))).astype(dtype)
                    dhs = rng.standard_normal((T, N, H)).astype(dtype)
                    q = {k: v.astype(np.float64) for k, v in p.items()}
                    h64, d64 = h0.astype(np.float64), dhs.astype(np.float64)
                    pairs: list
                    if cell == "lstm":
                        lo = prf.lstm_forward(
                            p["x"], p["Wx"], p["Wh"], p["b"], h0, h0, time_major=True, backend=backend
                        )
                        lg = prf.lstm_backward(
                            dhs, p["x"], p["Wx"], p["Wh"], lo.hs, lo.workspace, h0, h0, time_major=True,
                            backend=backend,
                        )  # fmt: skip
                        hs, hl, cl, cs, gates = _reference_gated.lstm_model_forward(
                            q["x"], q["Wx"], q["Wh"], q["b"], h64, h64
                        )
                        ref = _reference_gated.lstm_model_backward(
                            d64, q["x"], q["Wx"], q["Wh"], hs, cs, gates, h64, h64
                        )
                        pairs = [(lo.hs, hs), (lo.h_last, hl), (lo.c_last, cl), *zip(lg, ref)]
                    else:
                        go = prf.gru_forward(
                            p["x"], p["Wx"], p["Wh"], p["b"], p["bh"], h0, time_major=True, backend=backend
                        )
                        gg = prf.gru_backward(
                            dhs, p["x"], p["Wx"], p["Wh"], go.hs, go.workspace, h0, time_major=True, backend=backend
                        )
                        hs, hl, gates = _reference_gated.gru_model_forward(
                            q["x"], q["Wx"], q["Wh"], q["b"], q["bh"], h64
                        )
                        ref = _reference_gated.gru_model_backward(d64, q["x"], q["Wx"], q["Wh"], hs, gates, h64)
                        pairs = [(go.hs, hs), (go.h_last, hl), *zip(gg, ref)]
                    worst = max(worst, *(relative_error(a, r, dtype) for a, r in pairs))
                errors[key][dtype] = worst
    ok = all(e <= TOLERANCE[dt] for errs in errors.values() for dt, e in errs.items())
    return errors, ok


def fraction_of_peak(
    results: dict, default: str, peak_gflops: float, ceiling_gflops: float, threads: int, repeat: int
) -> dict:
    """{cell: {op: ``limits.against_limits(..)``}} of the ``large`` shape, float32, from the
    tables, and against the peak loop timed beside another ``repeat`` rounds of the call."""
    out = {}
    for cell, shapes in results.items():
        if "large" in shapes and default in shapes["large"]:
            out[cell] = {
                op: against_limits(
                    m["gflops"],
                    peak_gflops,
                    ceiling_gflops,
                    m["best_gflops"],
                    beside_peak_loop(
                        pyrnn_runner(default, cell, "large", op), flops(cell, "large", op), np.float32, threads, repeat
                    )[0],
                )
                for op, m in shapes["large"][default].items()
            }
    return out
