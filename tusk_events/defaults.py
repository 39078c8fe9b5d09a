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

SERVICE_VISIBILITY_TIMEOUT_S = 30.0
"""Durable services: how long an event may stay unacknowledged before another consumer claims it.
Longer than a handler's worst case, retries and their backoff included."""

SERVICE_BATCH = 100
"""Durable services: events read, deduplicated and acknowledged per round trip."""

DEDUP_PREFIX = "tusk:dedup:"
"""Key prefix of the records of handled event ids: ``tusk:dedup:<group>:<event id>``."""

DEDUP_TTL_S = 7 * 24 * 3600
"""How long a service remembers that it handled an event id (idempotency window)."""

DLQ_CHANNEL = "tusk_dlq"
"""Pub/sub channel announcing dead-lettered events when the config names no ``dlq_channel``."""

# --- bus -------------------------------------------------------------------------------

BUS_CHANNEL = "tusk_events"
"""Pub/sub channel of broadcast delivery when the config names no ``event_channel`` (the docs')."""

BUS_STREAM_PREFIX = "tusk:stream:"
"""Key prefix of the per-event-type streams of durable delivery: ``tusk:stream:<type>``."""

BUS_STREAM_FIELD = b"event"
"""The one field of a stream entry; it holds the JSON envelope."""

BUS_DEFAULT_GROUP = "default"
"""Consumer group of durable subscribers that name none: they then share the work."""

BUS_MAXLEN = 100_000
"""Entries a stream keeps (trimmed approximately at each XADD); older ones are dropped."""

BUS_BATCH = 100
"""Entries read (XREADGROUP COUNT) and then acknowledged (one XACK) per round trip."""

BUS_BLOCK_MS = 1_000
"""How long one read waits on the server for new events; stop() interrupts it at once."""

BUS_VISIBILITY_TIMEOUT_MS = 30_000
"""How long a delivered, unacknowledged entry waits before another consumer may claim it."""

BUS_CLAIM_INTERVAL_MAX_S = 5.0
"""Longest pause between two claim passes (otherwise a quarter of the visibility timeout)."""

BUS_DISCOVER_INTERVAL_S = 1.0
"""How often a durable subscriber to all types looks for streams of new types (SCAN)."""

BUS_PUBLISH_CHUNK = 1_000
"""Events sent per round trip by ``publish_many``: bounds the memory of one pipeline."""

BUS_PUBLISH_RETRIES = 3
"""Further attempts after a publish fails to reach the server, before BusError."""

BUS_RETRY_BACKOFF_S = 0.05
"""Delay before the first retry (publish or reconnect); each further one doubles it."""

BUS_RETRY_BACKOFF_MAX_S = 2.0
"""Cap of one retry or reconnect delay."""

BUS_SOCKET_TIMEOUT_S = 5.0
"""Longest wait for one reply from Redis (blocking reads get their block time on top)."""

BUS_CONNECT_TIMEOUT_S = 2.0
"""Longest wait to open a connection to Redis."""

BUS_HEALTH_CHECK_INTERVAL_S = 30
"""A connection idle for longer is PINGed before use, so a dead one is replaced, not used."""

BUS_MAX_CONNECTIONS = 100
"""Connections one bus may open for publishing (each subscriber has one of its own)."""

BUS_READY_TIMEOUT_S = 5.0
"""How long ``Subscription.start()`` waits for the subscription to be in place."""

BUS_STOP_TIMEOUT_S = 10.0
"""How long ``Subscription.stop()`` waits for in-flight handlers before giving up."""

BUS_BROADCAST_POLL_S = 0.05
"""How often an idle broadcast listener checks whether it was asked to stop."""

BUS_MEMORY_DEFAULT_NAME = "default"
"""The embedded server that ``memory://`` (no name) refers to."""

BUS_MEMORY_REDIS_VERSION = (7, 0)
"""The Redis version the embedded server imitates (reply shapes of XAUTOCLAIM, XINFO...)."""
