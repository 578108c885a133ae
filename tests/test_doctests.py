"""The Examples sections of the installed package's docstrings run as tests."""

from __future__ import annotations

import doctest
import importlib
import inspect
import pkgutil

import pytest

import jacgeom

MODULES = sorted(
    name
    for _, name, _ in pkgutil.walk_packages(jacgeom.__path__, prefix="jacgeom.")
    if not name.startswith("jacgeom._core") and name != "jacgeom.__main__"
)


@pytest.mark.parametrize("module_name", MODULES)
def test_docstring_examples(module_name: str) -> None:
    module = importlib.import_module(module_name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} doctest(s) failed in {module_name}"


def test_public_functions_have_examples() -> None:
    for name in jacgeom.__all__:
        obj = getattr(jacgeom, name)
        # Functions and classes; type aliases (jacgeom.ActivationName) are documented in
        # jacgeom.typing.
        runs = inspect.isfunction(obj) or inspect.isclass(obj)
        if runs and name not in {"get_num_threads", "activation_names"}:
            assert (
                obj.__doc__
                and "Examples" in obj.__doc__
                or name in {"Activation", "HomeomorphismReport", "set_num_threads"}
            ), name
