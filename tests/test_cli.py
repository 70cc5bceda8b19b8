"""The main job's options (python -m pyrnn_fast): what a typo or a setting of the machine would
otherwise cost is refused at once, before minutes of benchmarks (parse_args, in process)."""

from __future__ import annotations

import itertools
import time

import numpy as np
import pytest

import pyrnn_fast as prf
from helpers import CAN_FLUSH, flush_subnormals
from pyrnn_fast.benchmark import cli, report, timing


def refused(argv, capsys) -> str:
    with pytest.raises(SystemExit) as e:
        cli.parse_args(argv)
    assert e.value.code == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


@pytest.mark.parametrize("option", ["--shapes", "--cells", "--backends"])
def test_an_empty_list_is_refused(option, capsys):
    for value in ("", ",", " , "):
        assert refused([f"{option}={value}"], capsys).endswith(f"error: {option}: expected at least one name")


def test_more_threads_than_the_process_may_use_is_refused(monkeypatch, capsys):
    """os.cpu_count() counted CPUs a taskset or a container's CPU set left out: the job then
    re-executed itself forever, waiting for an affinity of that many CPUs."""
    monkeypatch.setattr(timing, "num_threads", lambda: 1)
    assert "--threads: expected 1..1 (the CPUs this process may run on), got 2" in refused(["--threads", "2"], capsys)
    assert cli.parse_args(["--threads", "1"]).threads == 1


def test_an_output_path_that_cannot_be_written_is_refused_before_the_run(tmp_path, capsys):
    for option in ("--json", "--plot"):
        for path in (tmp_path / "missing" / "x.out", tmp_path):
            assert f"error: {option}: cannot write" in refused([option, str(path)], capsys)
    assert cli.parse_args(["--json", str(tmp_path / "run.json")]).json == str(tmp_path / "run.json")


def test_a_bad_backend_variable_is_an_error_line_not_a_traceback(monkeypatch, capsys):
    monkeypatch.setenv("PYRNN_FAST_BACKEND", "foo")
    assert "error: PYRNN_FAST_BACKEND='foo': expected one of" in refused([], capsys)


def test_backend_names_are_read_as_the_environment_variable_reads_them(capsys):
    """`--backends CPP` said "'CPP' is not available" and `--backends bogus` the same, where the
    name is unknown, not unavailable (found by a review); PYRNN_FAST_BACKEND takes any case."""
    assert refused(["--backends", "bogus"], capsys).endswith(
        "error: --backends: expected one of ['cpp', 'numba', 'numpy'], got 'bogus'"
    )
    assert cli.parse_args(["--backends", " NumPy"]).backends == ["numpy"]


def test_a_plot_without_the_vanilla_cell_is_refused(tmp_path, capsys):
    """The chart is the vanilla cell's: --plot with --cells lstm ran and wrote nothing, silently."""
    assert refused(["--plot", str(tmp_path / "c.png"), "--cells", "lstm,gru"], capsys).endswith(
        "error: --plot: charts the vanilla cell's results; add rnn to --cells"
    )


def test_no_peers_times_no_jax_for_the_sgemm_peak():
    """--no-peers still imported and timed JAX for the sgemm line."""
    pytest.importorskip("jax")
    from pyrnn_fast.benchmark import runners

    assert runners.sgemm_peak(1, n=64, calls=2, peers=())["jax"] is None
    assert runners.sgemm_peak(1, n=64, calls=2, peers=("jax",))["jax"] is not None


def test_the_batch_size_comes_from_the_fastest_early_call():
    """The calls per timed batch come from the fastest of the calls after the first: one slow
    early call (the first calls of a process: 3.3 ms against 25 µs later, for a layer call) had
    set batches of 3 calls, each measuring the cold start after a settle pause."""
    calls = []

    def slow_start():
        calls.append(None)
        if len(calls) <= 2:
            time.sleep(0.02)

    timing.time_interleaved({"f": slow_start}, repeat=1, min_time=0.01, settle=0)
    assert len(calls) > 50  # 2 slow calls, 2 fast ones, then a batch that fills 10 ms


