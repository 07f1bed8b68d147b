"""Sphinx configuration for throttlekit's documentation."""

from __future__ import annotations

from importlib.metadata import version as _version

project = "throttlekit"
author = "throttlekit developers"
copyright = "2026, throttlekit developers"
release = _version("throttlekit")
version = ".".join(release.split(".")[:2])

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3
exclude_patterns = ["_build"]

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True

html_theme = "furo"
html_title = f"throttlekit {release}"


def _public_field_docs(app: object) -> None:
    # Public records document each field with a ``#:`` comment in the private module
    # that defines them, but name ``throttlekit`` (or ``throttlekit.redis``) as their
    # module, which is where autodoc looks for such comments. Hand autodoc each public
    # class's comments under the public module's name.
    import importlib
    import pkgutil

    from sphinx.pycode import ModuleAnalyzer

    import throttlekit

    comments: dict[tuple[str, str], list[str]] = {}
    for info in pkgutil.walk_packages(throttlekit.__path__, "throttlekit."):
        if info.name != "throttlekit.__main__":  # importing it would run the command line
            analyzer = ModuleAnalyzer.for_module(info.name)
            analyzer.analyze()
            comments.update(analyzer.attr_docs)
    for public in ("throttlekit", "throttlekit.redis", "throttlekit.prometheus"):
        module = importlib.import_module(public)
        analyzer = ModuleAnalyzer.for_module(public)
        analyzer.analyze()
        for (qualname, field), lines in comments.items():
            cls = getattr(module, qualname.partition(".")[0], None)
            if qualname and getattr(cls, "__module__", None) == public:
                analyzer.attr_docs.setdefault((qualname, field), lines)


def setup(app: object) -> None:
    app.connect("builder-inited", _public_field_docs)  # type: ignore[attr-defined]
