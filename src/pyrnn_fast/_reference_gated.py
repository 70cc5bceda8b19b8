"""The NumPy reference of the gated cells (LSTM, GRU), written to be read, not to be fast.

As ``_reference`` for the vanilla cell, two layers:

* ``lstm_forward_kernel`` ... ``gru_backward_kernel``: the recurrence-kernel contract every
  backend implements (the ``numpy`` backend is exactly these);
* ``lstm_model_forward`` ... ``gru_model_backward``: the whole model, time-major, every
  gradient accumulated step by step, sharing no code with the orchestration: the ground truth
  of the tests.

Gates are column blocks of H: LSTM [i | f | g | o], GRU [r | z | n] (docs/DESIGN.md).
"""

from __future__ import annotations

import numpy as np

from ._reference import rows_per_step


def sigmoid(a):
    """1 / (1 + exp(-a)) without overflow: exp of a non-positive number only."""
    e = np.exp(-np.abs(a))
    return np.where(a >= 0, 1 / (1 + e), e / (1 + e)).astype(np.result_type(a), copy=False)


def _blocks(a, G):
    H = a.shape[-1] // G
    return [a[..., k * H : (k + 1) * H] for k in range(G)]


def _zeros_if_none(a, shape, dtype):
    return np.zeros(shape, dtype) if a is None else a


# --- the recurrence-kernel contract (time-major (T, N, ·) views) --------------------------


def _state(a, shape, dtype):
    """A copy of an optional state (zeros for None), which a backward updates row by row."""
    return np.zeros(shape, dtype) if a is None else np.array(a, dtype)


# Every kernel runs rows [0, active[t]) at step t only (``_reference.rows_per_step``; None: all):
# forward leaves the other rows of its outputs as they are; backward lets a row's dh_last
# (dc_last) enter at its own last step, and gives it as dh0 (dc0) for a row with no step.


def lstm_forward_kernel(xw, wh, h0, c0, hs, cs, gates, active=None):
    """gates[t] = [σ(a_i), σ(a_f), tanh(a_g), σ(a_o)] with a = xw[t] + h_{t-1} @ wh; cs[t] =
    c_t, hs[t] = h_t. ``gates`` may be ``xw`` itself (xw[t] is read before gates[t] is written)."""
    T, N, H = hs.shape
    h = _zeros_if_none(h0, (N, H), hs.dtype)
    c = _zeros_if_none(c0, (N, H), hs.dtype)
    for t, n in enumerate(rows_per_step(active, T, N)):
        i, f, g, o = _blocks(xw[t, :n] + h[:n] @ wh, 4)
        i, f, g, o = sigmoid(i), sigmoid(f), np.tanh(g), sigmoid(o)
        gates[t, :n] = np.concatenate([i, f, g, o], axis=-1)
        cs[t, :n] = f * c[:n] + i * g
        hs[t, :n] = o * np.tanh(cs[t, :n])
        h, c = hs[t], cs[t]


def lstm_backward_kernel(dhs, gates, cs, c0, wh, dh_last, dc_last, da, dh0, dc0, active=None):
    """da[t] = dL/da_t, the pre-activations' gradient [i | f | g | o]; dh0, dc0 = dL/dh0, dL/dc0."""
    T, N, H = dhs.shape
    dh_next = _state(dh_last, (N, H), dhs.dtype)
    dc_next = _state(dc_last, (N, H), dhs.dtype)
    for t, n in reversed(list(enumerate(rows_per_step(active, T, N)))):
        i, f, g, o = _blocks(gates[t, :n], 4)
        c_prev = cs[t - 1, :n] if t > 0 else _zeros_if_none(c0, (N, H), dhs.dtype)[:n]
        dh = dhs[t, :n] + dh_next[:n]
        tc = np.tanh(cs[t, :n])
        dc = dc_next[:n] + dh * o * (1 - tc * tc)
        da[t, :n] = np.concatenate(
            [dc * g * i * (1 - i), dc * c_prev * f * (1 - f), dc * i * (1 - g * g), dh * tc * o * (1 - o)], axis=-1
        )
        dc_next[:n] = dc * f
        dh_next[:n] = da[t, :n] @ wh.T
    dh0[...] = dh_next
    dc0[...] = dc_next


