"""The public API's contract: dtypes, layouts, odd memory layouts, empty sizes, NaN, bad input."""

import functools
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

import pyrnn_fast as prf
from helpers import assert_close, check_against_reference, make_problem, reference
from pyrnn_fast import _backends, _reference


def _args(p):
    return p["x"], p["Wx"], p["Wh"], p["b"], p["h0"]


# --- dtypes ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "dtypes,expected",
    [
        ((np.float32,) * 5, np.float32),
        ((np.float32, np.float32, np.float64, np.float32, np.float32), np.float64),
        ((np.float16,) * 5, np.float32),
        ((np.float16, np.float32, np.float32, np.float16, np.float16), np.float32),
        ((np.int32, np.float32, np.float32, np.float32, np.float32), np.float64),
        ((np.int64,) * 5, np.float64),
    ],
)
def test_result_dtype_follows_numpy_promotion(backend, dtypes, expected):
    p = make_problem(4, 3, 5, 6, seed=1)
    if dtypes[0] in (np.int32, np.int64):
        p["x"] = np.round(p["x"] * 3)
    names = ["x", "Wx", "Wh", "b", "h0"]
    for name, dt in zip(names, dtypes):
        p[name] = p[name].astype(dt)
    hs, h_last = prf.rnn_forward(*_args(p), time_major=True, backend=backend)
    assert hs.dtype == expected and h_last.dtype == expected
    _, hs_ref, _ = reference(p, "tanh")
    assert_close(hs, hs_ref, expected, "hs")
    g = prf.rnn_backward(
        p["dhs"].astype(dtypes[0]), p["x"], p["Wx"], p["Wh"], hs, p["h0"], time_major=True, backend=backend
    )
    assert all(a.dtype == expected for a in g)


def test_float32_is_computed_in_float32(backend):
    # float32 results must not be float64 results rounded at the end: they differ from the
    # float64 computation by more than one float32 rounding would explain on some element.
    p = make_problem(30, 4, 8, 40, dtype=np.float32, seed=3)
    hs32, _ = prf.rnn_forward(*_args(p), time_major=True, backend=backend)
    p64 = {k: None if v is None else v.astype(np.float64) for k, v in p.items()}
    hs64, _ = prf.rnn_forward(*_args(p64), time_major=True, backend=backend)
    assert not np.array_equal(hs32, hs64.astype(np.float32))


@pytest.mark.parametrize("bad,kind", [(np.complex64, "complex"), (object, "object"), ("U3", "<U3")])
def test_unsupported_dtypes_raise_typeerror(bad, kind):
    p = make_problem(2, 2, 3, 4)
    for name in ("x", "Wx", "Wh", "b", "h0"):
        q = dict(p)
        q[name] = p[name].astype(bad)
        with pytest.raises(TypeError, match=name):
            prf.rnn_forward(*_args(q), time_major=True)
    with pytest.raises(TypeError, match="dhs"):
        prf.rnn_backward(p["dhs"].astype(bad), p["x"], p["Wx"], p["Wh"], p["dhs"], time_major=True)


def test_longdouble_is_rejected():
    if np.dtype(np.longdouble).itemsize <= 8:
        pytest.skip("longdouble is double here")
    p = make_problem(2, 2, 3, 4)
    with pytest.raises(TypeError, match="x"):
        prf.rnn_forward(p["x"].astype(np.longdouble), p["Wx"], p["Wh"], time_major=True)


# --- layouts and memory ------------------------------------------------------------------


