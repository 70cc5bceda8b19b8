"""The public API's types as a user sees them: checked by mypy in CI, never run (pytest does
not collect it). Each ``type: ignore[...]`` asserts that mypy rejects its line: with
warn_unused_ignores (pyproject.toml), a line mypy accepted would fail the check."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

import pyrnn_fast as prf

x = np.zeros((2, 3, 4), np.float32)
Wx = np.zeros((4, 5), np.float32)
Wh = np.zeros((5, 5), np.float32)

hs, h_last = prf.rnn_forward(x, Wx, Wh, activation="relu", time_major=False, backend="numpy")
grads: prf.RNNGrads = prf.rnn_backward(hs, x, Wx, Wh, hs, dh_last=h_last, activation="tanh")
dWx: NDArray[np.floating] = grads.dWx
prf.rnn_forward([[[0.0]]], [[0.0]], [[0.0]])  # any array-like
threads: int = prf.get_num_threads()
prf.set_num_threads(None)
names: list[str] = prf.backends()
isa: str | None = prf.isa()
freed: int = prf.release_buffers()

prf.rnn_forward(x, Wx, Wh, activation="sigmoid")  # type: ignore[arg-type]
prf.rnn_forward(x, Wx, Wh, time_major="yes")  # type: ignore[arg-type]
prf.set_num_threads("2")  # type: ignore[arg-type]
same: int = prf.isa()  # type: ignore[assignment]

Wx4, Wh4 = np.zeros((4, 20), np.float32), np.zeros((5, 20), np.float32)
lstm_out: prf.LSTMOutput = prf.lstm_forward(x, Wx4, Wh4, time_major=False, workspace=True)
lstm_grads: prf.LSTMGrads = prf.lstm_backward(lstm_out.hs, x, Wx4, Wh4, lstm_out.hs, lstm_out.workspace)
dc0: NDArray[np.floating] = lstm_grads.dc0
gru_out: prf.GRUOutput = prf.gru_forward(x, Wx4[:, :15], Wh4[:, :15], bh=np.zeros(15))
ws: prf.Workspace | None = gru_out.workspace
dbh: NDArray[np.floating] = prf.gru_backward(gru_out.hs, x, Wx4[:, :15], Wh4[:, :15], gru_out.hs, ws).dbh
layer_out, (h_n, c_n) = prf.LSTM(4, 5)(x, state=None)

prf.lstm_forward(x, Wx4, Wh4, workspace="yes")  # type: ignore[arg-type]
prf.gru_backward(gru_out.hs, x, Wx4, Wh4, gru_out.hs, "ws")  # type: ignore[arg-type]

# pyrnn_fast.dask (the [dask] extra)
import pyrnn_fast.dask as prfd  # noqa: E402


def _loss(out: NDArray[np.floating], y: object) -> tuple[float, NDArray[np.floating]]:
    return 0.0, out


rnn = prf.RNN(4, 5)
scored = prfd.predict(rnn, x, threads=1)
total, param_grads = prfd.value_and_grad(rnn, x, None, _loss, split_every=4)
total_f: float = total
grad_arrays: dict[str, np.ndarray] = param_grads
prfd.predict(rnn, x, threads="2")  # type: ignore[arg-type]
prfd.value_and_grad(rnn, x, None, "mse")  # type: ignore[arg-type]
