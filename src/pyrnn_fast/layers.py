"""Layers on top of the functional API: ``RNN`` (stacked, bidirectional, variable-length,
dropout, stateful, streaming, PyTorch/Keras interop) and ``TimeRNN`` (the textbook class).

Every recurrence here is a call to ``rnn_forward`` / ``rnn_backward`` (``step`` calls the
same orchestration, ``_forward_into``, with buffers it keeps); this module only arranges the
calls (which samples, which time steps, which direction) and keeps the caches.

Variable lengths: masking is not something ``rnn_forward`` does, so a batch with ``lengths``
is run in *segments* between consecutive distinct lengths. With distinct non-zero lengths
L_1 < L_2 < ... < L_k, segment j covers the steps [L_{j-1}, L_j) (L_0 = 0) and runs only the
samples with length >= L_j, starting from their current states. A sample therefore stops
exactly at its last valid step, its outputs past it stay zero, and no arithmetic is spent on
padding. Cost: k <= min(N, T) calls to ``rnn_forward`` per layer and direction (one call
without lengths, or when all lengths are equal), the same arithmetic as the valid steps
alone, plus a gather/scatter copy of the active samples' inputs and outputs per segment.
The backward pass runs the segments in reverse, carrying each sample's dh across them.

The reverse direction of a bidirectional layer reverses each sample's valid prefix
(x_rev[t, n] = x[len_n - 1 - t, n] for t < len_n) with an index gather, runs the forward
direction's code on it and un-reverses the outputs with the same gather (the permutation is
its own inverse).
"""
from __future__ import annotations

import json
import numbers
import os
import zipfile
import zlib

import numpy as np

from ._api import rnn_backward, rnn_forward
from ._backends import get_backend
from ._orchestration import _forward_into, _kernel_matrix, _kernel_seq

__all__ = ["RNN", "TimeRNN"]

_FORMAT_VERSION = 1
_CONFIG_KEY = "__config__"


# --- helpers: one direction of one layer, time-major, over length segments --------------

def _segments(lengths, T):
    """[(t0, t1, sel)]: run steps [t0, t1) for the samples `sel` (None = all of them)."""
    if lengths is None:
        return [(0, T, None)] if T > 0 else []
    N = lengths.shape[0]
    segs, t0 = [], 0
    for L in np.unique(lengths[lengths > 0]):
        active = np.flatnonzero(lengths >= L)
        segs.append((t0, int(L), None if active.size == N else active))
        t0 = int(L)
    return segs


def _take(a, t0, t1, sel):
    return a[t0:t1] if sel is None else a[t0:t1, sel]


def _rows(h, sel):
    return h if sel is None else h[sel]


def _run_forward(x, Wx, Wh, b, h0, segs, act, backend):
    """One direction over time-major x (T, N, D) from h0 (N, H), by segments.
    Returns hs (T, N, H) (zero where a sample is past its length), h_n (N, H), and the
    state each segment started from (what its backward needs)."""
    T, N = x.shape[:2]
    H = Wh.shape[0]
    if len(segs) == 1 and segs[0][:2] == (0, T) and segs[0][2] is None:  # the common case: one call
        hs, h = rnn_forward(x, Wx, Wh, b, h0, activation=act, time_major=True, backend=backend)
        return hs, h, [h0]
    h = h0.copy()
    starts = []
    hs = np.zeros((T, N, H), h.dtype)
    for t0, t1, sel in segs:
        h_start = h.copy() if sel is None else h[sel]
        seg_hs, h_last = rnn_forward(_take(x, t0, t1, sel), Wx, Wh, b, h_start, activation=act,
                                     time_major=True, backend=backend)
        if sel is None:
            hs[t0:t1] = seg_hs
            h[...] = h_last
        else:
            hs[t0:t1, sel] = seg_hs
            h[sel] = h_last
        starts.append(h_start)
    return hs, h, starts


