"""The public API is exactly throttlekit.__all__, and every public name is documented."""

from __future__ import annotations

import doctest
import inspect
import re
from pathlib import Path

import pytest

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


def _docstring_owners() -> list[tuple[str, object, dict[str, object]]]:
    """Every public name, and each method of a public class, with the globals it runs in."""
    owners: list[tuple[str, object, dict[str, object]]] = []
    for name in throttlekit.__all__:
        obj = getattr(throttlekit, name)
        if inspect.isfunction(obj):
            owners.append((name, obj, dict(obj.__globals__)))
        elif isinstance(obj, type):
            functions = [getattr(m, "__func__", m) for m in vars(obj).values()]
            functions += [m.fget for m in vars(obj).values() if isinstance(m, property)]
            functions = [f for f in functions if inspect.isfunction(f)]
            home = dict(functions[0].__globals__) if functions else dict(vars(throttlekit))
            owners.append((name, obj, home))
            owners += [(f"{name}.{f.__name__}", f, dict(f.__globals__)) for f in functions]
    return owners


@pytest.mark.parametrize(
    ("name", "obj", "globs"),
    [o for o in _docstring_owners() if ">>>" in (getattr(o[1], "__doc__", None) or "")],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_docstring_examples_run(name: str, obj: object, globs: dict[str, object]) -> None:
    """
    Examples in the docstrings of public classes, functions and methods run and pass.
    (pytest's doctest collection skips them: public names say throttlekit is their module
    while they live in private modules, so its finder takes them for imports.)
    """
    finder = doctest.DocTestFinder(recurse=False)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    ran = 0
    for test in finder.find(obj, name, globs=globs):
        ran += len(test.examples)
        runner.run(test)
    assert ran > 0
    assert runner.failures == 0


def test_every_public_name_with_examples_is_checked() -> None:
    """The walk above reaches the classes and functions whose docstrings show examples."""
    names = {name for name, obj, _ in _docstring_owners() if ">>>" in (obj.__doc__ or "")}
    assert {"Rate", "ThrottledReader", "throttle_chunks"} <= names
