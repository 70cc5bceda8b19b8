"""The compiled extension on its own: whatever it is handed, it raises instead of touching
memory it should not."""
import numpy as np
import pytest

from pyrnn_fast import _backends

core = _backends._core
pytestmark = pytest.mark.skipif(core is None, reason="compiled backend not built")

T, N, H = 3, 4, 5


def fwd_args(dtype=np.float64):
    return dict(xw=np.zeros((T, N, H), dtype), wh=np.zeros((H, H), dtype), h0=np.zeros((N, H), dtype),
                out=np.zeros((T, N, H), dtype), activation="tanh", threads=2)


def bwd_args(dtype=np.float64):
    return dict(dh=np.zeros((T, N, H), dtype), h=np.zeros((T, N, H), dtype), wh=np.zeros((H, H), dtype),
                dh_last=None, da=np.zeros((T, N, H), dtype), dh0=np.zeros((N, H), dtype), activation="relu",
                threads=2)


def test_good_calls_work():
    core.forward(**fwd_args())
    core.backward(**bwd_args(np.float32))


@pytest.mark.parametrize("name,bad,exc,pattern", [
    ("wh", np.zeros((H, H + 1)), ValueError, r"Wh: expected shape \(5, 5\), got \(5, 6\)"),
    ("wh", np.zeros((H, H), np.float32), TypeError, r"Wh: expected a float64"),
    ("h0", np.zeros((N + 1, H)), ValueError, r"h0: expected shape \(4, 5\)"),
    ("h0", [[0.0] * H] * N, TypeError, "h0"),
    ("out", np.zeros((T + 1, N, H)), ValueError, r"out: expected shape \(3, 4, 5\)"),
    ("out", np.zeros((T, N, 2 * H))[:, :, ::2], ValueError, "out: the last axis must be contiguous"),
    ("out", np.zeros((T, N, H), ">f8"), TypeError, "out: expected a float64 array in native byte order"),
    ("xw", np.zeros((T, N)), ValueError, "xw: expected a 3-D"),
    ("xw", np.zeros((T, N, H), np.int64), TypeError, "xw: expected float32 or float64"),
    ("xw", np.zeros((T, N, H))[::-1], ValueError, "xw: strides must be non-negative"),
    ("activation", "gelu", ValueError, "activation"),
])
def test_forward_rejects(name, bad, exc, pattern):
    args = fwd_args()
    args[name] = bad
    with pytest.raises(exc, match=pattern):
        core.forward(**args)


def test_read_only_and_misaligned_outputs_are_rejected():
    args = fwd_args()
    args["out"].setflags(write=False)
    with pytest.raises(ValueError, match="out: output array is read-only"):
        core.forward(**args)
    buf = np.zeros(T * N * H * 8 + 1, np.uint8)
    args = fwd_args()
    args["out"] = buf[1:].view(np.float64).reshape(T, N, H)
    with pytest.raises(ValueError, match="out: array data is not aligned"):
        core.forward(**args)


def test_lists_are_not_converted():
    args = fwd_args()
    args["out"] = args["out"].tolist()
    with pytest.raises(TypeError):
        core.forward(**args)


@pytest.mark.parametrize("name,bad,pattern", [
    ("h", np.zeros((T, N + 1, H)), r"h: expected shape \(3, 4, 5\)"),
    ("dh_last", np.zeros((N, H + 1)), r"dh_last: expected shape \(4, 5\)"),
    ("dh0", np.zeros((N, H), np.float32), "dh0: expected a float64"),
    ("da", np.zeros((T, N, H)).T, "da: expected shape"),
])
def test_backward_rejects(name, bad, pattern):
    args = bwd_args()
    args[name] = bad
    with pytest.raises((ValueError, TypeError), match=pattern):
        core.backward(**args)


def test_isa_controls():
    isas = core.available_isas()
    assert "generic" in isas and core.isa() in isas
    with pytest.raises(ValueError, match="isa"):
        core.set_isa("neon")
    previous = core.isa()
    try:
        for isa in isas:
            core.set_isa(isa)
            assert core.isa() == isa
    finally:
        core.set_isa(previous)
