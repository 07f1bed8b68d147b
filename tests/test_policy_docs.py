"""Every example in the policy pillar's docstrings runs, wherever the docstring sits."""

from __future__ import annotations

import ast
import doctest
import importlib
import inspect
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

import throttlekit

POLICY = Path(throttlekit.__file__).parent / "_policy"
MODULES = sorted(
    f"throttlekit._policy.{path.stem}" if path.stem != "__init__" else "throttlekit._policy"
    for path in POLICY.glob("*.py")
)


def docstrings(module: ModuleType) -> Iterator[tuple[str, str]]:
    """(name, docstring) for the module and everything defined in it: functions, classes
    (public ones too, whose ``__module__`` says ``throttlekit``) and their methods,
    classmethods, staticmethods and properties."""
    yield module.__name__, module.__doc__ or ""
    assert module.__file__ is not None
    tree = ast.parse(Path(module.__file__).read_text())
    defined = [
        node.name
        for node in tree.body
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
    ]
    for name in defined:
        obj = getattr(module, name)
        yield f"{module.__name__}.{name}", obj.__doc__ or ""
        if not isinstance(obj, type):
            continue
        for attr, member in vars(obj).items():
            func = member.fget if isinstance(member, property) else member
            func = getattr(func, "__func__", func)
            if inspect.isfunction(func):
                yield f"{module.__name__}.{name}.{attr}", func.__doc__ or ""


@pytest.mark.parametrize("name", MODULES)
def test_docstrings_show_no_example_that_never_runs(name: str) -> None:
    """No literal block (``::``) in a docstring: an example is a doctest, or it could drift
    from the code unnoticed (as the watcher's ``limits.set_total(...)`` once did)."""
    module = importlib.import_module(name)
    literal = [
        where
        for where, doc in docstrings(module)
        if any(line.rstrip().endswith("::") for line in doc.splitlines())
    ]
    assert literal == []


def test_every_docstring_example_runs() -> None:
    """Each docstring example of the pillar runs against its module and passes, including
    those pytest's collection misses (properties, private classes, methods of public
    classes)."""
    parser, runner = doctest.DocTestParser(), doctest.DocTestRunner()
    ran: dict[str, int] = {}
    for name in MODULES:
        module = importlib.import_module(name)
        for where, doc in docstrings(module):
            if ">>>" not in doc:
                continue
            test = parser.get_doctest(doc, dict(vars(module)), where, module.__file__, 0)
            runner.run(test)
            ran[where] = len(test.examples)
    assert runner.failures == 0
    assert "throttlekit._policy._watch.PolicyWatcher" in ran
    assert "throttlekit._policy._rules.RuledPolicy.resolve_many" in ran
