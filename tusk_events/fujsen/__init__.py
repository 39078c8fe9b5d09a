"""Fujsen: Python embedded in configs, compiled under a policy and run in a sandbox.

``sandbox`` compiles (RestrictedPython + policy), ``guards`` are the run-time checks, ``budget``
the deadline and size limits, ``helpers`` the injected ``redis``/``query``/``execute``/``publish``,
``executor`` runs in-process; in worker processes: ``isolation`` (settings, runner), ``pool``
(the processes), ``wire`` (frames, codecs), ``helpserve`` (the parent's side of helper calls),
``worker`` (the worker's side), ``harden`` (an untrusted config's confinement) and ``replycap``
(its Redis replies, read within a byte allowance).
May import: ``errors``, ``defaults``, ``events``, ``bus``, ``store``. Never imported by ``lang``, ``bus`` or ``store``.
"""
