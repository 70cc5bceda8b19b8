"""bench/stream_bound.py as a user runs it: its argument errors, its bound and ratios on
scripted timings and limits (worked by hand), and one real row."""

import pathlib

import numpy as np
import pytest

from helpers import load_script, run_script
from pyrnn_fast.benchmark import timing

SCRIPT = pathlib.Path(__file__).resolve().parent.parent / "bench" / "stream_bound.py"


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
    result = run_script(SCRIPT, *args)
    assert result.returncode != 0
    assert message in result.stderr


def scripted_run(monkeypatch, capsys, args, threads, trip_ns, peers=("torch", "jax")):
    """The script's rows (split into cells) on scripted limits and times, H = 16, D = 32.
    Per cell (gates g = 1, 4, 3): Wh 1024 g bytes float32 (1, 4, 3 KB), the projection 1024 g
    FLOPs a step. Limits: the read loop 1.024 GB/s on one thread (1024 bytes a µs: float32 Wh in
    g µs), 2.048 on `threads` (g / 2); the micro-kernel's peak 1.024 GFLOP/s (g µs), 2.048 on
    `threads` (g / 2). `trip_ns`: the line round trip, or a callable that gives it. Ours a
    step: rnn 2.5 µs, lstm 6, gru 5; torch 10, 7.2, 20; jax 3, 12, 7."""
    bound = load_script(SCRIPT)
    T = bound.T
    asked = []

    def bandwidth(nbytes, t, dtype):
        asked.append((nbytes, t, np.dtype(dtype).name))
        return 1.024 if t == 1 else 2.048

    us_per_step = {"rnn": (2.5, 10.0, 3.0), "lstm": (6.0, 7.2, 12.0), "gru": (5.0, 20.0, 7.0)}
    monkeypatch.setattr(bound.limits, "read_bandwidth", bandwidth)
    monkeypatch.setattr(bound.limits, "microkernel_peak", lambda dtype, t: 1.024 if t == 1 else 2.048)
    monkeypatch.setattr(bound.limits, "line_round_trip_ns", trip_ns if callable(trip_ns) else lambda: trip_ns)
    monkeypatch.setattr(bound.runners, "available_peers", lambda: list(peers))
    monkeypatch.setattr(bound.prf, "get_num_threads", lambda: threads)
    monkeypatch.setattr(bound, "ours", lambda cell, shape, dtype: ("ours", cell, shape))
    monkeypatch.setattr(bound.gated, "make_runner", lambda impl, cell, shape, op: (impl, cell, shape, op))

    def scripted(fns, **kwargs):
        cell, shape = fns["ours"][1:]
        assert shape == (T, 1, 32, 16)
        assert all(fns[p] == (p, cell, shape, "forward") for p in fns if p != "ours")
        times = dict(zip(("ours", "torch", "jax"), us_per_step[cell]))
        return {k: timing.Timed(median=times[k] * T / 1e6, rounds=1, best=0.0) for k in fns}

    monkeypatch.setattr(bound.timing, "time_interleaved", scripted)
    bound.main([*args, "--sizes", "16", "--repeat", "1"])
    out = capsys.readouterr().out.splitlines()
    return [line.split() for line in out if line.split()[:1] in (["rnn"], ["lstm"], ["gru"])], asked


