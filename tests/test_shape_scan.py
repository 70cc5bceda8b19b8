"""bench/shape_scan.py as a user runs it: its argument errors, and (with a peer installed) one
row per cell and shape and the closing summary."""

import importlib.util
import pathlib
import subprocess
import sys

import pytest

SCRIPT = pathlib.Path(__file__).resolve().parent.parent / "bench" / "shape_scan.py"


def run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--shapes", "4x2x3"], "--shapes: expected TxNxDxH"),
        (["--shapes", "4x2x0x5"], "--shapes: expected TxNxDxH"),
        (["--cells", "lstm,rnm"], "--cells: expected rnn, lstm or gru, got 'rnm'"),
        (["--peers", "tensorflow"], "--peers: expected some of ['torch', 'jax'], got 'tensorflow'"),
    ],
)
def test_bad_arguments_are_named(args, message):
    result = run(*args)
    assert result.returncode != 0
    assert message in result.stderr


PEERS = [p for p in ("torch", "jax") if importlib.util.find_spec(p) is not None]


@pytest.mark.skipif(not PEERS, reason="no peer (torch, jax) installed")
def test_one_row_per_cell_and_shape():
    result = run("--shapes", "3x2x4x5,2x1x3x8", "--peers", PEERS[0], "--repeat", "1")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    for cell in ("rnn", "lstm", "gru"):
        rows = [line for line in lines if line.startswith(f"{cell} ") and "|" in line]
        assert len(rows) == 2
        assert all("forward" in r and "fwd+bwd" in r and f"{PEERS[0]} " in r for r in rows)
        assert any(line.startswith(f"{cell}: least ahead at ") for line in lines)
