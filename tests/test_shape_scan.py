"""bench/shape_scan.py as a user runs it: its argument errors, its ratios and summary on
scripted timings, and (with a peer installed) one row per cell and shape."""

import importlib.util
import pathlib

import pytest

from helpers import load_script, run_script
from pyrnn_fast.benchmark import timing

SCRIPT = pathlib.Path(__file__).resolve().parent.parent / "bench" / "shape_scan.py"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--shapes", "4x2x3"], "--shapes: expected TxNxDxH"),
        (["--shapes", "4x2x0x5"], "--shapes: expected TxNxDxH"),
        (["--cells", "lstm,rnm"], "--cells: expected rnn, lstm or gru, got 'rnm'"),
        (["--peers", "tensorflow"], "--peers: expected some of ['torch', 'jax'], got 'tensorflow'"),
        (["--shapes", " , "], "--shapes: expected a comma-separated list, got ' , '"),
        (["--cells", ""], "--cells: expected a comma-separated list, got ''"),
        (["--repeat", "0"], "--repeat: expected an integer >= 1, got 0"),
    ],
)
def test_bad_arguments_are_named(args, message):
    result = run_script(SCRIPT, *args)
    assert result.returncode != 0
    assert message in result.stderr


PEERS = [p for p in ("torch", "jax") if importlib.util.find_spec(p) is not None]


@pytest.mark.skipif(not PEERS, reason="no peer (torch, jax) installed")
def test_one_row_per_cell_and_shape():
    result = run_script(SCRIPT, "--shapes", "3x2x4x5,2x1x3x8", "--peers", PEERS[0], "--repeat", "1")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    for cell in ("rnn", "lstm", "gru"):
        rows = [line for line in lines if line.startswith(f"{cell} ") and "|" in line]
        assert len(rows) == 2
        assert all("forward" in r and "fwd+bwd" in r and f"{PEERS[0]} " in r for r in rows)
        assert any(line.startswith(f"{cell}: closest at ") for line in lines)


def test_ratios_and_summary_on_scripted_timings(monkeypatch, capsys):
    """Each peer's median over ours, per op, and the smallest of them per cell in the summary."""
    scan = load_script(SCRIPT)
    medians = {  # (cell, T, op): seconds per call of ours, torch, jax
        ("lstm", 2, "forward"): (1.0, 3.0, 2.0),
        ("lstm", 2, "fwd+bwd"): (2.0, 5.0, 9.0),
        ("lstm", 3, "forward"): (4.0, 5.0, 6.0),
        ("lstm", 3, "fwd+bwd"): (1.0, 1.5, 0.5),
    }
    monkeypatch.setattr(scan.runners, "available_peers", lambda: ["torch", "jax"])
    monkeypatch.setattr(scan.gated, "make_runner", lambda impl, cell, shape, op: (impl, cell, shape[0], op))
    monkeypatch.setattr(scan._core, "isa", lambda: "test")

    def scripted(fns, **kwargs):
        impl, cell, T, op = fns["ours"]
        return {k: timing.Timed(median=m, rounds=1, best=m) for k, m in zip(fns, medians[cell, T, op])}

    monkeypatch.setattr(scan.timing, "time_interleaved", scripted)
    scan.main(["--cells", "lstm", "--shapes", "2x1x3x4, 3x1x3x4"])
    lines = capsys.readouterr().out.splitlines()
    rows = [line for line in lines if line.startswith("lstm ")]
    assert "forward 1000.000 torch  3.00x jax  2.00x" in rows[0]
    assert "fwd+bwd 2000.000 torch  2.50x jax  4.50x" in rows[0]
    assert "forward 4000.000 torch  1.25x jax  1.50x" in rows[1]
    assert "fwd+bwd 1000.000 torch  1.50x jax  0.50x" in rows[1]
    assert lines[-1] == "lstm: closest at 3x1x3x4 fwd+bwd: the fastest peer took 0.50x our time"
