"""
Conventions the whole package follows, checked on its source so they cannot drift.

One docstring format: prose in the trio/attrs style (a one-line summary, then paragraphs
that name arguments in double backticks), never Google/NumPy section headings; and every
public field of a public record carries a ``#:`` comment directly above it, which Sphinx
shows as that attribute's documentation.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import attrs

import throttlekit
import throttlekit.prometheus
import throttlekit.redis

PACKAGE = Path(throttlekit.__file__).parent
PUBLIC_MODULES = (throttlekit, throttlekit.redis, throttlekit.prometheus)

#: Section headings of Google and NumPy style docstrings (what napoleon would turn into
#: field lists), as a line of their own ("Args:") or as a bold run-in ("**Arguments.**").
HEADINGS = (
    "Args",
    "Arguments",
    "Attributes",
    "Keyword Args",
    "Keyword Arguments",
    "Other Parameters",
    "Parameters",
    "Params",
    "Raises",
    "Return",
    "Returns",
    "Yield",
    "Yields",
)
HEADING = re.compile(
    rf"^[ \t]*(?:(?:{'|'.join(HEADINGS)}):[ \t]*$|\*\*(?:{'|'.join(HEADINGS)})\.?\*\*)",
    re.MULTILINE,
)


def source_files() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(("throttlekit", *parts))


def docstrings(tree: ast.Module) -> Iterator[tuple[str, int, str]]:
    """Every docstring of a module: (whose, line, text)."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            text = ast.get_docstring(node, clean=False)
            if text is not None:
                whose = getattr(node, "name", "module")
                yield whose, node.body[0].lineno, text


def test_heading_pattern_catches_the_old_formats() -> None:
    """The check below is only as good as its pattern: it must see what it forbids."""
    for text in (
        "Summary.\n\n    Attributes:\n        path: the file.\n",
        "Summary.\n\nArgs:\n    x: a number.",
        "Summary.\n\n    Returns:\n        a number.",
        "Summary.\n\n    **Arguments.** ``rate``: a rate.",
        "Summary.\n\n    Arguments:  \n        rate: a rate.",
    ):
        assert HEADING.search(text), text
    for text in (
        "Summary.\n\n    ``rate``: a rate. Returns the rate.",
        "Summary.\n\n    **What it guarantees.** At most the rate.",
        "Summary.\n\n    The arguments: ``rate`` and ``burst``.",
    ):
        assert not HEADING.search(text), text


def test_no_docstring_has_section_headings() -> None:
    """Docstrings are prose: arguments and attributes are named in running text."""
    found = []
    for path in source_files():
        tree = ast.parse(path.read_text(), str(path))
        for whose, line, text in docstrings(tree):
            for match in HEADING.finditer(text):
                heading = match.group(0).strip()
                found.append(f"{path.relative_to(PACKAGE)}:{line} ({whose}): {heading}")
    assert not found, "section headings in docstrings:\n" + "\n".join(found)


def public_records() -> set[type]:
    """The attrs classes among the public names (aliases are the same class)."""
    return {
        obj
        for module in PUBLIC_MODULES
        for name in module.__all__
        if isinstance(obj := getattr(module, name), type) and attrs.has(obj)
    }


def private_modules() -> Iterator[ModuleType]:
    """Every module of the package, imported (``__main__`` would run the command line)."""
    yield throttlekit
    for info in pkgutil.walk_packages(throttlekit.__path__, "throttlekit."):
        if info.name != "throttlekit.__main__":
            yield importlib.import_module(info.name)


def class_definitions() -> dict[type, tuple[Path, ast.ClassDef, list[str]]]:
    """Each top-level class of the package, with the file, node and source lines defining it.

    Public classes say ``throttlekit`` as their ``__module__``, so they are found where
    they are defined: the module whose source has the ``class`` statement and whose
    namespace holds the very same object under that name.
    """
    found: dict[type, tuple[Path, ast.ClassDef, list[str]]] = {}
    for module in private_modules():
        path = Path(module.__file__ or "")
        source = path.read_text()
        lines = source.splitlines()
        for node in ast.parse(source, str(path)).body:
            if isinstance(node, ast.ClassDef):
                obj = vars(module).get(node.name)
                if isinstance(obj, type) and obj.__qualname__ == node.name:
                    found.setdefault(obj, (path, node, lines))
    return found


def field_comment(node: ast.ClassDef, lines: list[str], field: str) -> str | None:
    """The ``#:`` comment directly above ``field``'s statement in ``node``, or ``None``."""
    for statement in node.body:
        if (
            isinstance(statement, ast.AnnAssign)
            and isinstance(statement.target, ast.Name)
            and statement.target.id == field
        ):
            comment = []
            number = statement.lineno - 2  # the line above, 0-based
            while number >= 0 and lines[number].lstrip().startswith("#:"):
                comment.insert(0, lines[number].lstrip()[2:].strip())
                number -= 1
            return " ".join(comment).strip() or None
    raise AssertionError(f"{node.name}.{field}: no annotated statement defines it")


def defining_class(cls: type, field: str) -> type:
    """The class in ``cls``'s MRO whose own body defines the attrs field ``field``."""
    for klass in cls.__mro__:
        if attrs.has(klass) and any(
            a.name == field and not a.inherited for a in attrs.fields(klass)
        ):
            return klass
    raise AssertionError(f"{cls.__qualname__}.{field}: no class defines it")


def test_every_public_record_field_has_a_doc_comment() -> None:
    """A ``#:`` comment sits directly above each public field of each public record."""
    records = public_records()
    assert len(records) >= 20, "the public records were not found"
    definitions = class_definitions()
    missing = []
    for cls in sorted(records, key=lambda c: c.__qualname__):
        for field in attrs.fields(cls):
            if field.name.startswith("_"):
                continue  # private state: not documented, not shown
            owner = defining_class(cls, field.name)
            path, node, lines = definitions[owner]
            if field_comment(node, lines, field.name) is None:
                missing.append(f"{path.relative_to(PACKAGE)}: {cls.__qualname__}.{field.name}")
    assert not missing, "public fields without a #: comment above them:\n" + "\n".join(missing)


def test_field_comment_reads_only_the_lines_directly_above() -> None:
    """The comment finder does not take a comment separated by a blank line or code."""
    source = (
        "class C:\n"
        "    #: documented.\n"
        "    #: over two lines.\n"
        "    a: int\n"
        "    #: separated.\n"
        "\n"
        "    b: int\n"
        "    # an ordinary comment\n"
        "    c: int\n"
        "    d: int\n"
    )
    node = ast.parse(source).body[0]
    assert isinstance(node, ast.ClassDef)
    lines = source.splitlines()
    assert field_comment(node, lines, "a") == "documented. over two lines."
    assert field_comment(node, lines, "b") is None
    assert field_comment(node, lines, "c") is None
    assert field_comment(node, lines, "d") is None


def test_every_package_module_was_seen() -> None:
    """The walk above reaches every source file, so nothing escapes the checks."""
    seen = {module_name(Path(m.__file__ or "")) for m in private_modules()}
    expected = {module_name(p) for p in source_files()} - {"throttlekit.__main__"}
    assert seen == expected
    assert all(name in sys.modules for name in seen)