def test_time_interleaved_reports_the_median_and_the_fastest_round(monkeypatch):
    """The fraction of the register peak is judged on the fastest round as well as the median
    (benchmark.limits.against_limits): both must be the rounds' own, on a scripted clock."""
    clock = [0.0]
    durations = iter([2.0, 2.0, 6.0, 3.0, 4.0])  # the untimed call, the estimate, three rounds

    class FakeTime:
        perf_counter = staticmethod(lambda: clock[0])
        sleep = staticmethod(lambda s: None)

    def call():
        clock[0] += next(durations)

    monkeypatch.setattr(timing, "time", FakeTime)
    timed = timing.time_interleaved({"f": call}, repeat=3, min_time=0, max_time=100, settle=0)
    assert timed["f"] == timing.Timed(median=4.0, rounds=3, best=3.0)


@pytest.mark.skipif("cpp" not in prf.backends(), reason="the peak loop is the compiled backend's")
def test_the_peak_loop_timed_beside_does_as_many_flops_as_the_call(monkeypatch):
    """``limits.beside_peak_loop`` times the register loop doing the call's FLOPs in the same
    rounds and gives the call's rate over the loop's. On a scripted clock: a call of 3 GFLOP at
    150 GFLOP/s beside a loop running at 200 is 75 %, however long the loop's probe call took."""
    from pyrnn_fast import _core
    from pyrnn_fast.benchmark import limits

    clock = [0.0]
    loops = []

    class FakeTime:
        perf_counter = staticmethod(lambda: clock[0])
        sleep = staticmethod(lambda s: None)

    def fake_loop(dtype, iterations, threads):
        flops = 48.0 * iterations  # (per iteration: whatever the loop does)
        loops.append(iterations)
        clock[0] += flops / (200e9 if len(loops) > 1 else 50e9)  # the probe: a slow first call
        return flops, flops / 200e9

    def call():
        clock[0] += 3e9 / 150e9

    monkeypatch.setattr(timing, "time", FakeTime)
    monkeypatch.setattr(_core, "fma_peak", fake_loop)
    beside, timed = limits.beside_peak_loop(call, 3e9, np.float32, 2, repeat=3)
    assert loops[1] == round(3e9 / 48)  # the call's FLOPs
    assert beside["fraction"] == pytest.approx(0.75) and beside["peak_gflops"] == pytest.approx(200)
    assert timed.median == pytest.approx(0.02) and timed.rounds == 3


@pytest.mark.parametrize("seconds, calls", [(0.3, 1 + 3 + 2 * 2), (2.0, 1 + 1 + 2 * 1)])
def test_calls_under_a_second_are_warmed_up_after_each_pause(monkeypatch, seconds, calls):
    """After each settle pause a call of some tenths of a second gets one untimed call before
    its timed one (`large` lost up to 3 points of the FMA peak to the pause's cold start, the margin of
    its bar); a call of seconds does not. On a scripted clock: the first call, the estimate
    (up to three calls while shorter than WARM_UP_BELOW_SECONDS), then per round the warm-up
    call, if any, and one timed call."""
    clock, made = [0.0], []

    class FakeTime:
        perf_counter = staticmethod(lambda: clock[0])
        sleep = staticmethod(lambda s: None)

    def call():
        made.append(None)
        clock[0] += seconds

    monkeypatch.setattr(timing, "time", FakeTime)
    timing.time_interleaved({"f": call}, repeat=2, min_time=0, max_time=100, settle=0.15)
    assert len(made) == calls


def test_a_peer_that_fails_is_left_out_of_the_timings():
    """One peer failing (out of memory on a shape) aborted the whole run of the main job."""

    def broken():
        raise MemoryError("no room")

    errors: dict = {}
    timed = timing.time_interleaved({"ok": lambda: None, "broken": broken}, repeat=2, min_time=0, errors=errors)
    assert list(timed) == ["ok"] and isinstance(errors["broken"], MemoryError)
    with pytest.raises(MemoryError):  # without `errors`, as before: ours failing is a bug
        timing.time_interleaved({"broken": broken}, repeat=1, min_time=0)


