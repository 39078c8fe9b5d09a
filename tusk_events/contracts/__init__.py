"""Event contracts: JSON Schemas from ``[contracts]``, validation on publish and consume
(``model``), compatibility between versions (``compat``), AsyncAPI documents (``asyncapi``).

May import: ``lang``, ``bus``, ``events`` and the top-level ``errors``/``defaults``; it reads
configs through their data, never through ``config``. Imported by ``config`` and the runtime.
"""

from __future__ import annotations

from tusk_events.contracts.flows import Flows
from tusk_events.contracts.model import Contract, Contracts, ContractVersion

__all__ = ["Contract", "ContractVersion", "Contracts", "Flows"]
