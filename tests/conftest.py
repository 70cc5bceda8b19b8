"""Pytest hooks and fixtures. Shared helpers (problems, tolerances, comparisons) are in
helpers.py, which the test modules import directly."""

from __future__ import annotations

import os

import pytest

import pyrnn_fast as prf
from helpers import BACKEND_PARAMS, backend_id, use_backend
from pyrnn_fast import _backends


def pytest_report_header(config):
    isa = _backends.isa()
    return [
        f"pyrnn_fast {prf.__version__} from {prf.__file__}; backends {prf.backends()}; isa {isa}; "
        f"threads {prf.get_num_threads()}"
    ]


@pytest.fixture(params=BACKEND_PARAMS, ids=backend_id)
def backend(request):
    with use_backend(request.param) as name:
        yield name


@pytest.fixture(autouse=True)
def subnormal_flushing_left_as_found():
    """Every test leaves the compiled kernels' flushing of subnormals as it found it (on): a
    test that turned it off would otherwise run the later ones in IEEE mode."""
    before = prf.get_flush_subnormals()
    yield
    if prf.get_flush_subnormals() != before:
        prf.set_flush_subnormals(before)
        pytest.fail("the test left prf.set_flush_subnormals changed")


@pytest.fixture(autouse=True)
def environment_left_as_found():
    """Every test leaves os.environ as it found it. Dask's nanny sets OMP_NUM_THREADS=1 (and
    MKL_, OPENBLAS_NUM_THREADS, MALLOC_TRIM_THRESHOLD_) in the process that starts a
    LocalCluster, for good: later tests' child processes then ran with one OpenMP thread."""
    before = dict(os.environ)
    yield
    if os.environ != before:
        os.environ.clear()
        os.environ.update(before)
