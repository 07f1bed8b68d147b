"""The tree says what the README says: three pillars that never import each other."""

from __future__ import annotations

import ast
from pathlib import Path

import throttlekit

PACKAGE = Path(throttlekit.__file__).parent
PILLARS = ("_policy", "_execution", "_throttle")


def imported(path: Path) -> set[str]:
    """Every throttlekit module that ``path`` imports, as dotted names, wherever it imports."""
    module = ".".join(("throttlekit", *path.relative_to(PACKAGE).with_suffix("").parts))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    if path.name == "__init__.py":
        module = package
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")
            if node.level:
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            names.add(target)
            names.update(f"{target}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {name for name in names if name.split(".")[0] == "throttlekit"}


def part(name: str) -> str:
    """The top-level part of throttlekit that a dotted module name belongs to."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_every_module_is_in_a_pillar_or_the_shared_core() -> None:
    """Only the curated entry points and the shared core sit at the top; the rest is foldered."""
    top = {p.name for p in PACKAGE.iterdir() if p.suffix == ".py" or p.is_dir()}
    top.discard("__pycache__")
    assert top == {
        "__init__.py",
        "__main__.py",
        "_errors.py",
        "_checks.py",
        "_tasks.py",
        "testing.py",
        "redis.py",
        "prometheus.py",
        "_cli",
        "_site",
        *PILLARS,
    }


def test_pillars_never_import_each_other() -> None:
    """A module of one pillar imports only its own pillar, the shared core and libraries."""
    checked = 0
    for pillar in PILLARS:
        for path in (PACKAGE / pillar).glob("*.py"):
            for name in imported(path):
                shared = {pillar, "_errors", "_checks", "_tasks"}
                assert part(name) in shared, f"{path.name} imports {name}"
            checked += 1
    assert checked >= 15


def test_the_site_builds_on_the_pillars_and_nothing_imports_it() -> None:
    """_site (budgets across machines) may use _throttle and _execution, never the CLI;
    the pillars never import it, so the core never needs redis-py."""
    checked = 0
    for path in (PACKAGE / "_site").glob("*.py"):
        for name in imported(path):
            assert part(name) in {"_site", "_throttle", "_execution", "_errors", "_checks"}, (
                f"{path.name} imports {name}"
            )
        checked += 1
    assert checked >= 3
    for pillar in PILLARS:
        for path in (PACKAGE / pillar).glob("*.py"):
            assert not any(part(name) in {"_site", "redis"} for name in imported(path)), path
    assert not any(part(name) in {"_site", "redis"} for name in imported(PACKAGE / "__init__.py"))


def test_the_library_never_imports_the_command_line() -> None:
    """Nothing outside _cli imports it, so importing throttlekit never loads the CLI."""
    for path in PACKAGE.rglob("*.py"):
        if "_cli" in path.relative_to(PACKAGE).parts or path.name == "__main__.py":
            continue
        assert not any(part(name) == "_cli" for name in imported(path)), path


def test_the_layout_check_sees_relative_imports() -> None:
    """The import reader resolves ``from .._x import y`` inside a pillar (it can fail)."""
    names = imported(PACKAGE / "_cli" / "_demo.py")
    assert "throttlekit._execution._pool" in names
    assert "throttlekit._throttle._ratelimit" in names


def test_only_the_integrations_import_their_extras() -> None:
    """No module of the core, a pillar or the site imports throttlekit.prometheus, so the
    core never needs prometheus_client; the integration itself never imports the CLI."""
    for path in PACKAGE.rglob("*.py"):
        if path.name == "prometheus.py":
            assert not any(part(name) == "_cli" for name in imported(path))
            continue
        assert not any(part(name) == "prometheus" for name in imported(path)), path
