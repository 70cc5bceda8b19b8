"""The README's Python examples run as written and do what they say."""

import functools
import pathlib
import re

import numpy as np
import pytest

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def _examples():
    if not README.exists():
        return []
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    return [b for b in blocks if "import pyrnn_fast" in b]


@pytest.mark.parametrize("code", _examples())
def test_readme_example_runs(code, monkeypatch):
    if "LocalCluster" in code:
        # The Dask example's LocalCluster serves its dashboard on the default port, 8787. When
        # something else on the host has that port, distributed warns (an error here: pytest's
        # filterwarnings) and leaks the socket of its failed bind (a ResourceWarning): the test
        # failed with "Cluster failed to start". The example as written, on any free port.
        import distributed

        any_port = functools.partial(distributed.LocalCluster, dashboard_address=":0")
        monkeypatch.setattr(distributed, "LocalCluster", any_port)
    namespace = {}
    exec(compile(code, str(README), "exec"), namespace)
    if "g" in namespace and "hs" in namespace:  # the training-step example
        hs, g, x = namespace["hs"], namespace["g"], namespace["x"]
        assert hs.dtype == np.float32 and g.dWx.dtype == np.float32
        assert g.dx.shape == x.shape


def test_readme_has_examples():
    assert _examples(), "README.md has no runnable example"