def test_the_least_splits_the_weights_where_that_is_less(monkeypatch, capsys):
    """3 threads, a round trip of 0.5 µs: split, read g / 2 + proj g / 2 + 0.5 against 2 g on
    one thread (rnn 1.5 < 2, lstm 4.5 < 8, gru 3.5 < 6). Of least: 1.5 / 2.5 = 60 %, 4.5 / 6 =
    75 %, 3.5 / 5 = 70 %; the fastest peer over ours and over the least: jax 3 / 2.5 = 1.20x
    and 3 / 1.5 = 2.00x, torch 7.2 / 6 = 1.20x and 7.2 / 4.5 = 1.60x, jax 7 / 5 = 1.40x and
    7 / 3.5 = 2.00x."""
    rows, asked = scripted_run(monkeypatch, capsys, ["--dtypes", "float32"], threads=3, trip_ns=500.0)
    assert [" ".join(r) for r in rows] == [
        "rnn float32 16 1 2.500 3 0.500 0.500 0.500 60% 10.000 3.000 1.20x 2.00x",
        "lstm float32 16 4 6.000 3 2.000 2.000 0.500 75% 7.200 12.000 1.20x 1.60x",
        "gru float32 16 3 5.000 3 1.500 1.500 0.500 70% 20.000 7.000 1.40x 2.00x",
    ]
    # each thread's share of the bytes, rounded up, on 3 threads; all of them on one
    assert set(asked) == {(b, t, "float32") for g in (1, 4, 3) for b, t in ((1024 * g, 1), (-(-1024 * g // 3), 3))}


def test_the_least_stays_on_one_thread_where_the_round_trip_outweighs_the_split(monkeypatch, capsys):
    """A round trip of 5 µs: split g + 5 against 2 g on one thread, which is less for every
    cell here (rnn 2, lstm 8, gru 6): of least 2 / 2.5 = 80 %, 8 / 6 = 133 %, 6 / 5 = 120 %, no
    sync; torch and jax over the least: 3 / 2 = 1.50x, 7.2 / 8 = 0.90x, 7 / 6 = 1.17x."""
    rows, _ = scripted_run(monkeypatch, capsys, ["--dtypes", "float32"], threads=3, trip_ns=5000.0)
    assert [" ".join(r[5:10] + r[-1:]) for r in rows] == [
        "1 1.000 1.000 - 80% 1.50x",
        "1 4.000 4.000 - 133% 0.90x",
        "1 3.000 3.000 - 120% 1.17x",
    ]


def test_an_unmeasured_round_trip_counts_nothing_and_float64_rows_time_no_peer(monkeypatch, capsys):
    """No round trip (None) on 3 threads: the split's least without sync, g / 2 + g / 2 = g,
    shown 'n/a' (lstm 4 / 6 = 67 %, torch over it 7.2 / 4 = 1.80x); float64: Wh 8192 bytes
    (8 KB) in 4 µs split, proj 2: 6 / 6 = 100 %, and no peer timed. One thread: no round trip
    measured at all, '-'."""
    rows, _ = scripted_run(monkeypatch, capsys, ["--cells", "lstm"], threads=3, trip_ns=None)
    assert [" ".join(r) for r in rows] == [
        "lstm float32 16 4 6.000 3 2.000 2.000 n/a 67% 7.200 12.000 1.20x 1.80x",
        "lstm float64 16 8 6.000 3 4.000 2.000 n/a 100% - - - -",
    ]
    on_one = ["--cells", "rnn", "--dtypes", "float32", "--no-peers"]
    rows, _ = scripted_run(monkeypatch, capsys, on_one, 1, lambda: pytest.fail("a round trip measured on one thread"))
    assert [" ".join(r) for r in rows] == ["rnn float32 16 1 2.500 1 1.000 1.000 - 80%"]


def test_one_real_row_per_cell():
    result = run_script(SCRIPT, "--no-peers", "--sizes", "64", "--dtypes", "float32", "--repeat", "1")
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines() if line.split()[:1] in (["rnn"], ["lstm"], ["gru"])]
    assert [" ".join(r[:4]) for r in rows] == ["rnn float32 64 16", "lstm float32 64 64", "gru float32 64 48"]
    for r in rows:
        ours, read, proj = map(float, (r[4], r[6], r[7]))
        sync = 0.0 if r[8] in ("-", "n/a") else float(r[8])
        assert r[5] in ("1", "2") and ours > 0 and read > 0 and proj > 0 and sync >= 0
        # `of least` from the cells as printed: each within half a unit of its last digit
        err = 0.0005
        lo = (read + proj + sync - 3 * err) / (ours + err)
        hi = (read + proj + sync + 3 * err) / (ours - err)
        assert 100 * lo - 0.5 <= float(r[9].rstrip("%")) <= 100 * hi + 0.5
