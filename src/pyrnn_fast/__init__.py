"""pyrnn_fast: fast recurrent networks (vanilla RNN, LSTM, GRU), forward and backward through
time, for NumPy users.

    hs, h_last = rnn_forward(x, Wx, Wh, b, h0)            # h_t = tanh(x_t·Wx + h_{t-1}·Wh + b)
    g = rnn_backward(dhs, x, Wx, Wh, hs, h0)              # g.dx, g.dWx, g.dWh, g.db, g.dh0
    out = lstm_forward(x, Wx, Wh, b)                      # out.hs, out.h_last, out.c_last, out.workspace
    g = lstm_backward(dhs, x, Wx, Wh, out.hs, out.workspace)

Backends: a C++/OpenMP kernel (``cpp``), a Numba fallback (``numba``) and the NumPy reference
(``numpy``); see ``backends()``, ``set_num_threads()`` and the README.
"""

from ._api import RNNGrads, rnn_backward, rnn_forward
from ._api_gated import (
    GRUGrads,
    GRUOutput,
    LSTMGrads,
    LSTMOutput,
    Workspace,
    gru_backward,
    gru_forward,
    lstm_backward,
    lstm_forward,
)
from ._backends import backends, get_flush_subnormals, get_num_threads, isa, set_flush_subnormals, set_num_threads
from ._orchestration import release_buffers
from .layers import GRU, LSTM, RNN, TimeLSTM, TimeRNN

__version__ = "0.1.0"  # the one source of the version (pyproject.toml reads it)

__all__ = [
    "GRU",
    "GRUGrads",
    "GRUOutput",
    "LSTM",
    "LSTMGrads",
    "LSTMOutput",
    "RNN",
    "TimeLSTM",
    "TimeRNN",
    "RNNGrads",
    "Workspace",
    "gru_backward",
    "gru_forward",
    "lstm_backward",
    "lstm_forward",
    "backends",
    "get_flush_subnormals",
    "get_num_threads",
    "isa",
    "release_buffers",
    "rnn_backward",
    "rnn_forward",
    "set_flush_subnormals",
    "set_num_threads",
    "__version__",
]
