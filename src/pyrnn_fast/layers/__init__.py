"""Layers on top of the functional API: ``RNN`` (stacked, bidirectional, variable-length,
dropout, stateful, streaming, PyTorch/Keras interop) and ``TimeRNN`` (the textbook class).

Every recurrence here is a call to ``rnn_forward`` / ``rnn_backward`` (``RNN.step`` calls the
same orchestration, ``_orchestration._forward_into``, with buffers it keeps); these modules
only arrange the calls (which samples, which time steps, which direction) and keep the caches.

    rnn        RNN: configuration, initialisation, forward, backward, step
    time_rnn   TimeRNN
    _segments  variable lengths (runs by segments) and the reverse direction's time reversal
    _npz       save / load: the .npz format and its validation
    _interop   torch.nn.RNN and Keras SimpleRNN weights
    _checks    argument checks

The segment runs, the file checks, the interop and the argument checks are kept apart from
the layer math so that the gated cells to come (LSTM, GRU) share them with RNN.
"""

from .gated import GRU, LSTM
from .rnn import RNN
from .time_rnn import TimeRNN

__all__ = ["GRU", "LSTM", "RNN", "TimeRNN"]
