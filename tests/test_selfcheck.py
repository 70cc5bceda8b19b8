"""The main job's self-check and the tests share one comparison (selfcheck.relative_error) and
one tolerance table (selfcheck.TOLERANCE): the self-check passes every backend here and
fails a backend that is off by more than the tolerance."""

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

    def forward(xw, wh, h0, out, act):
        _reference.forward(xw, wh, h0, out, act)
        if out.dtype == dtype:
            out *= 1 + 10 * selfcheck.TOLERANCE[dtype]

    wrong = _backends.get_backend("numpy")._replace(forward=forward)
    monkeypatch.setitem(_backends._loaded, "numpy", wrong)
    errors, ok = selfcheck.self_check(["numpy"])
    assert not ok
    other = "float32" if dtype == "float64" else "float64"
    assert errors["numpy"][dtype] > selfcheck.TOLERANCE[dtype]
    assert errors["numpy"][other] <= selfcheck.TOLERANCE[other]