def _run_backward(dhs, x, Wx, Wh, hs, starts, dh_last, segs, act, backend):
    """Backward of ``_run_forward``: returns dx (T, N, D), dWx, dWh, db, dh0 (N, H)."""
    T, N, D = x.shape
    H = Wh.shape[0]
    dtype = hs.dtype
    if len(segs) == 1 and segs[0][:2] == (0, T) and segs[0][2] is None:
        g = rnn_backward(dhs, x, Wx, Wh, hs, starts[0], dh_last=dh_last, activation=act, time_major=True,
                         backend=backend)
        return g.dx, g.dWx, g.dWh, g.db, g.dh0
    dx = np.zeros((T, N, D), dtype)
    dWx, dWh, db = np.zeros((D, H), dtype), np.zeros((H, H), dtype), np.zeros(H, dtype)
    dh = dh_last.copy()
    for (t0, t1, sel), h_start in reversed(list(zip(segs, starts))):
        g = rnn_backward(_take(dhs, t0, t1, sel), _take(x, t0, t1, sel), Wx, Wh, _take(hs, t0, t1, sel), h_start,
                         dh_last=_rows(dh, sel), activation=act, time_major=True, backend=backend)
        if sel is None:
            dx[t0:t1] = g.dx
            dh[...] = g.dh0
        else:
            dx[t0:t1, sel] = g.dx
            dh[sel] = g.dh0
        dWx += g.dWx
        dWh += g.dWh
        db += g.db
    return dx, dWx, dWh, db, dh


def _reverse_index(lengths, T, N):
    """rev (T, N): rev[t, n] = len_n - 1 - t for t < len_n, else t (an involution)."""
    t = np.arange(T)[:, None]
    L = np.full(N, T) if lengths is None else lengths
    return np.where(t < L[None, :], L[None, :] - 1 - t, t)


def _reverse(a, rev):
    """Each sample's valid prefix of the time-major a (T, N, ...) reversed in time."""
    if rev is None:  # no lengths: the whole sequence
        return np.ascontiguousarray(a[::-1])
    return a[rev, np.arange(a.shape[1])[None, :]]


def _check_real(name, a):
    if a is None:
        raise TypeError(f"{name}: expected an array, got None")
    try:
        a = np.asarray(a)
    except Exception as e:
        raise TypeError(f"{name}: cannot be converted to a numeric array ({e})") from None
    if a.dtype.kind not in "biuf":
        got = f"a {type(a[()]).__name__}" if a.dtype.kind == "O" and a.ndim == 0 else f"dtype {a.dtype}"
        raise TypeError(f"{name}: expected a real numeric array, got {got}")
    return a


def _check_dtype(dtype):
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype: expected float32 or float64, got {dtype!r}") from None
    if dt not in (np.float32, np.float64):
        raise TypeError(f"dtype: expected float32 or float64, got {dt}")
    return dt


def _check_int(name, v, minimum):
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{name}: expected an int >= {minimum}, got {type(v).__name__}")
    if v < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {v}")
    return int(v)


def _orthogonal(rng, n, dtype):
    """A uniformly distributed (Haar) random orthogonal n×n matrix."""
    if n == 0:
        return np.zeros((0, 0), dtype)
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return (q * np.sign(np.diag(r))).astype(dtype)


# --- RNN.load: a file checked before it is read ------------------------------------------

class _BadFile(Exception):
    """A file that is not one ``RNN.save`` writes (RNN.load turns it into a ValueError)."""


_CONFIG_TYPES = dict(input_size=int, hidden_size=int, num_layers=int, activation=str, bias=bool,
                     bidirectional=bool, dropout=(int, float), time_major=bool, stateful=bool, dtype=str,
                     seed=(int, type(None)), format_version=int)
_MAX_CONFIG_BYTES = 1 << 16  # the config save writes is ~300 bytes
_READ_CHUNK = 1 << 24


def _npy_header(m, name):
    """(shape, fortran_order, dtype) from the .npy header at the start of the stream m; it
    reads only the header (np.lib.format bounds its size)."""
    version = np.lib.format.read_magic(m)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(m)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(m)
    raise _BadFile(f"{name}: unsupported .npy format version {version}")


def _check_member(zf, info, shape, dtype_ok, expected):
    """(fortran_order, dtype, data offset) of a member whose .npy header has `shape` and a
    dtype that dtype_ok accepts, and whose size in the zip directory is header + data."""
    name = info.filename[:-4]
    with zf.open(info) as m:
        got_shape, fortran, dtype = _npy_header(m, name)
        offset = m.tell()
    if dtype.hasobject or not dtype_ok(dtype):
        raise _BadFile(f"{name}: dtype {dtype}, expected {expected}")
    if got_shape != shape:
        raise _BadFile(f"{name}: shape {got_shape}, expected {shape}")
    nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if info.file_size != offset + nbytes:
        raise _BadFile(f"{name}: {info.file_size - offset} bytes of data, its header declares {nbytes}")
    return fortran, dtype, offset


def _read_member(zf, info, shape, fortran, dtype, offset):
    """The data of a member checked by _check_member, read in chunks straight into the array."""
    a = np.empty(shape[::-1] if fortran else shape, dtype)  # C order; a Fortran array's transpose
    view = memoryview(a.reshape(-1).view(np.uint8))
    with zf.open(info) as m:
        m.read(offset)
        for i in range(0, a.nbytes, _READ_CHUNK):
            if m.readinto(view[i:i + _READ_CHUNK]) != min(_READ_CHUNK, a.nbytes - i):
                raise _BadFile(f"{info.filename[:-4]}: truncated")
    return a.T if fortran else a


