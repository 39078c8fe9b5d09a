"""``python -m tusk_events`` runs the CLI."""

from __future__ import annotations

import sys

from tusk_events.cli import main

sys.exit(main())
