"""What a user installs: the compiled backend is used, or its absence is loud (with the real
ImportError) and the main job refuses to benchmark the fallback; the installed package is
the one built from this tree; version, licence and metadata come from one place.

The broken-``_core`` cases run in a subprocess: a ``sys.meta_path`` hook makes the import of
``pyrnn_fast._core`` raise (as a missing libgomp or an undefined symbol would), or a copy of
the installed package gets a corrupt or no ``_core`` file.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap

import pytest

import pyrnn_fast as prf

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = pathlib.Path(prf.__file__).resolve().parent  # the installed package
SIMULATED = "simulated: _core.so: undefined symbol: GOMP_fake_for_the_test"

# Run in the child before pyrnn_fast is imported. BREAK: None, "ImportError" or "NotFound";
# HIDE_NUMBA hides numba (as if not installed) so that the main job needs no JIT compile.
PRELUDE = textwrap.dedent(f"""
    import os, sys
    class _BrokenCore:
        def find_spec(self, name, path=None, target=None):
            if name == "pyrnn_fast._core" and os.environ.get("BREAK") == "ImportError":
                raise ImportError({SIMULATED!r})
            if name == "pyrnn_fast._core" and os.environ.get("BREAK") == "NotFound":
                raise ModuleNotFoundError("No module named 'pyrnn_fast._core'", name=name)
            return None
    sys.meta_path.insert(0, _BrokenCore())
    if os.environ.get("HIDE_NUMBA"):
        sys.modules["numba"] = None
""")

# Import pyrnn_fast, recording warnings; report what a user would see.
PROBE = PRELUDE + textwrap.dedent("""
    import json, warnings
    import numpy as np
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import pyrnn_fast as prf
    try:
        prf.rnn_forward(np.zeros((2, 1, 3)), np.zeros((3, 4)), np.zeros((4, 4)), backend="cpp")
        error = None
    except Exception as e:
        error = f"{type(e).__name__}: {e}"
    print(json.dumps({"file": prf.__file__, "backends": prf.backends(), "cpp_error": error,
                      "warnings": [f"{w.category.__name__}: {w.message}" for w in caught]}))
