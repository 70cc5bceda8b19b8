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
    """LSTM, H = 2, D = 32, on 3 threads: Wh is 2 x 8 values (64 bytes float32, 128 float64);
    the projection 2 * 32 * 4 * 2 = 512 FLOPs a step. One thread: Wh read at 0.032 GB/s (1e3
    bytes a µs: 64 bytes in 2 µs), the projection at 0.512 GFLOP/s (1 µs): 3 µs. Three threads,
    each reading 22 bytes, 0.064 GB/s together (1 µs), 1.024 GFLOP/s (0.5 µs), a line's round
    trip 1 µs: 2.5 µs, the less. Ours 5 µs a step: 2.5 / 5 = 50 %; torch 6 µs, jax 9: the
    fastest peer 1.20x ours, 2.40x the least. float64 (the same rates): one thread 4 + 1 = 5 µs,
    three 2 + 0.5 + 1 = 3.5 µs, 70 %; no peers timed, '-' in their columns."""
    bound = load()
    T = bound.T
    asked = []

    def bandwidth(nbytes, threads, dtype):
        asked.append((nbytes, threads, np.dtype(dtype).name))
        return {1: 0.032, 3: 0.064}[threads]  # GB/s: 1e3 bytes a µs

    monkeypatch.setattr(bound.limits, "read_bandwidth", bandwidth)
    monkeypatch.setattr(bound.limits, "microkernel_peak", lambda dtype, threads: {1: 0.512, 3: 1.024}[threads])
    monkeypatch.setattr(bound.limits, "line_round_trip_ns", lambda: 1000.0)
    monkeypatch.setattr(bound.runners, "available_peers", lambda: ["torch", "jax"])
    monkeypatch.setattr(bound.prf, "get_num_threads", lambda: 3)
    monkeypatch.setattr(bound, "ours", lambda cell, shape, dtype: ("ours", cell, shape))
    monkeypatch.setattr(bound.gated, "make_runner", lambda impl, cell, shape, op: (impl, cell, shape, op))
    us_per_step = {"ours": 5.0, "torch": 6.0, "jax": 9.0}

    def scripted(fns, **kwargs):
        assert fns["ours"] == ("ours", "lstm", (T, 1, 32, 2))
        assert all(fns[p] == (p, "lstm", (T, 1, 32, 2), "forward") for p in fns if p != "ours")
        return {k: timing.Timed(median=us_per_step[k] * T / 1e6, rounds=1, best=0.0) for k in fns}

    monkeypatch.setattr(bound.timing, "time_interleaved", scripted)
    bound.main(["--cells", "lstm", "--sizes", "2", "--repeat", "1"])
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if line.lstrip().startswith("lstm ")]
    assert rows == [
        ["lstm", "float32", "2", "0", "5.000", "1.000", "0.500", "1.000", "50%", "6.000", "9.000", "1.20x", "2.40x"],
        ["lstm", "float64", "2", "0", "5.000", "2.000", "0.500", "1.000", "70%", "-", "-", "-", "-"],
    ]
    assert sorted(asked) == [(22, 3, "float32"), (43, 3, "float64"), (64, 1, "float32"), (128, 1, "float64")]

    # One thread: the one-thread parts, no round trip measured or added
    monkeypatch.setattr(bound.prf, "get_num_threads", lambda: 1)
    monkeypatch.setattr(bound.limits, "line_round_trip_ns", lambda: pytest.fail("measured on one thread"))
    bound.main(["--cells", "lstm", "--sizes", "2", "--dtypes", "float32", "--no-peers", "--repeat", "1"])
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if line.lstrip().startswith("lstm ")]
    assert rows == [["lstm", "float32", "2", "0", "5.000", "2.000", "1.000", "-", "60%"]]


def test_one_real_row_per_cell():
    result = run("--no-peers", "--sizes", "16", "--dtypes", "float32", "--repeat", "1")
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines() if line.split()[:1] in (["rnn"], ["lstm"], ["gru"])]
    assert [r[:3] for r in rows] == [["rnn", "float32", "16"], ["lstm", "float32", "16"], ["gru", "float32", "16"]]
    for r in rows:
        ours, read, proj = map(float, r[4:7])
        sync = 0.0 if r[7] == "-" else float(r[7])  # (a line's round trip on more threads than one)
        assert ours > 0 and read > 0 and proj > 0 and sync >= 0
        assert abs(float(r[8].rstrip("%")) - 100 * (read + proj + sync) / ours) < 1  # (from the rounded cells)