def gru_forward_kernel(xw, wh, bh, h0, hs, gates, active=None):
    """v = h_{t-1} @ wh + bh; gates[t] = [r, z, n, v_n]; hs[t] = (1 - z) n + z h_{t-1}."""
    T, N, H = hs.shape
    h = _zeros_if_none(h0, (N, H), hs.dtype)
    for t, m in enumerate(rows_per_step(active, T, N)):
        v = h[:m] @ wh if bh is None else h[:m] @ wh + bh
        u_r, u_z, u_n = _blocks(xw[t, :m], 3)
        v_r, v_z, v_n = _blocks(v, 3)
        r, z = sigmoid(u_r + v_r), sigmoid(u_z + v_z)
        n = np.tanh(u_n + r * v_n)
        gates[t, :m] = np.concatenate([r, z, n, v_n], axis=-1)
        hs[t, :m] = (1 - z) * n + z * h[:m]
        h = hs[t]


def gru_backward_kernel(dhs, hs, h0, gates, wh, dh_last, du, dv, dh0, active=None):
    """du[t] = dL/d(x_t·Wx + b), dv[t] = dL/d(h_{t-1}·Wh + bh); dh0 = dL/dh0."""
    T, N, H = dhs.shape
    dh_next = _state(dh_last, (N, H), dhs.dtype)
    for t, m in reversed(list(enumerate(rows_per_step(active, T, N)))):
        r, z, n, v_n = _blocks(gates[t, :m], 4)
        h_prev = hs[t - 1, :m] if t > 0 else _zeros_if_none(h0, (N, H), dhs.dtype)[:m]
        dh = dhs[t, :m] + dh_next[:m]
        da_n = dh * (1 - z) * (1 - n * n)
        da_r = da_n * v_n * r * (1 - r)
        da_z = dh * (h_prev - n) * z * (1 - z)
        du[t, :m] = np.concatenate([da_r, da_z, da_n], axis=-1)
        dv[t, :m] = np.concatenate([da_r, da_z, da_n * r], axis=-1)
        dh_next[:m] = dh * z + dv[t, :m] @ wh.T
    dh0[...] = dh_next


# --- the whole model, time-major: x (T, N, D) ---------------------------------------------


def lstm_model_forward(x, Wx, Wh, b=None, h0=None, c0=None):
    """Returns (hs, h_last, c_last, cs, gates) computed step by step."""
    T, N, _ = x.shape
    H = Wh.shape[0]
    dtype = np.result_type(x, Wx, Wh)
    h, c = _zeros_if_none(h0, (N, H), dtype), _zeros_if_none(c0, (N, H), dtype)
    hs, cs, gates = np.zeros((T, N, H), dtype), np.zeros((T, N, H), dtype), np.zeros((T, N, 4 * H), dtype)
    for t in range(T):
        a = x[t] @ Wx + h @ Wh + (0 if b is None else b)
        i, f, o = sigmoid(a[:, :H]), sigmoid(a[:, H : 2 * H]), sigmoid(a[:, 3 * H :])
        g = np.tanh(a[:, 2 * H : 3 * H])
        c = f * c + i * g
        h = o * np.tanh(c)
        hs[t], cs[t], gates[t] = h, c, np.hstack([i, f, g, o])
    return hs, h.copy(), c.copy(), cs, gates


