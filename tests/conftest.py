"""Shared fixtures: every backend (the compiled one once per instruction set this machine
supports), problem generation, and the comparison against the NumPy reference."""
from __future__ import annotations

import numpy as np
import pytest

import pyrnn_fast as prf
from pyrnn_fast import _backends, _reference
from pyrnn_fast.benchmark import selfcheck

# One tolerance table for the tests and the main job's self-check (its reasons are there).
TOLERANCE = {np.dtype(name): tol for name, tol in selfcheck.TOLERANCE.items()}


def pytest_report_header(config):
    isa = _backends.isa()
    return [f"pyrnn_fast {prf.__version__} from {prf.__file__}; backends {prf.backends()}; isa {isa}; "
            f"threads {prf.get_num_threads()}"]


def _backend_params():
    params = []
    if "cpp" in prf.backends():
        params += [("cpp", isa) for isa in _backends._core.available_isas()]
    params += [(name, None) for name in ("numba", "numpy") if name in prf.backends()]
    return params


BACKEND_PARAMS = _backend_params()


def backend_id(param) -> str:
    name, isa = param
    return name if isa is None else f"{name}-{isa}"


class use_backend:
    """Context manager selecting a backend (and for cpp an instruction set) for a test."""

    def __init__(self, param):
        self.name, self.isa = param

    def __enter__(self):
        if self.isa is not None:
            self.previous = _backends._core.isa()
            _backends._core.set_isa(self.isa)
        return self.name

    def __exit__(self, *exc):
        if self.isa is not None:
            _backends._core.set_isa(self.previous)


@pytest.fixture(params=BACKEND_PARAMS, ids=backend_id)
def backend(request):
    with use_backend(request.param) as name:
        yield name


def make_problem(T, N, D, H, dtype=np.float64, *, bias=True, h0=True, dh_last=True, seed=0):
    """Random inputs, scaled so that neither activation saturates nor explodes: Wh has
    spectral radius about 0.9, pre-activations are O(1)."""
    rng = np.random.default_rng(seed)
    p = {
        "x": rng.standard_normal((T, N, D)),
        "Wx": rng.standard_normal((D, H)) / np.sqrt(max(D, 1)),
        "Wh": rng.standard_normal((H, H)) * (0.9 / np.sqrt(max(H, 1))),
        "b": rng.standard_normal(H) * 0.3 if bias else None,
        "h0": rng.standard_normal((N, H)) * 0.5 if h0 else None,
        "dhs": rng.standard_normal((T, N, H)),
        "dh_last": rng.standard_normal((N, H)) if dh_last else None,
    }
    return {k: None if v is None else v.astype(dtype) for k, v in p.items()}


def reference(p, activation):
    """The reference in float64 on exactly the same (possibly float32) input values."""
    f64 = {k: None if v is None else v.astype(np.float64) for k, v in p.items()}
    hs, h_last = _reference.rnn_forward(f64["x"], f64["Wx"], f64["Wh"], f64["b"], f64["h0"], activation)
    return f64, hs, h_last


def assert_close(actual, expected, dtype, what=""):
    dtype = np.dtype(dtype)
    assert actual.dtype == dtype, f"{what}: dtype {actual.dtype}, expected {dtype}"
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape}, expected {expected.shape}"
    err = selfcheck.relative_error(actual, expected, dtype)
    assert err <= TOLERANCE[dtype], f"{what}: relative error {err:.2e} > {TOLERANCE[dtype]:.0e}"


def to_layout(a, time_major):
    """A time-major (T, N, ...) array in the requested layout."""
    return a if time_major or a is None else np.ascontiguousarray(a.transpose(1, 0, 2))


def check_against_reference(p, activation, backend, time_major=True, dtype=None):
    """Run forward and backward through the public API and compare every output with the
    reference. The backward pass of both gets the same hs (the reference's, in the input
    dtype), so that relu's derivative sees identical signs."""
    dtype = np.dtype(dtype or p["x"].dtype)
    f64, hs_ref, hl_ref = reference(p, activation)
    x = to_layout(p["x"], time_major)
    hs, h_last = prf.rnn_forward(x, p["Wx"], p["Wh"], p["b"], p["h0"], activation=activation,
                                 time_major=time_major, backend=backend)
    assert_close(hs, to_layout(hs_ref, time_major), dtype, "hs")
    assert_close(h_last, hl_ref, dtype, "h_last")

    hs_in = hs_ref.astype(dtype)
    g_ref = _reference.rnn_backward(f64["dhs"], f64["x"], f64["Wx"], f64["Wh"], hs_in.astype(np.float64),
                                    f64["h0"], f64["dh_last"], activation)
    g = prf.rnn_backward(to_layout(p["dhs"], time_major), x, p["Wx"], p["Wh"], to_layout(hs_in, time_major),
                         p["h0"], dh_last=p["dh_last"], activation=activation, time_major=time_major,
                         backend=backend)
    assert isinstance(g, prf.RNNGrads)
    expected = dict(zip(prf.RNNGrads._fields, g_ref))
    expected["dx"] = to_layout(expected["dx"], time_major)
    for name in prf.RNNGrads._fields:
        assert_close(getattr(g, name), expected[name], dtype, name)