""")

# Run the main job (``python -m pyrnn_fast``) in the child, after the prelude.
MAIN = PRELUDE + "import runpy; runpy.run_module('pyrnn_fast', run_name='__main__', alter_sys=True)\n"

QUICK = ["--shapes", "tiny", "--repeat", "1", "--no-peers"]


def run_python(code, *args, pythonpath=None, timeout=600, **env):
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PYRNN_FAST_")}
    environ.update(env)
    if pythonpath is not None:
        environ["PYTHONPATH"] = str(pythonpath)
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=environ, cwd=ROOT, timeout=timeout
    )


def probe(**kw) -> dict:
    r = run_python(PROBE, **kw)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def runtime_warnings(report) -> list[str]:
    return [w for w in report["warnings"] if w.startswith("RuntimeWarning")]


def copy_of_installed_package(tmp_path, core: bytes | None) -> pathlib.Path:
    """A copy of the installed package in tmp_path/pyrnn_fast whose ``_core`` file is replaced
    by ``core`` (None: no ``_core`` at all, as in a source tree nobody built)."""
    dest = tmp_path / "pyrnn_fast"
    shutil.copytree(PACKAGE, dest, ignore=shutil.ignore_patterns("__pycache__", "_core.*.so", "_core.*.pyd"))
    if core is not None:
        (dest / next(PACKAGE.glob("_core.*.so")).name).write_bytes(core)
    return tmp_path


# --- finding 1: a missing or broken compiled backend is loud --------------------------------


def test_broken_core_warns_and_cpp_error_gives_the_import_error():
    report = probe(BREAK="ImportError")
    assert "cpp" not in report["backends"]
    assert SIMULATED in report["cpp_error"], report["cpp_error"]
    warned = runtime_warnings(report)
    assert len(warned) == 1 and SIMULATED in warned[0], report["warnings"]


def test_installed_package_without_core_warns():
    # pip installed this package (its RECORD lists _core), yet _core is not found: not "unbuilt".
    report = probe(BREAK="NotFound")
    assert "cpp" not in report["backends"]
    assert "No module named 'pyrnn_fast._core'" in report["cpp_error"]
    assert len(runtime_warnings(report)) == 1, report["warnings"]


def test_corrupt_core_file_warns(tmp_path):
    report = probe(pythonpath=copy_of_installed_package(tmp_path, b"not a shared library"))
    assert report["file"].startswith(str(tmp_path))
    assert "cpp" not in report["backends"]
    warned = runtime_warnings(report)
    assert len(warned) == 1, report["warnings"]
    reason = warned[0].split("failed with ", 1)[1]  # the loader's own message, e.g. "invalid ELF header"
    assert reason.startswith("ImportError: ") and reason in report["cpp_error"]


def test_unbuilt_source_tree_is_quiet(tmp_path):
    # The one case that is not an accident: a source checkout used without building it.
    report = probe(pythonpath=copy_of_installed_package(tmp_path, None))
    assert report["file"].startswith(str(tmp_path))
    assert "cpp" not in report["backends"]
    assert "No module named 'pyrnn_fast._core'" in report["cpp_error"]
    assert runtime_warnings(report) == []


def test_main_job_fails_without_cpp():
    r = run_python(MAIN, *QUICK, BREAK="ImportError", HIDE_NUMBA="1")
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert SIMULATED in r.stderr and "--allow-fallback" in r.stderr
    assert "benchmark:" not in r.stdout and "self-check" not in r.stdout


def test_main_job_allow_fallback_runs_and_says_so():
    r = run_python(MAIN, *QUICK, "--allow-fallback", BREAK="ImportError", HIDE_NUMBA="1")
    assert r.returncode == 0, r.stderr
    last = r.stdout.strip().splitlines()[-1]
    assert last.startswith("pyrnn_fast default backend: numpy; timed: numpy"), last
    assert "FALLBACK" in last and SIMULATED in last


def test_main_job_says_cpp_ran():
    r = run_python(MAIN, *QUICK, HIDE_NUMBA="1")
    assert r.returncode == 0, r.stderr
    last = r.stdout.strip().splitlines()[-1]
    assert last == f"pyrnn_fast default backend: cpp (kernel ISA {prf.isa()}); timed: cpp, numpy", last


# --- finding 2: the installed package is this tree's -----------------------------------------


@pytest.mark.skipif(not (ROOT / "src" / "pyrnn_fast").is_dir(), reason="not run from a source tree")
def test_installed_package_is_built_from_this_tree():
    """A stale install (pip skipping a same-version wheel, or an edit after installing) fails here."""
    src = ROOT / "src" / "pyrnn_fast"
    stale = [p.name for p in src.iterdir() if p.is_file() and (PACKAGE / p.name).read_bytes() != p.read_bytes()]
    assert not stale, f"installed {PACKAGE} differs from {src} in {stale}: reinstall"
    core = next(PACKAGE.glob("_core.*"), None)
    assert core is not None and core.suffix in (".so", ".pyd"), f"no compiled _core in {PACKAGE}"
    sources = [ROOT / "CMakeLists.txt", *(ROOT / "csrc").iterdir()]
    newer = [p.name for p in sources if p.stat().st_mtime > core.stat().st_mtime]
    assert not newer, f"{core} is older than {newer}: reinstall"


# --- finding 3: metadata, version and licence ------------------------------------------------


def _distribution():
    dist = importlib.metadata.distribution("pyrnn-fast")
    init = PACKAGE / "__init__.py"
    assert any(pathlib.Path(dist.locate_file(f)).resolve() == init for f in dist.files or ()), (
        f"the installed pyrnn-fast distribution does not own {init}"
    )
    return dist


def test_version_has_one_source():
    assert _distribution().version == prf.__version__


def test_metadata_and_license():
    dist = _distribution()
    meta = dist.metadata
    assert meta["License-Expression"] == "MIT"
    assert meta["Author"] or meta["Author-email"]
    assert any(u.startswith("Homepage, https://") for u in meta.get_all("Project-URL") or [])
    licenses = [f for f in dist.files if f.name == "LICENSE"]
    assert licenses, "no LICENSE file in the installed distribution"
    text = pathlib.Path(dist.locate_file(licenses[0])).read_text()
    assert text.startswith("MIT License") and "the pyrnn_fast developers" in text


@pytest.mark.skipif(
    sys.version_info < (3, 11) or not (ROOT / "pyproject.toml").is_file(), reason="needs tomllib and the source tree"
)
def test_version_is_read_from_the_package():
    import tomllib

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in pyproject["project"] and "version" in pyproject["project"]["dynamic"]
    provider = pyproject["tool"]["scikit-build"]["metadata"]["version"]
    assert provider["input"] == "src/pyrnn_fast/__init__.py"
    assert pyproject["project"]["license"] == "MIT" and pyproject["project"]["license-files"] == ["LICENSE"]