def lstm_model_backward(dhs, x, Wx, Wh, hs, cs, gates, h0=None, c0=None, dh_last=None, dc_last=None):
    """Backpropagation through time; returns (dx, dWx, dWh, db, dh0, dc0)."""
    T, N, D = x.shape
    H = Wh.shape[0]
    dtype = hs.dtype
    h0, c0 = _zeros_if_none(h0, (N, H), dtype), _zeros_if_none(c0, (N, H), dtype)
    dx = np.zeros(x.shape, dtype)
    dWx, dWh, db = np.zeros((D, 4 * H), dtype), np.zeros((H, 4 * H), dtype), np.zeros(4 * H, dtype)
    dh_next = _zeros_if_none(dh_last, (N, H), dtype)
    dc_next = _zeros_if_none(dc_last, (N, H), dtype)
    for t in reversed(range(T)):
        i, f, g, o = gates[t, :, :H], gates[t, :, H : 2 * H], gates[t, :, 2 * H : 3 * H], gates[t, :, 3 * H :]
        h_prev, c_prev = (hs[t - 1], cs[t - 1]) if t > 0 else (h0, c0)
        dh = dhs[t] + dh_next
        do = dh * np.tanh(cs[t])
        dc = dc_next + dh * o * (1 - np.tanh(cs[t]) ** 2)
        da = np.hstack([dc * g * i * (1 - i), dc * c_prev * f * (1 - f), dc * i * (1 - g**2), do * o * (1 - o)])
        dWx += x[t].T @ da
        dWh += h_prev.T @ da
        db += da.sum(axis=0)
        dx[t] = da @ Wx.T
        dh_next = da @ Wh.T
        dc_next = dc * f
    return dx, dWx, dWh, db, dh_next, dc_next


def gru_model_forward(x, Wx, Wh, b=None, bh=None, h0=None):
    """Returns (hs, h_last, gates) computed step by step; gates[t] = [r, z, n, h_{t-1}·Wh_n + bh_n]."""
    T, N, _ = x.shape
    H = Wh.shape[0]
    dtype = np.result_type(x, Wx, Wh)
    h = _zeros_if_none(h0, (N, H), dtype)
    hs, gates = np.zeros((T, N, H), dtype), np.zeros((T, N, 4 * H), dtype)
    for t in range(T):
        u = x[t] @ Wx + (0 if b is None else b)
        v = h @ Wh + (0 if bh is None else bh)
        r = sigmoid(u[:, :H] + v[:, :H])
        z = sigmoid(u[:, H : 2 * H] + v[:, H : 2 * H])
        n = np.tanh(u[:, 2 * H :] + r * v[:, 2 * H :])
        h = (1 - z) * n + z * h
        hs[t], gates[t] = h, np.hstack([r, z, n, v[:, 2 * H :]])
    return hs, h.copy(), gates


def gru_model_backward(dhs, x, Wx, Wh, hs, gates, h0=None, dh_last=None):
    """Backpropagation through time; returns (dx, dWx, dWh, db, dbh, dh0)."""
    T, N, D = x.shape
    H = Wh.shape[0]
    dtype = hs.dtype
    h0 = _zeros_if_none(h0, (N, H), dtype)
    dx = np.zeros(x.shape, dtype)
    dWx, dWh = np.zeros((D, 3 * H), dtype), np.zeros((H, 3 * H), dtype)
    db, dbh = np.zeros(3 * H, dtype), np.zeros(3 * H, dtype)
    dh_next = _zeros_if_none(dh_last, (N, H), dtype)
    for t in reversed(range(T)):
        r, z, n, v_n = (gates[t, :, k * H : (k + 1) * H] for k in range(4))
        h_prev = hs[t - 1] if t > 0 else h0
        dh = dhs[t] + dh_next
        dn = dh * (1 - z)
        dz = dh * (h_prev - n)
        dan = dn * (1 - n**2)  # gradient w.r.t. u_n + r ⊙ v_n
        dar = dan * v_n * r * (1 - r)
        daz = dz * z * (1 - z)
        du = np.hstack([dar, daz, dan])
        dv = np.hstack([dar, daz, dan * r])
        dWx += x[t].T @ du
        db += du.sum(axis=0)
        dWh += h_prev.T @ dv
        dbh += dv.sum(axis=0)
        dx[t] = du @ Wx.T
        dh_next = dh * z + dv @ Wh.T
    return dx, dWx, dWh, db, dbh, dh_next
