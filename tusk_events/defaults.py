"""Named defaults, each explained once. Modules import from here instead of repeating literals."""

from __future__ import annotations

# --- where things live -------------------------------------------------------------

DEFAULT_BUS_URL = "memory://"
"""The bus used when neither the config nor the environment names one: embedded, zero setup."""

DEFAULT_STORE_URL = "sqlite:///events.db"
"""The event store used when neither the config nor the environment names one."""

BUS_ENV_VAR = "EVENT_BUS"
"""Environment variable naming the bus URL (read through the TSK's env mapping)."""

STORE_ENV_VAR = "EVENT_STORE"
"""Environment variable naming the event store URL (read through the TSK's env mapping)."""

# --- fujsen execution --------------------------------------------------------------

FUJSEN_TIMEOUT_S = 1.0
"""CPU-side budget of one fujsen call; time blocked in helpers (Redis, SQL) does not count."""

FUJSEN_TIMEOUT_GRACE_S = 0.05
"""After the budget is spent, the interrupt is re-sent this often until the fujsen stops."""

WATCHDOG_TICK_S = 0.01
"""How often the budget watchdog looks at running fujsen (bounds how late a timeout lands)."""

FUJSEN_MEMORY_LIMIT = 512 << 20
"""Growth of the process's resident memory during one fujsen call that ends it (bytes)."""

SANDBOX_MAX_ITEMS = 10_000_000
"""Largest range / list repetition a fujsen may build in one C-level step."""

SANDBOX_MAX_STR = 1 << 26
"""Largest str/bytes (64 Mi characters) a fujsen may build in one C-level step."""

SANDBOX_MAX_INT_BITS = 1 << 20
"""Largest integer (about 315,000 digits) a product, power or shift may produce."""

SANDBOX_MAX_WIDTH = 100_000
"""Largest field width or precision in a format spec."""

SANDBOX_MAX_PRINT = 64 * 1024
"""print() output kept per fujsen call (characters); the rest is dropped."""

MAX_CLIENTS_PER_TSK = 16
"""Distinct bus URLs one TSK's fujsen may open (each must be named by the config or env)."""

# --- services and the runtime ----------------------------------------------------------

SERVICE_RETRIES = 3
"""Further attempts after a handler fails, before the event goes to the dead-letter queue."""

SERVICE_BACKOFF_S = 0.05
"""Delay before the first retry; each further retry doubles it (full jitter), up to the cap."""

SERVICE_BACKOFF_MAX_S = 2.0
"""Cap of one retry delay."""

SERVICE_CONCURRENCY = 1
"""Consumers (threads) per service in each worker process."""

DEDUP_TTL_S = 7 * 24 * 3600
"""How long a service remembers that it handled an event id (idempotency window)."""

DLQ_CHANNEL = "tusk_dlq"
"""Pub/sub channel announcing dead-lettered events when the config names no ``dlq_channel``."""
