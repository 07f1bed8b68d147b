"""
Pillar 3, throttle: how fast it may go.

Rates and sizes with explicit units (``_units``), the sans-I/O token bucket and its line
of waiters (``_bucket``), timetables (``_schedule``), the rate limiter for tasks and
threads (``_ratelimit``), stream and file wrappers (``_streams``), and CPU caps and
priorities (``_cpu``). Imports nothing from the other pillars; everything public is
re-exported by :mod:`throttlekit`.
"""
