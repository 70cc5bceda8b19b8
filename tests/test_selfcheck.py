"""The main job's self-check and the tests share one comparison (selfcheck.relative_error) and
one tolerance table (selfcheck.TOLERANCE): the self-check passes every backend here and
fails a backend that is off by more than the tolerance. (And the main job's hardware limits
keep the best rate measured in the run.)"""

from __future__ import annotations

import numpy as np
import pytest

import helpers
import pyrnn_fast as prf
from pyrnn_fast import _backends, _reference
from pyrnn_fast.benchmark import selfcheck


def test_tests_use_the_self_checks_table():
    assert helpers.TOLERANCE == {np.dtype(k): v for k, v in selfcheck.TOLERANCE.items()}


def test_relative_error():
    ref = np.array([[2.0, -4.0]])
    assert selfcheck.relative_error(ref + [[0.0, 1e-3]], ref) == pytest.approx(1e-3 / 4)
    assert selfcheck.relative_error(ref.astype(np.float32), ref, np.float64) == np.inf  # wrong dtype
    assert selfcheck.relative_error(ref[0], ref) == np.inf  # wrong shape
    assert selfcheck.relative_error(np.empty((0, 3)), np.empty((0, 3))) == 0.0


def test_self_check_passes_every_backend():
    errors, ok = selfcheck.self_check(prf.backends())
    assert ok, errors
    assert set(errors) == set(prf.backends())


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_self_check_fails_a_wrong_backend(monkeypatch, dtype):
    """A recurrence off by 10x the tolerance in one dtype is caught, in that dtype only."""

    def forward(xw, wh, h0, out, act, active=None):
        _reference.forward(xw, wh, h0, out, act, active)
        if out.dtype == dtype:
            out *= 1 + 10 * selfcheck.TOLERANCE[dtype]

    wrong = _backends.get_backend("numpy")._replace(forward=forward)
    monkeypatch.setitem(_backends._loaded, "numpy", wrong)
    errors, ok = selfcheck.self_check(["numpy"])
    assert not ok
    other = "float32" if dtype == "float64" else "float64"
    assert errors["numpy"][dtype] > selfcheck.TOLERANCE[dtype]
    assert errors["numpy"][other] <= selfcheck.TOLERANCE[other]


@pytest.mark.parametrize("loop", ["fma_peak", "microkernel_peak"])
def test_limits_are_the_best_rate_seen_in_the_run(monkeypatch, loop):
    # A limit is the most the hardware gives: a later, slower measurement (a moment of
    # contention on a shared machine) must not lower it, a faster one raises it.
    from pyrnn_fast import _core
    from pyrnn_fast.benchmark import limits

    rates = iter([100.0] * 6 + [40.0] * 6 + [250.0] * 6)  # per measurement: 1 calibrating call + 5

    def fake(dtype, iterations, threads):  # (flops, seconds): rate GFLOP/s, each call 1 s
        return next(rates) * 1e9, 1.0

    monkeypatch.setattr(_core, loop, fake)
    monkeypatch.setattr(limits, "_best_seen", {})
    measure = getattr(limits, loop)
    assert measure(np.float32, 3) == pytest.approx(100.0)
    assert measure(np.float32, 3) == pytest.approx(100.0)  # 40 measured, 100 kept
    assert measure(np.float32, 3) == pytest.approx(250.0)
    assert limits._best_seen == {(loop, _core.isa(), "float32", 3): pytest.approx(250.0)}


def test_each_instruction_set_has_limits_of_its_own(monkeypatch):
    # set_isa between two measurements: the second instruction set's peak is its own, not the
    # best of both (an AVX2 run's fractions would otherwise be of the AVX-512 peak).
    from pyrnn_fast import _core
    from pyrnn_fast.benchmark import limits

    isas = _core.available_isas()
    if len(isas) < 2:
        pytest.skip("one instruction set in this build")
    rates = iter([100.0] * 6 + [40.0] * 6)  # GFLOP/s per measurement: 1 calibrating call + 5
    monkeypatch.setattr(_core, "fma_peak", lambda dtype, iterations, threads: (next(rates) * 1e9, 1.0))
    monkeypatch.setattr(limits, "_best_seen", {})
    with helpers.use_backend(("cpp", isas[0])):
        assert limits.fma_peak(np.float32, 1) == pytest.approx(100.0)
    with helpers.use_backend(("cpp", isas[1])):
        assert limits.fma_peak(np.float32, 1) == pytest.approx(40.0)


def test_read_bandwidth_is_the_best_rate_seen_for_its_size(monkeypatch):
    # As the FMA limits, per buffer size: each size is its own limit (L1, L2, L3).
    from pyrnn_fast import _core
    from pyrnn_fast.benchmark import limits

    rates = iter([100.0] * 6 + [40.0] * 6 + [30.0] * 6)  # GB/s per measurement: 1 calibrating call + 5
    sizes = []

    def fake(dtype, nbytes, iterations, threads):  # (bytes, seconds): each call 1 s
        sizes.append(nbytes)
        return next(rates) * 1e9, 1.0

    monkeypatch.setattr(_core, "read_peak", fake)
    monkeypatch.setattr(limits, "_best_seen", {})
    assert limits.read_bandwidth(4096, 2) == pytest.approx(100.0)
    assert limits.read_bandwidth(4096, 2) == pytest.approx(100.0)  # 40 measured, 100 kept
    assert limits.read_bandwidth(1 << 20, 2) == pytest.approx(30.0)  # another size: its own
    assert sizes == [4096] * 12 + [1 << 20] * 6
    assert limits._best_seen == {
        ("read_peak", _core.isa(), "float32", 2, 4096): pytest.approx(100.0),
        ("read_peak", _core.isa(), "float32", 2, 1 << 20): pytest.approx(30.0),
    }


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_steps_read_bound_reads_its_weights_on_the_faster_thread_count(monkeypatch, dtype):
    # The step table's bound: the step's weights [Wx; Wh], (D + H) x H of the dtype, read
    # once at the read loop's rate, whole on one thread or halved on two, whichever is faster.
    from pyrnn_fast.benchmark import limits

    asked = []
    rates = {1: 100.0, 2: 160.0}  # GB/s, both threads' bytes together

    def bandwidth(nbytes, threads, dtype):
        asked.append((nbytes, threads, np.dtype(dtype)))
        return rates[threads]

    monkeypatch.setattr(limits, "read_bandwidth", bandwidth)
    H, size = 256, np.dtype(dtype).itemsize
    weights = (limits.STEP_INPUT + H) * H * size
    assert limits.step_read_us(H, dtype, 1) == pytest.approx(weights / 100e9 * 1e6)
    assert asked == [(weights, 1, np.dtype(dtype))]
    asked.clear()
    assert limits.step_read_us(H, dtype, 2) == pytest.approx(weights / 160e9 * 1e6)
    assert sorted(asked) == [(weights // 2, 2, np.dtype(dtype)), (weights, 1, np.dtype(dtype))]
    rates[2] = 60.0  # two threads slower than one: one thread's time
    assert limits.step_read_us(H, dtype, 2) == pytest.approx(weights / 100e9 * 1e6)