def test_a_plot_without_the_default_backend_is_refused(tmp_path, capsys):
    """The chart is the default backend's speed-ups: without it among --backends it was empty."""
    assert refused(["--plot", str(tmp_path / "c.png"), "--backends", "numpy"], capsys).endswith(
        "error: --plot: charts the default backend's speed-ups; add it to --backends"
    )


@pytest.mark.parametrize("flush", [True, False])
def test_the_machine_lines_say_how_subnormals_are_computed(flush, capsys):
    """Timings of a backward pass whose gradients vanish differ by up to 11x between the
    modes (README, "Subnormal numbers"): the job's header says which one ran."""
    if flush and not CAN_FLUSH:
        pytest.skip("only the compiled backend flushes, on x86-64")
    with flush_subnormals(flush):
        report.print_info(report.machine_info(1, []))
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("backends: "))
    assert line.endswith("subnormals: flushed to 0" if flush else "subnormals: IEEE"), line


def test_the_step_table_reports_the_median_and_the_fastest_round(monkeypatch, capsys):
    """The streaming step's table gives NumPy's one-liner over the step in the median rounds and
    in the fastest ones, each from the rounds' own times (a scripted clock); and, where the
    read loop's time is given, the one-liner over a call plus that read (the bound) and that
    least time over the step's."""
    from pyrnn_fast.benchmark import limits

    clock = [0.0]
    durations = {  # µs per call: 100 untimed calls, then one call per round
        "prf.RNN.step": iter([0.0] * 100 + [4.0, 1.0, 2.0]),
        "numpy one-liner": iter([0.0] * 100 + [6.0, 5.0, 4.0]),
        limits.CALL_NAME: iter([0.0] * 100 + [0.5, 0.25, 0.75]),
    }

    class FakeTime:
        perf_counter = staticmethod(lambda: clock[0])

    def impl(name):
        def call():
            clock[0] += next(durations[name]) * 1e-6

        return call

    monkeypatch.setattr(limits, "time", FakeTime)
    row = limits._interleaved_us({name: impl(name) for name in durations}, calls=1, rounds=3)
    assert row["prf.RNN.step"] == pytest.approx({"median": 2.0, "fastest": 1.0})
    assert row["numpy one-liner"] == pytest.approx({"median": 5.0, "fastest": 4.0})
    limits.print_step_latency({64: row, 128: row}, 2, "float32", {64: [98.4, None]}, {64: 1.0})
    lines = capsys.readouterr().out.splitlines()
    words = [line.split() for line in lines]
    rows = {w[0]: w for w in words if w[:1] in (["64"], ["128"])}
    # read 1.0 µs, the call's median 0.5: the least a step takes 1.5 µs, the one-liner's 5.0
    # over it 3.33x, and 1.5 over the step's 2.0 is 75 %
    assert rows["64"][-6:] == ["1.00", "2.50x", "3.33x", "75%", "4.00x", "98/-"]
    assert rows["128"][-6:] == ["-", "2.50x", "-", "-", "4.00x", "-/-"]  # rows without the measurements
    assert not any("WARNING" in line for line in lines)
    # Every cell right-aligned under its column's heading: rows as long as the heading's line
    head = next(line for line, w in zip(lines, words) if w[:1] == ["H"])
    assert {len(line) for line, w in zip(lines, words) if w[:1] in (["64"], ["128"])} == {len(head)}


def test_the_step_table_warns_of_a_step_faster_than_its_bound(capsys):
    """A step cannot read its weights faster than the read loop reads as many bytes: a step
    above its bound means the read loop was measured while other work had the CPU."""
    from pyrnn_fast.benchmark import limits

    def row(step_us):
        times = {"prf.RNN.step": step_us, "numpy one-liner": 6.0, limits.CALL_NAME: 0.5}
        return {name: {"median": us, "fastest": us} for name, us in times.items()}

    limits.print_step_latency({64: row(4.0), 128: row(2.0)}, 1, "float32", None, {64: 3.0, 128: 3.0})
    lines = capsys.readouterr().out.splitlines()
    # 0.5 + 3.0 over 4.0 is 88 %, over 2.0 175 %: only H = 128 warns
    assert [line.split()[:5] for line in lines if "WARNING" in line] == [["WARNING:", "H", "=", "128:", "a"]]
    assert limits.BUSY_READ_WARNING in next(line for line in lines if "WARNING" in line)