def _read_config(zf, info) -> dict:
    if info.file_size > _MAX_CONFIG_BYTES:
        raise _BadFile(f"the config member declares {info.file_size} bytes")
    text = _read_member(zf, info, (), *_check_member(zf, info, (), lambda dt: dt.kind == "U", "a string"))
    try:
        config = json.loads(str(text[()]))
    except ValueError as e:
        raise _BadFile(f"the config is not JSON ({e})") from None
    if not isinstance(config, dict) or set(config) != set(_CONFIG_TYPES):
        keys = sorted(config) if isinstance(config, dict) else type(config).__name__
        raise _BadFile(f"config keys {keys}, expected {sorted(_CONFIG_TYPES)}")
    for key, types in _CONFIG_TYPES.items():
        value = config[key]
        if not isinstance(value, types) or (types is int and isinstance(value, bool)):
            raise _BadFile(f"config: {key} = {value!r} has the wrong type")
    if config.pop("format_version") != _FORMAT_VERSION:
        raise _BadFile(f"unsupported file format version (this version reads {_FORMAT_VERSION})")
    return config


# --- prf.RNN ---------------------------------------------------------------------------------

class RNN:
    """A (stacked, optionally bidirectional) vanilla RNN layer:
    ``h_t = act(x_t · Wx + h_{t-1} · Wh + b)`` per layer and direction.

    Parameters
    ----------
    input_size, hidden_size : D and H.
    num_layers : stacked layers; layer l reads the outputs of layer l-1.
    activation : 'tanh' or 'relu'.
    bias : whether the layers have a bias b (one per layer and direction).
    bidirectional : add a reverse direction per layer; outputs are [forward, reverse] on the
        feature axis, as in PyTorch.
    dropout : probability of zeroing an output of every layer but the last, in training mode
        only (inverted dropout: kept values are scaled by 1 / (1 - dropout)).
    time_major : x and out are (T, N, ·) instead of (N, T, ·) (PyTorch's ``batch_first=False``).
    stateful : carry h_n into the next call as its h0 (truncated BPTT; see ``reset_state``).
    dtype : float32 (default) or float64, of the parameters and the computation; inputs are
        cast to it.
    seed : int or None; makes the initialisation and the dropout masks reproducible.
    backend : the functional API's backend (None: the default one).

    Initialisation: Wx Glorot-uniform (U(±sqrt(6 / (fan_in + H)))), Wh a random orthogonal
    matrix, b zeros.

    Attributes
    ----------
    params : dict name -> array, ``Wx_l{k}`` (D_k, H), ``Wh_l{k}`` (H, H), ``b_l{k}`` (H,), and the
        same names with ``_reverse`` for the reverse direction (no ``b_*`` with bias=False).
    grads : dict with the same keys, overwritten in place by every ``backward``.
    dh0 : the gradient w.r.t. the initial state (num_layers·dirs, N, H) from the last backward.
    state : the carried state (num_layers·dirs, N, H) of a stateful layer, or None.
    training : True (default) or False, set by ``train()`` / ``eval()``; only dropout cares.
    """

    def __init__(self, input_size, hidden_size, *, num_layers=1, activation="tanh", bias=True,
                 bidirectional=False, dropout=0.0, time_major=False, stateful=False, dtype=np.float32,
                 seed=None, backend=None):
        init_seq = self._configure(input_size, hidden_size, num_layers=num_layers, activation=activation,
                                   bias=bias, bidirectional=bidirectional, dropout=dropout,
                                   time_major=time_major, stateful=stateful, dtype=dtype, seed=seed,
                                   backend=backend)
        rng = np.random.default_rng(init_seq)
        H = self.hidden_size
        self.params = {}
        for name, shape in self._param_shapes():
            if name.startswith("Wx_"):
                limit = np.sqrt(6.0 / (shape[0] + H)) if shape[0] + H > 0 else 0.0
                self.params[name] = rng.uniform(-limit, limit, shape).astype(self.dtype)
            elif name.startswith("Wh_"):
                self.params[name] = _orthogonal(rng, H, self.dtype)
            else:
                self.params[name] = np.zeros(H, self.dtype)
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}

    def _configure(self, input_size, hidden_size, *, num_layers, activation, bias, bidirectional, dropout,
                   time_major, stateful, dtype, seed, backend):
        """Check and set everything but the weights; returns the seed of the initialisation."""
        self.input_size = _check_int("input_size", input_size, 0)
        self.hidden_size = _check_int("hidden_size", hidden_size, 0)
        self.num_layers = _check_int("num_layers", num_layers, 1)
        if activation not in ("tanh", "relu"):
            raise ValueError(f"activation: expected 'tanh' or 'relu', got {activation!r}")
        self.activation = activation
        self.bias = bool(bias)
        self.bidirectional = bool(bidirectional)
        if isinstance(dropout, bool) or not isinstance(dropout, numbers.Real) or not 0 <= dropout <= 1:
            raise ValueError(f"dropout: expected a probability in [0, 1], got {dropout!r}")
        self.dropout = float(dropout)
        self.time_major = bool(time_major)
        self.stateful = bool(stateful)
        self.dtype = _check_dtype(dtype)
        self.seed = seed
        self.backend = backend
        self.training = True
        self.state = None
        self.dh0 = None
        self._cache = None
        self._step_buffer = None
        init_seq, dropout_seq = np.random.SeedSequence(seed).spawn(2)
        self._dropout_rng = np.random.default_rng(dropout_seq)
        return init_seq

    def _param_shapes(self):
        """[(name, shape)] of every parameter, in the order of ``params``."""
        H, out = self.hidden_size, []
        for layer in range(self.num_layers):
            fan_in = self.input_size if layer == 0 else self.num_directions * H
            for suffix in self._suffixes:
                name = f"l{layer}{suffix}"
                out += [(f"Wx_{name}", (fan_in, H)), (f"Wh_{name}", (H, H))]
                if self.bias:
                    out.append((f"b_{name}", (H,)))
        return out

    # --- description ---------------------------------------------------------------------

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def _suffixes(self):
        return ("", "_reverse") if self.bidirectional else ("",)

    def _config(self) -> dict:
        return dict(input_size=self.input_size, hidden_size=self.hidden_size, num_layers=self.num_layers,
                    activation=self.activation, bias=self.bias, bidirectional=self.bidirectional,
                    dropout=self.dropout, time_major=self.time_major, stateful=self.stateful,
                    dtype=self.dtype.name)

    def num_params(self) -> int:
        """The number of scalar parameters."""
        return int(sum(p.size for p in self.params.values()))

    def __repr__(self) -> str:
        c = self._config()
        head = (f"RNN({c['input_size']}, {c['hidden_size']}, num_layers={c['num_layers']}, "
                f"activation={c['activation']!r}, bias={c['bias']}, bidirectional={c['bidirectional']}, "
                f"dropout={c['dropout']}, time_major={c['time_major']}, stateful={c['stateful']}, "
                f"dtype={c['dtype']})")
        lines = [head]
        for layer in range(self.num_layers):
            for suffix in self._suffixes:
                names = [f"{p}_l{layer}{suffix}" for p in ("Wx", "Wh", "b")]
                lines.append("  " + "  ".join(f"{n} {self.params[n].shape}" for n in names if n in self.params))
        lines.append(f"  parameters: {self.num_params():,}")
        return "\n".join(lines)

    def train(self, mode=True):
        """Training mode (dropout active); returns self."""
        self.training = bool(mode)
        return self

    def eval(self):
        """Inference mode (no dropout); returns self."""
        return self.train(False)

    def reset_state(self):
        """Forget the carried state: the next call of a stateful layer starts from zeros."""
        self.state = None

    # --- forward -------------------------------------------------------------------------

    def _weights(self, layer, suffix):
        name = f"l{layer}{suffix}"
        return self.params[f"Wx_{name}"], self.params[f"Wh_{name}"], self.params.get(f"b_{name}")

    def _check_lengths(self, lengths, N, T):
        if lengths is None:
            return None
        lengths = _check_real("lengths", lengths)
        if lengths.dtype.kind not in "iu":
            raise TypeError(f"lengths: expected an integer array (N,), got dtype {lengths.dtype}")
        if lengths.shape != (N,):
            raise ValueError(f"lengths: expected shape (N,) = ({N},), got {lengths.shape}")
        if lengths.size and (lengths.min() < 0 or lengths.max() > T):
            raise ValueError(f"lengths: expected 0 <= lengths <= T = {T}, got values in "
                             f"[{lengths.min()}, {lengths.max()}]")
        return lengths.astype(np.int64)

    def __call__(self, x, h0=None, lengths=None):
        """Run the layer: returns ``out, h_n``.

        x : (N, T, D), or (T, N, D) with time_major.
        h0 : (num_layers·dirs, N, H), optional (zeros; a stateful layer's carried state).
        lengths : (N,) ints in [0, T], optional: steps at or past a sample's length leave its
            state unchanged and give zero outputs; the reverse direction starts from each
            sample's own last valid step (PyTorch's packed sequences).

        out : (N, T, dirs·H) (or time-major), the top layer's outputs, [forward, reverse].
        h_n : (num_layers·dirs, N, H), the final states, index ``layer·dirs + direction``.
        """
        x = _check_real("x", x)
        layout = "(T, N, D)" if self.time_major else "(N, T, D)"
        if x.ndim != 3 or x.shape[2] != self.input_size:
            raise ValueError(f"x: expected a 3-D array {layout} with D = input_size = {self.input_size}, "
                             f"got shape {x.shape}")
        # Our own time-major C-contiguous copy: cheap next to the recurrence, makes the segment
        # slices contiguous, and keeps backward right if the caller changes x afterwards.
        x_tm = np.array(x if self.time_major else x.transpose(1, 0, 2), dtype=self.dtype, order="C")
        T, N = x_tm.shape[:2]
        H, dirs, L = self.hidden_size, self.num_directions, self.num_layers
        lengths = self._check_lengths(lengths, N, T)

        if h0 is None and self.stateful and self.state is not None:
            h0 = self.state
            if h0.shape[1] != N:
                raise ValueError(f"x: a stateful layer carries a state for batch size {h0.shape[1]}, got batch "
                                 f"size {N}; call reset_state() first")
        h0 = self._state_or_zeros("h0", h0, (L * dirs, N, H), "shape (num_layers*dirs, N, H)")

        segs = _segments(lengths, T)
        rev = None if lengths is None else _reverse_index(lengths, T, N)
        h_n = np.empty((L * dirs, N, H), self.dtype)
        cache = dict(segs=segs, rev=rev, layers=[], T=T, N=N)
        inp = x_tm
        for layer in range(L):
            mask = None
            if layer > 0 and self.training and self.dropout > 0:
                keep = self._dropout_rng.random(inp.shape) >= self.dropout
                scale = 1.0 / (1.0 - self.dropout) if self.dropout < 1 else 0.0
                mask = (keep * scale).astype(self.dtype)
                inp = inp * mask
            runs, outs = [], []
            for d, suffix in enumerate(self._suffixes):
                Wx, Wh, b = self._weights(layer, suffix)
                x_run = inp if d == 0 else _reverse(inp, rev)
                hs, h_n[layer * dirs + d], starts = _run_forward(x_run, Wx, Wh, b, h0[layer * dirs + d], segs,
                                                                 self.activation, self.backend)
                runs.append(dict(x=x_run, hs=hs, starts=starts))
                outs.append(hs if d == 0 else _reverse(hs, rev))
            cache["layers"].append(dict(runs=runs, mask=mask))
            inp = outs[0] if dirs == 1 else np.concatenate(outs, axis=-1)
        self._cache = cache
        if self.stateful:
            self.state = h_n.copy()
        out = inp.copy() if self.time_major else np.ascontiguousarray(inp.transpose(1, 0, 2))
        return out, h_n

    forward = __call__

    def _state_or_zeros(self, name, a, shape, meaning):
        """An optional (layers·dirs, N, H) argument as a native array of the layer's dtype."""
        if a is None:
            return np.zeros(shape, self.dtype)
        a = _check_real(name, a)
        if a.shape != shape:
            raise ValueError(f"{name}: expected {meaning} = {shape}, got {a.shape}")
        return np.array(a, dtype=self.dtype)

    # --- backward ------------------------------------------------------------------------

    def backward(self, dout, dh_n=None):
        """Backpropagate through the last call: returns dx (the layout of x) and overwrites
        ``grads`` (and ``dh0``). ``dout`` is the gradient w.r.t. ``out`` (its entries past a
        sample's length are ignored: those outputs are constant zeros); ``dh_n`` (optional)
        w.r.t. ``h_n``. A stateful layer stops at the chunk boundary (truncated BPTT)."""
        cache = self._cache
        if cache is None:
            raise RuntimeError("backward: call the layer (forward) first")
        T, N = cache["T"], cache["N"]
        H, dirs, L = self.hidden_size, self.num_directions, self.num_layers
        dout = _check_real("dout", dout)
        expected = (T, N, dirs * H) if self.time_major else (N, T, dirs * H)
        if dout.shape != expected:
            raise ValueError(f"dout: expected the shape of out = {expected}, got {dout.shape}")
        d_tm = np.asarray(dout if self.time_major else dout.transpose(1, 0, 2), dtype=self.dtype)
        dh_n = self._state_or_zeros("dh_n", dh_n, (L * dirs, N, H), "the shape of h_n")

        segs, rev = cache["segs"], cache["rev"]
        dh0 = np.empty((L * dirs, N, H), self.dtype)
        for layer in reversed(range(L)):
            entry = cache["layers"][layer]
            d_in = None
            for d, suffix in enumerate(self._suffixes):
                Wx, Wh, _ = self._weights(layer, suffix)
                run = entry["runs"][d]
                dhs = d_tm[..., d * H:(d + 1) * H]
                if d == 1:
                    dhs = _reverse(dhs, rev)
                dx, dWx, dWh, db, dh0[layer * dirs + d] = _run_backward(
                    dhs, run["x"], Wx, Wh, run["hs"], run["starts"], dh_n[layer * dirs + d], segs,
                    self.activation, self.backend)
                if d == 1:
                    dx = _reverse(dx, rev)
                d_in = dx if d_in is None else d_in + dx
                name = f"l{layer}{suffix}"
                self.grads[f"Wx_{name}"][...] = dWx
                self.grads[f"Wh_{name}"][...] = dWh
                if self.bias:
                    self.grads[f"b_{name}"][...] = db
            if entry["mask"] is not None:
                d_in = d_in * entry["mask"]
            d_tm = d_in
        self.dh0 = dh0
        return d_tm if self.time_major else np.ascontiguousarray(d_tm.transpose(1, 0, 2))

    # --- streaming -----------------------------------------------------------------------

    def step(self, x_t):
        """Advance a unidirectional stateful layer by one time step (streaming inference).

        x_t : (N, D). Returns the top layer's new state (N, H). The state is ``self.state``,
        the one ``__call__`` carries, updated in place (zeros when there is none yet). No
        dropout, nothing recorded for backward.
        """
        if self.bidirectional:
            raise ValueError("step: a bidirectional layer needs the whole sequence; use layer(x)")
        if not self.stateful:
            raise ValueError("step: the layer must be stateful (RNN(..., stateful=True), or set layer.stateful = True)")
        x_t = _check_real("x_t", x_t)
        if x_t.ndim != 2 or x_t.shape[1] != self.input_size:
            raise ValueError(f"x_t: expected shape (N, D) with D = input_size = {self.input_size}, got {x_t.shape}")
        N = x_t.shape[0]
        if self.state is None:
            self.state = np.zeros((self.num_layers, N, self.hidden_size), self.dtype)
        elif self.state.shape[1] != N:
            raise ValueError(f"x_t: the carried state is for batch size {self.state.shape[1]}, got {N}; "
                             "call reset_state() first")
        # One time step of rnn_forward's orchestration per layer, written into buffers kept
        # across steps: nothing is allocated per step but the returned output.
        kernel = get_backend(self.backend)
        if self._step_buffer is None or self._step_buffer.shape[2] != N or self._step_buffer.dtype != self.dtype:
            self._step_buffer = np.empty((self.num_layers, 1, N, self.hidden_size), self.dtype)
        inp = _kernel_seq(np.asarray(x_t, dtype=self.dtype)[None], self.dtype)  # (1, N, D), time-major
        for layer in range(self.num_layers):
            Wx, Wh, b = self._weights(layer, "")
            out = self._step_buffer[layer]
            h0 = _kernel_matrix(self.state[layer], self.dtype)
            _forward_into(kernel, inp, Wx, Wh, b, h0, out, self.activation, self.dtype)
            self.state[layer] = out[0]
            inp = out
        return inp[0].copy()

    # --- save / load -----------------------------------------------------------------------

    def save(self, path):
        """Save config and weights to one .npz file (np.savez adds '.npz' if path has none)."""
        config = dict(self._config(), format_version=_FORMAT_VERSION,
                      seed=self.seed if isinstance(self.seed, numbers.Integral) else None)
        weights = {k: np.asarray(v, dtype=self.dtype) for k, v in self.params.items()}
        np.savez(path, **{_CONFIG_KEY: np.array(json.dumps(config))}, **weights)

    @classmethod
    def load(cls, path, *, backend=None):
        """A layer from a file written by ``save``.

        Before reading any weights it checks the zip directory, the config (keys, types,
        ranges) and, from each member's .npy header, that the members are exactly the
        config's parameters with their shapes and dtype; no pickle is ever loaded. Any file
        that is not such a layer (corrupt, truncated, foreign, inconsistent) raises a
        ValueError naming the file. Nothing is initialised randomly: the time is that of
        reading the file."""
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path: expected a str or os.PathLike, got {type(path).__name__}")
        with open(path, "rb") as f:  # a missing file is the usual FileNotFoundError
            try:
                return cls._read(f, backend)
            except _BadFile as e:
                raise ValueError(f"{os.fspath(path)}: not a pyrnn_fast RNN file: {e}") from None
            except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, OSError, ValueError, KeyError,
                    NotImplementedError, RuntimeError) as e:  # what zipfile and np.lib.format raise
                raise ValueError(f"{os.fspath(path)}: not a pyrnn_fast RNN file (corrupt or truncated: "
                                 f"{type(e).__name__}: {e})") from None

    @classmethod
    def _read(cls, f, backend):
        with zipfile.ZipFile(f) as zf:
            members = {}
            for info in zf.infolist():
                if not info.filename.endswith(".npy") or info.filename[:-4] in members:
                    raise _BadFile(f"unexpected member {info.filename!r}")
                members[info.filename[:-4]] = info
            if _CONFIG_KEY not in members:
                raise _BadFile(f"no {_CONFIG_KEY} member")
            config = _read_config(zf, members.pop(_CONFIG_KEY))
            layer = cls.__new__(cls)
            try:
                layer._configure(**config, backend=backend)
            except (TypeError, ValueError) as e:
                raise _BadFile(f"config: {e}") from None
            n_params = layer.num_layers * layer.num_directions * (3 if layer.bias else 2)
            if len(members) != n_params:  # before listing the config's names, however many
                raise _BadFile(f"{len(members)} weight members, the config has {n_params} parameters")
            shapes = dict(layer._param_shapes())
            if set(members) != set(shapes):
                raise _BadFile(f"the weights {sorted(members)} do not match the config's {sorted(shapes)}")
            dtype = layer.dtype
            headers = {k: _check_member(zf, members[k], shapes[k], lambda dt: dt.newbyteorder("=") == dtype,
                                        f"{dtype} (the config's)") for k in shapes}  # all before any data
            layer.params = {k: np.ascontiguousarray(_read_member(zf, members[k], shapes[k], *headers[k]), dtype)
                            for k in shapes}
        layer.grads = {k: np.zeros_like(v) for k, v in layer.params.items()}
        return layer

    def _set_params(self, weights):
        for k, v in weights.items():
            v = _check_real(k, v)
            if v.shape != self.params[k].shape:
                raise ValueError(f"{k}: expected shape {self.params[k].shape}, got {v.shape}")
            self.params[k][...] = v

    # --- interop -------------------------------------------------------------------------

    @classmethod
    def from_torch(cls, module, *, backend=None):
        """A layer with the weights, layout, dtype and mode of a ``torch.nn.RNN``:
        Wx = weight_ih.T, Wh = weight_hh.T, b = bias_ih + bias_hh; ``batch_first=False``
        gives ``time_major=True``."""
        import torch  # lazily: torch is never a dependency

        if not isinstance(module, torch.nn.RNN):
            raise TypeError(f"module: expected a torch.nn.RNN, got {type(module).__name__}")
        dtypes = {torch.float32: np.float32, torch.float64: np.float64}
        w0 = module.weight_ih_l0
        if w0.dtype not in dtypes:
            raise TypeError(f"module: dtype {w0.dtype} is not supported; use float32 or float64")
        layer = cls(module.input_size, module.hidden_size, num_layers=module.num_layers,
                    activation=module.nonlinearity, bias=module.bias, bidirectional=module.bidirectional,
                    dropout=float(module.dropout), time_major=not module.batch_first, dtype=dtypes[w0.dtype],
                    backend=backend)
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

    def to_torch(self):
        """A ``torch.nn.RNN`` with this layer's weights (bias_ih = b, bias_hh = 0), layout
        (``batch_first = not time_major``), dtype and mode."""
        import torch

        dtype = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}[self.dtype]
        module = torch.nn.RNN(self.input_size, self.hidden_size, num_layers=self.num_layers,
                              nonlinearity=self.activation, bias=self.bias, batch_first=not self.time_major,
                              dropout=self.dropout, bidirectional=self.bidirectional, dtype=dtype)
        with torch.no_grad():
            for layer_idx in range(self.num_layers):
                for suffix in self._suffixes:
                    k = f"l{layer_idx}{suffix}"
                    Wx, Wh, b = self._weights(layer_idx, suffix)
                    getattr(module, f"weight_ih_{k}").copy_(torch.from_numpy(np.ascontiguousarray(Wx.T)))
                    getattr(module, f"weight_hh_{k}").copy_(torch.from_numpy(np.ascontiguousarray(Wh.T)))
                    if self.bias:
                        getattr(module, f"bias_ih_{k}").copy_(torch.from_numpy(np.asarray(b)))
                        getattr(module, f"bias_hh_{k}").zero_()
        module.train(self.training)
        return module

    @classmethod
    def from_keras_weights(cls, weights, *, activation="tanh", time_major=False, stateful=False, dtype=None,
                           backend=None):
        """A one-layer RNN from a Keras ``SimpleRNN``'s ``get_weights()``: [kernel (D, H),
        recurrent_kernel (H, H), bias (H,)] ([kernel, recurrent_kernel] with use_bias=False).
        Keras's order and convention are ours (x·kernel + h·recurrent_kernel + bias).
        dtype: the kernel's (float32 or float64) unless given."""
        if not isinstance(weights, (list, tuple)):
            raise TypeError(f"weights: expected a list [kernel, recurrent_kernel(, bias)] as get_weights() "
                            f"returns, got {type(weights).__name__}")
        weights = list(weights)
        if len(weights) not in (2, 3):
            raise ValueError(f"weights: expected [kernel, recurrent_kernel, bias] or [kernel, recurrent_kernel], "
                             f"got {len(weights)} arrays")
        names = ("kernel", "recurrent_kernel", "bias")
        arrays = [_check_real(f"weights[{i}] ({names[i]})", w) for i, w in enumerate(weights)]
        kernel = arrays[0]
        if kernel.ndim != 2:
            raise ValueError(f"weights[0] (kernel): expected shape (D, H), got {kernel.shape}")
        D, H = kernel.shape
        if dtype is None:
            dtype = kernel.dtype if kernel.dtype in (np.float32, np.float64) else np.float32
        layer = cls(D, H, activation=activation, bias=len(arrays) == 3, time_major=time_major, stateful=stateful,
                    dtype=dtype, backend=backend)
        params = {"Wx_l0": kernel, "Wh_l0": arrays[1]}
        if len(arrays) == 3:
            params["b_l0"] = arrays[2]
        for i, (k, v) in enumerate(params.items()):
            if v.shape != layer.params[k].shape:
                raise ValueError(f"weights[{i}] ({names[i]}): expected shape {layer.params[k].shape}, got {v.shape}")
        layer._set_params(params)
        return layer


