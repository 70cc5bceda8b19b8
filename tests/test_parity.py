"""Every backend (cpp once per instruction set, numba, numpy) against the NumPy reference."""

import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import BACKEND_PARAMS, backend_id, check_against_reference, make_problem, use_backend

SHAPES = [  # (T, N, D, H): edges, tails of every register block, and a few hundred
    (1, 1, 1, 1),
    (0, 3, 4, 5),
    (4, 0, 3, 5),
    (5, 3, 0, 4),
    (3, 2, 4, 0),
    (7, 5, 6, 37),
    (2, 1, 3, 128),
    (6, 7, 5, 33),
    (3, 17, 9, 100),
    (2, 64, 7, 65),
    (300, 2, 4, 16),
    (4, 9, 3, 257),
    (2, 260, 5, 20),
    (3, 13, 5, 600),  # a thread's panels span several L2-sized groups in every build
    (2, 67, 3, 530),  # packed rows (N >= kMinPackedRows, AVX2), a partial last sliver, two depth blocks
]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_grid(backend, shape, dtype, activation):
    p = make_problem(*shape, dtype=dtype, seed=sum(shape))
    check_against_reference(p, activation, backend, time_major=False)


@pytest.mark.parametrize("bias,h0,dh_last,time_major", list(itertools.product([False, True], repeat=4)))
@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_options(backend, bias, h0, dh_last, time_major, activation):
    for dtype in (np.float64, np.float32):
        p = make_problem(9, 6, 5, 23, dtype=dtype, bias=bias, h0=h0, dh_last=dh_last, seed=7)
        check_against_reference(p, activation, backend, time_major=time_major)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    backend_param=st.sampled_from(BACKEND_PARAMS),
    T=st.integers(0, 40),
    N=st.integers(0, 20),
    D=st.integers(0, 20),
    H=st.integers(0, 70),
    dtype=st.sampled_from([np.float32, np.float64]),
    activation=st.sampled_from(["tanh", "relu"]),
    bias=st.booleans(),
    h0=st.booleans(),
    dh_last=st.booleans(),
    time_major=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_hypothesis(backend_param, T, N, D, H, dtype, activation, bias, h0, dh_last, time_major, seed):
    p = make_problem(T, N, D, H, dtype=dtype, bias=bias, h0=h0, dh_last=dh_last, seed=seed)
    with use_backend(backend_param) as name:
        check_against_reference(p, activation, name, time_major=time_major)


def test_backend_ids_cover_every_isa():
    # The compiled backend must be tested on every instruction set this machine supports.
    from pyrnn_fast import _backends

    if _backends._core is None:
        pytest.skip("compiled backend not built")
    ids = {backend_id(p) for p in BACKEND_PARAMS}
    assert {f"cpp-{isa}" for isa in _backends._core.available_isas()} <= ids
