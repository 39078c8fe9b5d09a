"""The TuskLang language: grammar, parser, ``dumps``.

May import: ``errors``, ``defaults`` only. Knows nothing of fujsen, buses, stores or the runtime;
everything else may import it.
"""

from __future__ import annotations

from tusk_events.lang.parser import Parsed, dumps, load

__all__ = ["Parsed", "dumps", "load"]