def test_batch_major_is_transposed_time_major(backend):
    p = make_problem(6, 4, 5, 7, seed=2)
    hs_tm, hl_tm = prf.rnn_forward(*_args(p), time_major=True, backend=backend)
    x_bm = np.ascontiguousarray(p["x"].transpose(1, 0, 2))
    hs_bm, hl_bm = prf.rnn_forward(x_bm, *_args(p)[1:], backend=backend)
    assert hs_bm.shape == (4, 6, 7)
    np.testing.assert_allclose(hs_bm.transpose(1, 0, 2), hs_tm, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(hl_bm, hl_tm, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("time_major", [False, True])
def test_odd_memory_layouts_and_inputs_untouched(backend, time_major):
    """Non-contiguous, Fortran-ordered, byte-swapped and read-only inputs give the reference
    result and are not modified."""
    p = make_problem(5, 4, 6, 9, seed=4)
    big = np.zeros((5, 4, 12))
    big[:, :, ::2] = p["x"]
    odd = {
        "x": big[:, :, ::2],  # strided last axis
        "Wx": np.asfortranarray(p["Wx"]),  # Fortran order
        "Wh": p["Wh"].astype(p["Wh"].dtype.newbyteorder(">")),  # byte-swapped
        "b": p["b"][::-1].copy()[::-1],  # negative stride
        "h0": np.asfortranarray(p["h0"]),
        "dhs": np.asfortranarray(p["dhs"]),
        "dh_last": p["dh_last"].T.copy().T,
    }
    for v in odd.values():
        v.setflags(write=False)
    before = {k: v.copy() for k, v in odd.items()}
    if not time_major:
        odd["x"] = odd["x"].transpose(1, 0, 2)
        odd["dhs"] = odd["dhs"].transpose(1, 0, 2)
        p = dict(p)
    hs, h_last = prf.rnn_forward(
        odd["x"], odd["Wx"], odd["Wh"], odd["b"], odd["h0"], time_major=time_major, backend=backend
    )
    g = prf.rnn_backward(
        odd["dhs"],
        odd["x"],
        odd["Wx"],
        odd["Wh"],
        hs,
        odd["h0"],
        dh_last=odd["dh_last"],
        time_major=time_major,
        backend=backend,
    )
    for k, v in before.items():
        w = odd[k] if time_major or k not in ("x", "dhs") else odd[k].transpose(1, 0, 2)
        np.testing.assert_array_equal(w, v, err_msg=f"{k} was modified")
    f64, hs_ref, hl_ref = reference(p, "tanh")
    tm = (lambda a: a) if time_major else (lambda a: a.transpose(1, 0, 2))
    assert_close(hs, tm(hs_ref), np.float64, "hs")
    assert_close(h_last, hl_ref, np.float64, "h_last")
    g_ref = _reference.rnn_backward(f64["dhs"], f64["x"], f64["Wx"], f64["Wh"], tm(hs), f64["h0"], f64["dh_last"])
    for name, a, e in zip(prf.RNNGrads._fields, g, g_ref):
        assert_close(a, tm(e) if name == "dx" else e, np.float64, name)


def test_hs_passed_to_backward_is_not_modified(backend):
    p = make_problem(5, 3, 4, 6, seed=5)
    hs, _ = prf.rnn_forward(*_args(p), time_major=True, backend=backend)
    hs_copy, dhs_copy = hs.copy(), p["dhs"].copy()
    prf.rnn_backward(p["dhs"], p["x"], p["Wx"], p["Wh"], hs, p["h0"], time_major=True, backend=backend)
    np.testing.assert_array_equal(hs, hs_copy)
    np.testing.assert_array_equal(p["dhs"], dhs_copy)


def test_array_likes_are_accepted():
    p = make_problem(2, 2, 3, 4)
    hs, _ = prf.rnn_forward(p["x"].tolist(), p["Wx"].tolist(), p["Wh"].tolist(), p["b"].tolist(), time_major=True)
    hs_ref, _ = prf.rnn_forward(p["x"], p["Wx"], p["Wh"], p["b"], time_major=True)
    np.testing.assert_array_equal(hs, hs_ref)


# --- empty sizes ---------------------------------------------------------------------------


@pytest.mark.parametrize("h0", [False, True])
@pytest.mark.parametrize("dh_last", [False, True])
def test_zero_steps(backend, h0, dh_last):
    p = make_problem(0, 3, 4, 5, h0=h0, dh_last=dh_last)
    hs, h_last = prf.rnn_forward(*_args(p), time_major=True, backend=backend)
    assert hs.shape == (0, 3, 5)
    np.testing.assert_array_equal(h_last, p["h0"] if h0 else np.zeros((3, 5)))
    if h0:
        assert h_last is not p["h0"]
    g = prf.rnn_backward(
        p["dhs"], p["x"], p["Wx"], p["Wh"], hs, p["h0"], dh_last=p["dh_last"], time_major=True, backend=backend
    )
    np.testing.assert_array_equal(g.dh0, p["dh_last"] if dh_last else np.zeros((3, 5)))
    assert g.dx.shape == (0, 3, 4)
    for name in ("dWx", "dWh", "db"):
        assert not np.any(getattr(g, name)), name


@pytest.mark.parametrize("shape", [(3, 0, 4, 5), (3, 2, 0, 5), (3, 2, 4, 0), (0, 0, 0, 0)])
def test_other_empty_sizes(backend, shape):
    p = make_problem(*shape)
    check_against_reference(p, "tanh", backend)


# --- NaN -----------------------------------------------------------------------------------


@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nan_propagates_like_the_reference(backend, activation, dtype):
    p = make_problem(6, 4, 5, 20, dtype=dtype, seed=6)
    p["x"][2, 1, 3] = np.nan  # sample 1 from step 2 on
    p["h0"][3, 0] = np.nan  # sample 3 from the start
    hs, h_last = prf.rnn_forward(*_args(p), activation=activation, time_major=True, backend=backend)
    _, hs_ref, _ = reference(p, activation)
    np.testing.assert_array_equal(np.isnan(hs), np.isnan(hs_ref))
    assert np.isnan(hs[2:, 1]).all() and np.isnan(hs[:, 3]).all() and not np.isnan(hs[:, 0]).any()
    p["dhs"][4, 2, 7] = np.nan
    g = prf.rnn_backward(
        p["dhs"], p["x"], p["Wx"], p["Wh"], hs, p["h0"], activation=activation, time_major=True, backend=backend
    )
    assert np.isnan(g.dWh).any() and np.isnan(g.dh0[2]).all()


# --- backends, env, threads, import --------------------------------------------------------


def test_backends_listing_and_choice(monkeypatch):
    names = prf.backends()
    assert names[-1] == "numpy" and names == [n for n in ("cpp", "numba", "numpy") if n in names]
    monkeypatch.setenv("PYRNN_FAST_BACKEND", "numpy")
    assert _backends.get_backend(None).name == "numpy"
    monkeypatch.setenv("PYRNN_FAST_BACKEND", "nonsense")
    with pytest.raises(ValueError, match="PYRNN_FAST_BACKEND='nonsense'"):
        prf.rnn_forward(np.zeros((1, 1, 1)), np.zeros((1, 1)), np.zeros((1, 1)))
    monkeypatch.delenv("PYRNN_FAST_BACKEND")
    assert _backends.get_backend(None).name == names[0]


def test_set_num_threads_validates_and_round_trips():
    old = prf.get_num_threads()
    try:
        prf.set_num_threads(1)
        assert prf.get_num_threads() == 1
        prf.set_num_threads(np.int64(3))
        assert prf.get_num_threads() == 3
        with pytest.raises(ValueError, match="n"):
            prf.set_num_threads(0)
        with pytest.raises(TypeError, match="n"):
            prf.set_num_threads("2")
        with pytest.raises(TypeError, match="n"):
            prf.set_num_threads(1.5)
    finally:
        prf.set_num_threads(old)


def test_import_does_not_import_numba(tmp_path):
    code = "import sys, pyrnn_fast; assert 'numba' not in sys.modules, 'numba imported'; print(pyrnn_fast.backends())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr


BROKEN_NUMBA_CHILD = """if True:
    import warnings
    warnings.simplefilter("error")  # nothing to warn about: the compiled backend is there
    import numpy as np
    import pyrnn_fast as prf
    before = prf.backends()
    x, Wx, Wh = np.ones((2, 3, 4)), np.ones((4, 5)), np.ones((5, 5))
    try:
        prf.rnn_forward(x, Wx, Wh, backend="numba")
        print("no error")
    except ValueError as e:
        print(e)
    print(before, prf.backends())
"""


def test_a_numba_that_fails_to_import_is_a_clear_error_and_then_not_listed(tmp_path):
    """numba installed but failing at import (a numba too old for the NumPy beside it): the
    backend raised numba's raw ImportError and the main job's self-check died on it even with
    `--backends cpp` (found by a review)."""
    fake = tmp_path / "numba"
    fake.mkdir()
    (fake / "__init__.py").write_text('raise ImportError("Numba needs NumPy 2.3 or less (simulated)")\n')
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run(
        [sys.executable, "-c", BROKEN_NUMBA_CHILD], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr
    error, listed = out.stdout.splitlines()
    assert error.startswith("backend: 'numba' is not available here (numba is installed but could not be imported: ")
    assert "Numba needs NumPy 2.3 or less (simulated)" in error
    if _backends._core is not None:
        assert listed == "['cpp', 'numba', 'numpy'] ['cpp', 'numpy']"
    main_job = [sys.executable, "-m", "pyrnn_fast", "--shapes", "tiny", "--cells", "rnn", "--repeat", "1", "--no-peers"]
    if _backends._core is not None:
        out = subprocess.run(
            [*main_job, "--backends", "cpp"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600
        )
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
        assert "self-check: numba skipped: backend: 'numba' is not available here" in out.stdout
        # By default the job times every usable backend and says which it skipped (it timed the
        # broken numba too, and died); asked for by name, that backend is an error line.
        out = subprocess.run(main_job, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
        assert "numba skipped: backend: 'numba' is not available here" in out.stderr
        assert "timed: cpp, numpy" in out.stdout
        out = subprocess.run([*main_job, "--backends", "numba"], capture_output=True, text=True, env=env, cwd=tmp_path)
        assert out.returncode == 2 and "error: --backends: backend: 'numba' is not available here" in out.stderr


def test_numba_without_a_writable_cache_compiles_and_says_so(tmp_path):
    """A read-only install with no writable home (a container, a service user): numba's
    cache=True raised "cannot cache function" at import and the numba backend could not be used
    at all (found by a review). It now compiles without a cache, with a RuntimeWarning."""
    pytest.importorskip("numba")
    ro = tmp_path / "ro"
    shutil.copytree(
        pathlib.Path(prf.__file__).resolve().parent, ro / "pyrnn_fast", ignore=shutil.ignore_patterns("__pycache__")
    )
    for p in [ro, *ro.rglob("*")]:
        p.chmod(p.stat().st_mode & ~0o222)
    env = {k: v for k, v in os.environ.items() if k not in ("XDG_CACHE_HOME", "NUMBA_CACHE_DIR")}
    env.update(HOME=str(ro), PYTHONPATH=str(ro))
    as_user = []  # root writes whatever the permission bits say: drop that capability
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("root without setpriv: a read-only directory cannot be simulated")
        as_user = [
            "setpriv",
            "--inh-caps=-dac_override,-dac_read_search",
            "--bounding-set=-dac_override,-dac_read_search",
            "--",
        ]
    code = (
        "import numpy as np, pyrnn_fast as prf; print(prf.__file__); "
        "print(prf.rnn_forward(np.ones((2, 3, 4)), np.ones((4, 5)) / 4, np.eye(5) / 2, backend='numba')[1].sum())"
    )
    try:
        out = subprocess.run(
            [*as_user, sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600
        )
    finally:
        for p in [ro, *ro.rglob("*")]:
            p.chmod(p.stat().st_mode | 0o200)  # so that pytest can remove it
    if out.returncode != 0 and "Operation not permitted" in out.stderr:
        pytest.skip(f"setpriv cannot drop capabilities here: {out.stderr.strip()}")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0].startswith(str(ro)), out.stdout
    expected = prf.rnn_forward(np.ones((2, 3, 4)), np.ones((4, 5)) / 4, np.eye(5) / 2, backend="numpy")[1].sum()
    assert abs(float(out.stdout.splitlines()[1]) - expected) < 1e-12
    assert "numba cannot cache its compiled kernels here" in out.stderr and "NUMBA_CACHE_DIR" in out.stderr


def test_forcing_an_unsupported_isa_is_a_clear_error(tmp_path):
    if _backends._core is None:
        pytest.skip("compiled backend not built")
    env = dict(os.environ, PYRNN_FAST_ISA="sse9")
    out = subprocess.run(
        [sys.executable, "-c", "import pyrnn_fast"], capture_output=True, text=True, env=env, cwd=tmp_path
    )  # not the source tree, which would shadow the installed package
    assert out.returncode != 0 and "PYRNN_FAST_ISA" in out.stderr
    env["PYRNN_FAST_ISA"] = "generic"
    out = subprocess.run(
        [sys.executable, "-c", "import pyrnn_fast; print(pyrnn_fast.isa())"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert out.returncode == 0 and out.stdout.strip() == "generic", out.stderr


NO_CORE_CHILD = """if True:
    import os, numpy as np, pyrnn_fast as prf
    print(prf.backends()[0], prf.get_num_threads(), flush=True)
    x, Wx, Wh = np.full((32, 3, 8), 0.01), np.full((8, 128), 0.01), np.eye(128) / 2
    prf.rnn_forward(x, Wx, Wh)  # 32 rows, H = 128 (2^19 a step): numba's parallel kernels where it has 2 threads
    pid = os.fork()
    if pid == 0:
        print(prf.get_num_threads(), flush=True)
        prf.rnn_forward(x, Wx, Wh)
        os._exit(0)
    print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
"""


def test_without_the_compiled_backend_threads_follow_openmp_and_a_forked_child_runs(tmp_path):
    """A source tree never built, on the Numba backend (found by a review): the thread count was
    os.cpu_count(), whatever OMP_NUM_THREADS or the CPU affinity said, and a child forked
    after a parallel call ran numba's OpenMP kernels and was killed ("fork() called from a
    process already using GNU OpenMP"). Now OpenMP's default, and 1 in a forked child."""
    pytest.importorskip("numba")
    if not hasattr(os, "fork") or not hasattr(os, "sched_getaffinity"):
        pytest.skip("needs fork and sched_getaffinity")
    copy = tmp_path / "src"
    shutil.copytree(
        pathlib.Path(prf.__file__).resolve().parent,
        copy / "pyrnn_fast",
        ignore=shutil.ignore_patterns("__pycache__", "_core.*.so", "_core.*.pyd"),
    )
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "PYRNN_FAST_BACKEND")}
    env["PYTHONPATH"] = str(copy)
    run = functools.partial(subprocess.run, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    out = run([sys.executable, "-c", NO_CORE_CHILD], env=env)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.split()
    assert lines[:2] == ["numba", str(len(os.sched_getaffinity(0)))] and lines[2:] == ["1", "0"], (
        out.stdout + out.stderr
    )
    out = run(
        [sys.executable, "-c", "import pyrnn_fast as prf; print(prf.get_num_threads())"],
        env=dict(env, OMP_NUM_THREADS="1,1"),
    )
    assert out.returncode == 0 and out.stdout.strip() == "1", out.stdout + out.stderr
