"""Layers on top of the functional API: ``RNN``, ``LSTM``, ``GRU`` (stacked, bidirectional,
variable-length, dropout, stateful, streaming, PyTorch/Keras interop) and ``TimeRNN``,
``TimeLSTM`` (the textbook classes).

Every recurrence here is a call of the functional API (``rnn_forward``, ``lstm_forward``,
``gru_forward`` and their backwards; ``step`` runs the compiled stepper with the ``cpp``
backend, else the cell's functional forward with T = 1); these modules only arrange the calls
(which samples, which time steps, which direction) and keep the caches.

    rnn        RNN: its option (the activation), functional calls, signatures
    gated      LSTM, GRU: their gate counts and forget bias, functional calls, signatures
    _base      what every layer shares: configuration, initialisation, parameters, repr,
               modes, checks, step (and the compiled stepper), save / load
    _stack     the stacked, bidirectional forward and backward of every cell
    time_rnn   TimeRNN;  time_lstm  TimeLSTM
    _lengths   variable lengths (the batch sorted longest first) and the reverse direction's
               time reversal
    _npz       save / load: the .npz format and its validation
    _interop   torch.nn.RNN/LSTM/GRU and Keras SimpleRNN/LSTM/GRU weights
    _checks    argument checks

A cell's class says only what is particular to it (its options, initialisation, the two
functional calls ``_run`` / ``_grad_steps`` and its public signatures); the stack, the
variable lengths, the file checks, the interop and the argument checks serve all three cells.
"""

from .gated import GRU, LSTM
from .rnn import RNN
from .time_lstm import TimeLSTM
from .time_rnn import TimeRNN

__all__ = ["GRU", "LSTM", "RNN", "TimeLSTM", "TimeRNN"]
