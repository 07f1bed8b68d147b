"""
The ``throttlekit`` command line: the only part that uses all three pillars.

``_main`` parses arguments and turns every way out into one status, ``_demo`` is the main
job end to end, ``_pipe`` copies stdin to stdout at a rate, ``_run`` runs a command under
a CPU cap and lower priority; ``data/`` holds the demo's sample documents. The library
never imports this package.
"""
