"""The public API is exactly throttlekit.__all__, and every public name is documented."""

from __future__ import annotations

import doctest
import inspect
import re
from pathlib import Path

import throttlekit


def test_all_is_sorted_and_matches_public_names() -> None:
    """__all__ is sorted and lists exactly the public attributes of the package."""
    public = {
        name
        for name, value in vars(throttlekit).items()
        if not name.startswith("_") and not inspect.ismodule(value)
    }
    assert list(throttlekit.__all__) == sorted(throttlekit.__all__)
    assert set(throttlekit.__all__) == public


def test_public_names_are_importable_and_documented() -> None:
    """Every name in __all__ resolves and has a docstring that says something."""
    for name in throttlekit.__all__:
        obj = getattr(throttlekit, name)
        assert obj.__doc__ and len(obj.__doc__.strip()) > 40, name


def test_public_names_appear_in_the_api_reference() -> None:
    """docs/api.rst documents every public name."""
    api = (Path(__file__).parent.parent / "docs" / "api.rst").read_text()
    directive = r"^\.\. auto(?:class|exception|function):: throttlekit\.(\w+)"
    documented = set(re.findall(directive, api, re.MULTILINE))
    assert documented == set(throttlekit.__all__)


def test_version_is_available() -> None:
    """__version__ is the installed distribution's version."""
    assert re.match(r"\d+\.\d+", throttlekit.__version__)


def test_py_typed_ships() -> None:
    """The package is marked as typed."""
    assert (Path(throttlekit.__file__).parent / "py.typed").exists()


def test_errors_share_one_root() -> None:
    """Every exception class in the API derives from ThrottlekitError."""
    for name in throttlekit.__all__:
        obj = getattr(throttlekit, name)
        if isinstance(obj, type) and issubclass(obj, BaseException):
            assert issubclass(obj, throttlekit.ThrottlekitError), name


def test_public_names_say_throttlekit_is_their_module() -> None:
    """Tracebacks and reprs name throttlekit.X, not the private module that defines X."""
    for name in throttlekit.__all__:
        assert getattr(throttlekit, name).__module__ == "throttlekit", name
    assert repr(throttlekit.UnitError) == "<class 'throttlekit.UnitError'>"


def test_method_examples_run() -> None:
    """
    Examples in public methods' docstrings run and pass. (pytest's doctest collection
    skips them: it finds a method through its class, which now names throttlekit as its
    module while the method's globals are the private module's.)
    """
    finder, runner = doctest.DocTestFinder(recurse=False), doctest.DocTestRunner()
    ran = 0
    for name in throttlekit.__all__:
        cls = getattr(throttlekit, name)
        if not isinstance(cls, type):
            continue
        for attr, member in vars(cls).items():
            func = getattr(member, "__func__", member)
            if not inspect.isfunction(func) or ">>>" not in (func.__doc__ or ""):
                continue
            for test in finder.find(func, f"{name}.{attr}", globs=dict(func.__globals__)):
                ran += len(test.examples)
                runner.run(test)
    assert ran > 0
    assert runner.failures == 0
