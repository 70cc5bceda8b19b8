"""bench/stream_bound.py as a user runs it: its argument errors, its bound and ratios on
scripted timings and limits (worked by hand), and one real row."""

import importlib.util
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from pyrnn_fast.benchmark import timing

SCRIPT = pathlib.Path(__file__).resolve().parent.parent / "bench" / "stream_bound.py"


def run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=600)


def load():
    spec = importlib.util.spec_from_file_location("stream_bound", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "args, message",
    [
        (["--cells", "lstm,rnm"], "--cells: expected some of ['rnn', 'lstm', 'gru'], got 'rnm'"),
        (["--cells", " , "], "--cells: expected a comma-separated list, got ' , '"),
        (["--dtypes", "float16"], "--dtypes: expected some of ['float32', 'float64'], got 'float16'"),
        (["--sizes", "128,0"], "--sizes: expected comma-separated integers >= 1, got '128,0'"),
        (["--sizes", "12x"], "--sizes: expected comma-separated integers >= 1, got '12x'"),
        (["--repeat", "0"], "--repeat: expected an integer >= 1, got 0"),
    ],
)
def test_bad_arguments_are_named(args, message):
    result = run(*args)
    assert result.returncode != 0
    assert message in result.stderr


def test_bound_and_ratios_on_scripted_timings_and_limits(monkeypatch, capsys):
    """LSTM, H = 2, D = 32: Wh is 2 x 8 values (64 bytes float32, 128 float64); the projection
    2 * 32 * 4 * 2 = 512 FLOPs a step, 1 µs at a peak of 0.512 GFLOP/s; Wh read in 2 µs. Ours
    4 µs a step: (2 + 1) / 4 = 75 %; torch 6 µs, jax 9: the fastest peer 1.50x ours, 2.00x the
    least (3 µs). float64 (the same scripted times and peak): no peers timed, '-' in their columns."""
    bound = load()
    T = bound.T
    reads = []

    def read_us(nbytes, dtype, threads):
        reads.append((nbytes, np.dtype(dtype).name, threads))
        return 2.0

    monkeypatch.setattr(bound.limits, "weights_read_us", read_us)
    monkeypatch.setattr(bound.limits, "microkernel_peak", lambda dtype, threads: 0.512)
    monkeypatch.setattr(bound.runners, "available_peers", lambda: ["torch", "jax"])
    monkeypatch.setattr(bound.prf, "get_num_threads", lambda: 3)
    monkeypatch.setattr(bound, "ours", lambda cell, shape, dtype: ("ours", cell, shape))
    monkeypatch.setattr(bound.gated, "make_runner", lambda impl, cell, shape, op: (impl, cell, shape, op))
    us_per_step = {"ours": 4.0, "torch": 6.0, "jax": 9.0}

    def scripted(fns, **kwargs):
        assert fns["ours"] == ("ours", "lstm", (T, 1, 32, 2))
        assert all(fns[p] == (p, "lstm", (T, 1, 32, 2), "forward") for p in fns if p != "ours")
        return {k: timing.Timed(median=us_per_step[k] * T / 1e6, rounds=1, best=0.0) for k in fns}

    monkeypatch.setattr(bound.timing, "time_interleaved", scripted)
    bound.main(["--cells", "lstm", "--sizes", "2", "--repeat", "1"])
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if line.lstrip().startswith("lstm ")]
    assert rows == [
        ["lstm", "float32", "2", "0", "4.000", "2.000", "1.000", "75%", "6.000", "9.000", "1.50x", "2.00x"],
        ["lstm", "float64", "2", "0", "4.000", "2.000", "1.000", "75%", "-", "-", "-", "-"],
    ]
    assert reads == [(64, "float32", 3), (128, "float64", 3)]


def test_one_real_row_per_cell():
    result = run("--no-peers", "--sizes", "16", "--dtypes", "float32", "--repeat", "1")
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines() if line.split()[:1] in (["rnn"], ["lstm"], ["gru"])]
    assert [r[:3] for r in rows] == [["rnn", "float32", "16"], ["lstm", "float32", "16"], ["gru", "float32", "16"]]
    for r in rows:
        ours, read, proj = map(float, r[4:7])
        assert ours > 0 and read > 0 and proj > 0
        assert abs(float(r[7].rstrip("%")) - 100 * (read + proj) / ours) < 1  # (from the rounded cells)
