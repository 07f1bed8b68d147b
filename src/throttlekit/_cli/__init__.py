"""
The ``throttlekit`` command line: the only part that uses all three pillars.

``_main`` parses arguments and turns every way out into one status, ``_demo`` is the main
job end to end, ``_pipe`` copies stdin to stdout at a rate, ``_run`` runs a command under
a CPU cap and lower priority, ``_site`` looks at and changes budgets shared through Redis
(and gives ``pipe --site`` its limiter); ``data/`` holds the demo's sample documents; the
output helpers every command shares (:func:`print_table`, :func:`describe_error`) live
here. The library never imports this package.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TextIO

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

__all__ = ["describe_error", "print_table"]


def print_table(rows: Sequence[Sequence[str]], out: TextIO, *, indent: str = "") -> None:
    """
    ``rows`` (the first one a header) as left-aligned columns two spaces apart, each line
    after ``indent``, trailing spaces dropped: the one table printer of every command.

    >>> import sys
    >>> print_table([("NODE", "WORKERS"), ("node1", "3")], sys.stdout, indent="  ")
      NODE   WORKERS
      node1  3
    """
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=True)]
        out.write((indent + "  ".join(cells)).rstrip() + "\n")


def describe_error(error: BaseException) -> str:
    """
    The one-line text of an error for a ``throttlekit: error:`` line: its message (its
    class name when it has none), the members of a group joined by ``; ``, and a fixed
    text when ``__str__`` itself fails, so a broken message never hides the error.

    >>> describe_error(BaseExceptionGroup("two", [ValueError("bad rate"), OSError()]))
    'bad rate; OSError'
    """
    if isinstance(error, BaseExceptionGroup):
        return "; ".join(describe_error(inner) for inner in error.exceptions)
    try:
        return str(error) or type(error).__name__
    except Exception:  # a broken __str__ must not hide the error it describes
        return "(its message cannot be shown)"
