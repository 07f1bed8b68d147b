"""
Conventions the whole package follows, checked on its source so they cannot drift.

One docstring format: prose in the trio/attrs style (a one-line summary, then paragraphs
that name arguments in double backticks), never Google/NumPy section headings; and every
public field of a public record carries a ``#:`` comment directly above it, which Sphinx
shows as that attribute's documentation.

One rule for helpers shared between private modules: a module's ``__all__`` lists every
name other modules of the package may import from it, without a leading underscore; a
leading underscore means "used only inside its own module".
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


def test_no_docstring_shows_code_that_never_runs() -> None:
    """Code in docstrings is a doctest (``>>>``), so it runs and cannot drift from the code;
    a ``code-block`` directive would show code that nothing checks."""
    found = []
    for path in source_files():
        tree = ast.parse(path.read_text(), str(path))
        for whose, line, text in docstrings(tree):
            if re.search(r"^\s*\.\. code-block::", text, re.MULTILINE):
                found.append(f"{path.relative_to(PACKAGE)}:{line} ({whose})")
    assert not found, "code blocks that never run:\n" + "\n".join(found)


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


# -- names shared between modules -----------------------------------------------------------
#
# A private module's ``__all__`` lists every name other modules of the package may import
# from it, and those names have no leading underscore; a leading underscore means "used
# only inside its own module". Tests may import anything.


#: Imports against the rule in a module another change is writing right now (cluster
#: slots), left for that change: (importing file, name). Each entry must still be a
#: violation, so the list can only shrink.
PENDING: set[tuple[str, str]] = set()


def is_module(dotted: str) -> bool:
    """Whether ``dotted`` names a module or package of throttlekit (by its source file)."""
    relative = Path(*dotted.split(".")[1:])
    return (PACKAGE / relative).with_suffix(".py").is_file() or (
        PACKAGE / relative / "__init__.py"
    ).is_file()


def imported_names(source: str, module: str, is_package: bool) -> Iterator[tuple[int, str, str]]:
    """Each name ``module`` imports from a throttlekit module: (line, module, name).

    Relative and absolute imports alike, wherever they are (inside functions and
    ``TYPE_CHECKING`` blocks too); importing a submodule (``from . import _x``) is not
    importing a name from a module and is left out.
    """
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            parts = package.split(".")
            base = parts[: len(parts) - node.level + 1]
            target = ".".join([*base, node.module] if node.module else base)
        else:
            target = node.module or ""
        if target.split(".")[0] != "throttlekit":
            continue
        for alias in node.names:
            if not is_module(f"{target}.{alias.name}"):
                yield node.lineno, target, alias.name


def against_the_rule(target: str, name: str) -> str | None:
    """Why importing ``name`` from ``target`` in another module breaks the rule, or ``None``."""
    if name.startswith("__") and name.endswith("__"):
        return None  # a module's own protocol (``__version__``), not a helper
    if name.startswith("_"):
        return "a leading underscore means private to its own module"
    exported = getattr(importlib.import_module(target), "__all__", None)
    if exported is not None and name not in exported:
        return f"not in {target}.__all__"
    return None


def test_modules_import_only_what_other_modules_export() -> None:
    """Every name one module takes from another is in that module's ``__all__``, unprefixed."""
    found = []
    pending = set()
    for path in source_files():
        source = path.read_text()
        where = path.relative_to(PACKAGE).as_posix()
        for line, target, name in imported_names(
            source, module_name(path), path.name == "__init__.py"
        ):
            if (why := against_the_rule(target, name)) is None:
                continue
            if (where, name) in PENDING:
                pending.add((where, name))
            else:
                found.append(f"{where}:{line}: {name} from {target}: {why}")
    assert not found, "names imported across modules against the rule:\n" + "\n".join(found)
    assert pending == PENDING, f"now follow the rule, remove from PENDING: {PENDING - pending}"


def test_sharing_rule_sees_each_way_of_breaking_it() -> None:
    """The check flags an underscored name and a name missing from ``__all__``, relative
    or absolute, at any depth, and lets submodules and exported names through."""
    source = (
        "from . import _blocks\n"
        "from ._blocks import ItemBlock\n"
        "from .._throttle._units import _probe\n"
        "from throttlekit._execution._pool import Probe\n"
        "from .. import _checks\n"
        "def f():\n"
        "    from throttlekit import _publish\n"
    )
    found = list(imported_names(source, "throttlekit._execution._probe", is_package=False))
    assert found == [
        (2, "throttlekit._execution._blocks", "ItemBlock"),
        (3, "throttlekit._throttle._units", "_probe"),
        (4, "throttlekit._execution._pool", "Probe"),
        (7, "throttlekit", "_publish"),
    ]
    assert [against_the_rule(target, name) for _, target, name in found] == [
        None,
        "a leading underscore means private to its own module",
        "not in throttlekit._execution._pool.__all__",
        "a leading underscore means private to its own module",
    ]
    package = list(imported_names("from ._pool import X\n", "throttlekit._execution", True))
    assert package == [(1, "throttlekit._execution._pool", "X")]