# --- prf.TimeRNN ---------------------------------------------------------------------------

class TimeRNN:
    """A drop-in for the textbook ``TimeRNN`` layer (T steps of ``h = tanh(h·Wh + x·Wx + b)``),
    with the whole sequence in one ``rnn_forward`` / ``rnn_backward`` call.

    ``params = [Wx, Wh, b]`` are used as given (an optimizer updating them in place is seen
    by the next forward); ``grads = [dWx, dWh, db]`` are overwritten in place by ``backward``.
    ``h`` is the last hidden state, ``dh`` the gradient w.r.t. the initial state from the last
    backward. With ``stateful=False`` every forward starts from zeros; with ``stateful=True``
    from ``h`` (zeros after ``reset_state()``; ``set_state(h)`` sets it), and backward stops at
    the start of the sequence (truncated BPTT).
    """

    def __init__(self, Wx, Wh, b, stateful=False, *, backend=None):
        for name, a in (("Wx", Wx), ("Wh", Wh), ("b", b)):
            _check_real(name, a)
        self.params = [Wx, Wh, b]
        self.grads = [np.zeros_like(Wx), np.zeros_like(Wh), np.zeros_like(b)]
        self.h, self.dh = None, None
        self.stateful = stateful
        self.backend = backend
        self._cache = None

    def set_state(self, h):
        self.h = h

    def reset_state(self):
        self.h = None

    def forward(self, xs):
        """xs (N, T, D) -> hs (N, T, H)."""
        xs = _check_real("xs", xs)
        Wx, Wh, b = self.params
        if not self.stateful:
            self.h = None
        h0 = self.h
        hs, self.h = rnn_forward(xs, Wx, Wh, b, h0, backend=self.backend)
        self._cache = (xs, hs, h0)
        return hs

    def backward(self, dhs):
        """dhs (N, T, H) -> dxs (N, T, D); fills grads in place and sets dh."""
        if self._cache is None:
            raise RuntimeError("backward: call forward first")
        dhs = _check_real("dhs", dhs)
        Wx, Wh, _ = self.params
        xs, hs, h0 = self._cache
        g = rnn_backward(dhs, xs, Wx, Wh, hs, h0, backend=self.backend)
        self.grads[0][...] = g.dWx
        self.grads[1][...] = g.dWh
        self.grads[2][...] = g.db
        self.dh = g.dh0
        return g.dx
