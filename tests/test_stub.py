"""_core.pyi against the built extension. stubtest (run in CI) checks that the stub and the
module define the same names, but pybind11 functions carry no inspectable signature, so it
cannot check their parameters: here each stub signature's parameter names, in order, are
compared with the signature pybind11 writes as the first line of the function's docstring."""

from __future__ import annotations

import ast
import pathlib
import re

import pytest

from pyrnn_fast import _backends

core = _backends._core
pytestmark = pytest.mark.skipif(core is None, reason="the compiled backend is not installed")


def _stub_functions() -> dict[str, list[str]]:
    stub = pathlib.Path(core.__file__).with_name("_core.pyi")
    tree = ast.parse(stub.read_text())
    return {
        f.name: [a.arg for a in f.args.args + f.args.kwonlyargs] for f in tree.body if isinstance(f, ast.FunctionDef)
    }


def _runtime_parameters(fn) -> list[str]:
    first = fn.__doc__.splitlines()[0]  # e.g. "forward(xw: numpy.ndarray, ..., threads: int) -> None"
    m = re.fullmatch(rf"{fn.__name__}\((.*)\) -> .*", first)
    assert m, f"no pybind11 signature line in {fn.__name__}'s docstring: {first!r}"
    return re.findall(r"(\w+):", m.group(1))


def _stub_classes() -> dict[str, dict[str, list[str]]]:
    stub = pathlib.Path(core.__file__).with_name("_core.pyi")
    tree = ast.parse(stub.read_text())
    return {
        c.name: {f.name: [a.arg for a in f.args.args] for f in c.body if isinstance(f, ast.FunctionDef)}
        for c in tree.body
        if isinstance(c, ast.ClassDef)
    }


def test_the_stub_lists_every_function_with_its_parameters():
    functions = _stub_functions()
    runtime = {
        name
        for name in dir(core)
        if not name.startswith("__") and callable(getattr(core, name)) and not isinstance(getattr(core, name), type)
    }
    assert set(functions) == runtime
    for name, params in functions.items():
        assert params == _runtime_parameters(getattr(core, name)), name


def test_the_stub_lists_every_class_with_its_methods_and_properties():
    classes = _stub_classes()
    assert set(classes) == {name for name in dir(core) if isinstance(getattr(core, name), type)}
    for cls_name, methods in classes.items():
        cls = getattr(core, cls_name)
        public = {n for n in vars(cls) if not n.startswith("_")} | {"__init__"}
        assert set(methods) == public, cls_name
        for name, params in methods.items():
            member = getattr(cls, name)
            if isinstance(member, property):
                continue
            assert params == _runtime_parameters(member), f"{cls_name}.{name}"
