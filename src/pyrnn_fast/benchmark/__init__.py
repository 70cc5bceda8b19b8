"""The main job, ``python -m pyrnn_fast``, and the benchmark machinery it shares with ``bench/``.

cli        the command line: self-check, then the benchmark, shape by shape
selfcheck  every backend against the NumPy reference; the one tolerance table
runners    the shapes, their inputs and FLOPs, a runner per backend and peer, the sgemm peak
timing     interleaved timing, other processes' CPU share, thread limits
report     the printed tables and lines
plot       the ``--plot`` chart
"""
