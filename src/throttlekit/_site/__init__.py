"""
Budgets shared across machines through Redis (the public module is
:mod:`throttlekit.redis`).

The pure maths (max-min fair shares and demand estimation, ``_fair``) needs nothing but
Python; the server-side scripts (``_scripts``) are Lua text; the site, its heartbeat and
the shared limits (``_core``) need redis-py (the ``redis`` extra). This part uses the
throttle pillar (a shared rate drives a plain :class:`~throttlekit.RateLimiter`); the
pillars never import it, and it never imports the command line.
"""
