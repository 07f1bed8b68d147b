"""
The ``throttlekit`` command line: the only part that uses all three pillars.

``_main`` parses arguments and turns every way out into one status, ``_demo`` is the main
job end to end, ``_pipe`` copies stdin to stdout at a rate, ``_run`` runs a command under
a CPU cap and lower priority, ``_site`` looks at and changes budgets shared through Redis
(and gives ``pipe --site`` its limiter); ``data/`` holds the demo's sample documents; the
output helpers every command shares (:func:`print_table`) live here. The library never imports
this package.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TextIO

__all__ = ["print_table"]


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