@pytest.mark.parametrize("peers", [(), ("torch",)])
def test_the_step_table_measures_the_line_round_trip_around_each_row(monkeypatch, peers):
    """Every row of the step table comes with the line's round trip measured before and after
    its rounds, in that order, the first after a pause that follows the row's layer being made,
    the second after the pause when torch's cell was timed."""
    from pyrnn_fast.benchmark import limits

    events = []
    trips = itertools.count(100.0, 10.0)

    class FakeTime:
        sleep = staticmethod(lambda s: events.append("pause"))

    def interleaved(impls, settle_s=0.0):
        events.append("row")
        return {"prf.RNN.step": {"median": 1.0, "fastest": 1.0}}

    def trip():
        events.append("trip")
        return next(trips)

    def impls(H, backend, peers, dtype):
        events.append("layer")
        return {}

    def read(H, dtype, threads):
        events.append("read")
        return float(H * threads) + len([e for e in events if e == "read"])  # the later, the slower

    monkeypatch.setattr(limits, "time", FakeTime)
    monkeypatch.setattr(limits, "_step_impls", impls)
    monkeypatch.setattr(limits, "_interleaved_us", interleaved)
    monkeypatch.setattr(limits, "line_round_trip_ns", trip)
    monkeypatch.setattr(limits, "step_read_us", read)
    rows, line_trips, reads = limits.step_latency(None, peers, threads=2)
    assert list(rows) == list(line_trips) == list(reads) == list(limits.STEP_SIZES)
    # On the job's threads; the reads after the rows are the ones returned (read_bandwidth
    # keeps the best rate, so they are the best of both)
    sizes = len(limits.STEP_SIZES)
    assert reads == {H: 2.0 * H + sizes + 1 + i for i, H in enumerate(limits.STEP_SIZES)}
    # The read loop before every row and after them all (its threads would spin through a
    # row's rounds); each row: the layer made, a pause (OpenBLAS's worker spins after the
    # constructor's QR), then the row
    per_row = ["layer", "pause", "trip", "row"] + (["pause", "trip"] if peers else ["trip"])
    assert events == ["read"] * sizes + per_row * sizes + ["read"] * sizes
    assert [line_trips[H] for H in limits.STEP_SIZES] == [
        [100.0 + 20 * i, 110.0 + 20 * i] for i in range(len(limits.STEP_SIZES))
    ]


def test_the_step_table_pauses_between_blocks_only_with_torchs_cell(monkeypatch):
    """With torch's cell in the step table every block of calls starts after a pause
    (limits.STEP_SETTLE_S: torch's OpenMP worker spins for milliseconds after its calls), one
    per block of each callable in every round; without it, none."""
    from pyrnn_fast.benchmark import limits

    sleeps = []

    class FakeTime:
        perf_counter = staticmethod(lambda: 0.0)
        sleep = staticmethod(sleeps.append)

    monkeypatch.setattr(limits, "time", FakeTime)
    impls = {"a": lambda: None, "b": lambda: None}
    limits._interleaved_us(impls, calls=1, rounds=3, settle_s=limits.STEP_SETTLE_S)
    assert sleeps == [limits.STEP_SETTLE_S] * 6
    monkeypatch.setattr(limits, "_step_impls", lambda H, backend, peers, dtype: impls)
    monkeypatch.setattr(limits, "step_read_us", lambda H, dtype, threads: 1.0)
    # One SETTLE_SECONDS pause per size after its layer is made; with torch's cell also 7 rounds
    # of two blocks, and one pause per size before the line's round trip after it
    for peers, torch_pauses in (((), 0), (("jax",), 0), (("torch",), 7 * 2 + 1)):
        sleeps.clear()
        limits.step_latency(None, peers)
        per_size = [limits.SETTLE_SECONDS] + [limits.STEP_SETTLE_S] * torch_pauses
        assert sleeps == per_size * len(limits.STEP_SIZES), peers
