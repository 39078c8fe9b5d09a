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

SANDBOX_MAX_ITERATOR_NESTING = 2_000
"""How deeply a fujsen may nest ``map``/``filter``/``zip``/``enumerate`` over one another: C
walks such a chain recursively and a very deep one overflows the stack (a segfault)."""

SANDBOX_MAX_ITEMS = 10_000_000
"""Largest range / list repetition a fujsen may build in one C-level step."""

SANDBOX_MAX_STR = 1 << 26
"""Largest str/bytes (64 Mi characters) a fujsen may build in one C-level step."""

SANDBOX_MAX_INT_BITS = 1 << 20
"""Largest integer (about 315,000 digits) a product, power or shift may produce."""

SANDBOX_MAX_POWMOD_BITS = 8192
"""Largest exponent or modulus of a three-argument pow() (enough for RSA-size arithmetic)."""

SANDBOX_MAX_DIV_WORK = 1 << 36
"""Largest bits(dividend) x bits(divisor) of an integer //, % or divmod (quadratic in C, ~0.3 s)."""

SANDBOX_MAX_ISQRT_BITS = 1 << 18
"""Largest argument of math.isqrt (it divides repeatedly in C)."""

SANDBOX_MAX_SCAN = 1 << 30
"""Largest character comparisons one count() may make in C (items x length of what is counted)."""

SANDBOX_MAX_RANGE_BITS = 62
"""Largest bound of range(): its elements stay machine-sized, so products of them stay small."""

SANDBOX_MAX_NESTING = 10_000
"""Deepest nesting of tuples hash() walks before refusing (C recursion has no limit there)."""

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
"""Durable services: how long the events of a consumer that stopped making progress (died,
disconnected) wait before another consumer claims them. A live consumer renews its claims,
so this bounds neither handler nor batch time."""

SERVICE_BATCH = 100
"""Durable services: most events read and deduplicated per round trip (fewer for slow handlers)."""

DEDUP_PREFIX = "tusk:dedup:"
"""Key prefix of the records of handled event ids: ``tusk:dedup:<group>:<event id>``."""

DEDUP_TTL_S = 7 * 24 * 3600
"""How long a service remembers that it handled an event id (idempotency window)."""

REDELIVER_SINCE_S = 24 * 3600.0
"""Look-back of the re-delivery from the store after the bus lost its data: stored events
older than this are not handled again (config ``redeliver_since``: seconds or "15m", "24h")."""

TRACKING_BATCH = 1000
"""Tracking rows of handlings that changed nothing in the store, written in one transaction
(each write costs the handling thread a wake-up and its share of the GIL: fewer, larger ones)."""

TRACKING_FLUSH_S = 0.2
"""...or sooner, once the oldest of them waited this long (also at each relay pass and stop)."""

TRACKING_IDLE_S = 2.0
"""The thread writing those rows ends after this long without any (started again on the next)."""

RELAY_INTERVAL_S = 1.0
"""How often a running runtime's relay publishes unconfirmed outbox rows and checks the bus."""

RELAY_GRACE_S = 2.0
"""Outbox rows younger than this are left to the publisher that wrote them (it is sending)."""

RELAY_LEASE_S = 5.0
"""How long one runtime's relay owns the outbox; renewed each pass, taken over when expired."""

RELAY_BATCH = 500
"""Outbox rows published, or stored events re-delivered, per store read."""

RELAY_CONFIRM_BATCH = 256
"""Confirmed outbox rows deleted in one statement (sooner when RELAY_GRACE_S / 4 passed)."""

BUS_EPOCH_KEY = "tusk:bus_epoch"
"""Redis key holding a random id written once: when it is gone, the bus lost its data."""

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
"""Most entries read per round trip (XREADGROUP COUNT); fewer while handlers are slow."""

BUS_BLOCK_MS = 1_000
"""How long one read waits on the server for new events; stop() interrupts it at once."""

BUS_VISIBILITY_TIMEOUT_MS = 30_000
"""How long an entry whose consumer stopped renewing its claim waits before another may claim it."""

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

BUS_READ_AHEAD_S = 0.25
"""Durable reads fetch about this much work: COUNT is ``batch`` for fast handlers and shrinks
to 1 for slow ones, so a stop or a crash leaves little read but not yet started."""

BUS_HEARTBEAT_FRACTION = 3
"""In-flight entries have their claim renewed every ``visibility_timeout / this``."""

BUS_ACK_FLUSH_S = 0.05
"""Without attempt counting, finished entries wait at most this long (plus one handler) for their ack."""

BUS_UNREACHABLE_GIVE_UP_S = 10.0
"""``run_until_idle``: how long a durable reader keeps reconnecting before it raises BusError."""

ATTEMPT_PREFIX = "tusk:attempt:"
"""Key prefix of started-attempt counters: ``tusk:attempt:<group>:<event id>`` (deleted with the ack)."""

RUN_GRACE_S = 10.0
"""``run``: after the first SIGINT/SIGTERM, how long in-flight handlers may finish before they are
abandoned unacknowledged (``--grace``)."""

RUNTIME_CONSUMER_RESTARTS = 5
"""A worker restarts a consumer thread that died at most this often per ``RUNTIME_RESTART_WINDOW_S``
before it gives up and exits non-zero."""

RUNTIME_RESTART_WINDOW_S = 60.0
"""The window over which consumer (and worker process) restarts are counted."""

SUPERVISOR_RESTARTS = 5
"""``--processes``: worker deaths tolerated per ``RUNTIME_RESTART_WINDOW_S`` before the supervisor gives up."""

SUPERVISOR_BACKOFF_S = 0.5
"""Delay before restarting a dead worker; doubles with each restart in the window."""

SUPERVISOR_BACKOFF_MAX_S = 10.0
"""Cap of the delay before restarting a dead worker."""

BUS_MEMORY_DEFAULT_NAME = "default"
"""The embedded server that ``memory://`` (no name) refers to."""

BUS_MEMORY_REDIS_VERSION = (7, 0)
"""The Redis version the embedded server imitates (reply shapes of XAUTOCLAIM, XINFO...)."""

BUS_BROKER_CALL_TIMEOUT_S = 30.0
"""How long a broker bus waits for one call on its client's loop thread (publish, ack, info)."""

BUS_NATS_STREAM = "TUSK"
"""The JetStream stream of a ``nats://`` bus whose URL names none (``nats://host:4222/<stream>``)."""

BUS_NATS_PUBLISH_WINDOW = 2_000
"""JetStream publishes awaiting their acknowledgement at once (``publish_many``)."""

BUS_AMQP_NAMESPACE = "tusk"
"""Prefix of the exchanges and queues of an ``amqp://`` bus (``?namespace=`` in the URL changes it)."""

BUS_AMQP_QUEUE_TYPE = "quorum"
"""The queue type of durable (type, group) queues on RabbitMQ: replicated, with delivery counts."""

# --- observability -------------------------------------------------------------------------

METRICS_ADDR = "0.0.0.0"
"""Where ``--metrics-port`` listens: every interface, so a Prometheus on another host can scrape."""

METRICS_HANDLING_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
"""Histogram buckets (seconds) of one handler attempt: fujsen take 0.1-10 ms, their budget is 1 s."""

METRICS_END_TO_END_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
)
"""Histogram buckets (seconds) from an event's timestamp to its handler returning: queueing,
retries and their backoff included, so the tail reaches minutes."""

METRICS_SUPERVISOR_ENV_VAR = "TUSK_METRICS_SUPERVISOR"
"""Set by ``run --processes N --metrics-port P`` for its workers: count into the shared
multiprocess directory and serve nothing (the supervisor serves the sums)."""

# --- store -----------------------------------------------------------------------------------

STORE_REPLAY_BATCH = 1000
"""Rows per round trip of a replay: enough to amortise the query, few enough to stay small."""

FUJSEN_SQL_MAX_ROWS = 100_000
"""Rows one fujsen ``query()`` may return; a larger result is refused, not loaded into memory."""

FUJSEN_SQL_TIMEOUT_S = 5.0
"""Longest run of one fujsen SQL statement (SQLite progress handler, PostgreSQL statement_timeout)."""

FUJSEN_SQL_MAX_LENGTH = 16 * 1024 * 1024
"""Largest string or blob, in bytes, on the fujsen SQLite connection (SQLITE_LIMIT_LENGTH)."""

SQLITE_BUSY_TIMEOUT_S = 30.0
"""How long a SQLite write waits for another process's write lock before it fails."""

SQLITE_SYNCHRONOUS = "FULL"
"""SQLite fsync policy: FULL keeps committed events through a power cut (``?synchronous=normal``
in the URL trades that for speed)."""

POSTGRES_POOL_MIN_SIZE = 1
"""Connections the PostgreSQL store keeps open while idle."""

POSTGRES_POOL_MAX_SIZE = 10
"""Most connections the PostgreSQL store opens; a running replay holds one."""

POSTGRES_FUJSEN_POOL_MAX_SIZE = 4
"""Most connections for fujsen SQL: a pool of its own, so fujsen cannot starve the store."""

POSTGRES_UNIT_POOL_MAX_SIZE = 16
"""Most connections held by handlings in progress (one per handler running SQL or committing):
a pool of their own, so long handlers cannot starve the store."""

POSTGRES_POOL_TIMEOUT_S = 30.0
"""How long a call waits for a free pooled connection before it fails."""

POSTGRES_CONNECT_TIMEOUT_S = 10
"""libpq ``connect_timeout`` when the store URL sets none."""

POSTGRES_DEAD_PEER_S = 10
"""How soon either end of a store connection gives up on a peer that stopped answering (a
host cut off): TCP keepalives probe after half of it, and unacknowledged data waits no longer
(``tcp_user_timeout``). The server then rolls back that host's transactions, releasing the
write lock every writer waits on; the host's own calls fail instead of hanging for hours."""

POSTGRES_RECONNECT_WINDOW_S = 10.0
"""A pool retries a connection that failed with doubling delays (1, 2, 4 s...) for this long,
then gives up that round; the next request starts over at once. So a store that comes back
(a link restored, a restart) is used again within seconds, not after a minutes-long backoff."""

POSTGRES_APPEND_CHUNK = 2000
"""Events per INSERT statement inside one ``append_many`` transaction."""

# --- contracts ---------------------------------------------------------------------------

CONTRACTS_SECTION = "contracts"
"""The section that declares event contracts; its blocks are schemas, not settings."""

CONTRACT_UNKNOWN_EVENTS = "allow"
"""What happens to an event type without a contract when ``unknown_events`` is not set."""

SCHEMA_VERSION_KEY = "schema_version"
"""Metadata key of the contract version an event's payload follows (stamped on publish)."""

CONTRACT_DEFAULT_DRAFT = "http://json-schema.org/draft-07/schema#"
"""JSON Schema draft of a contract without ``$schema``: the one AsyncAPI 3.0 payloads use."""

CONTRACT_VALUE_SHOWN = 80
"""Longest rendering of a payload value in a contract error message (characters)."""

CONTRACT_REF_DEPTH = 32
"""How deep the compatibility check follows ``$ref`` and nesting before it stops."""

CONSOLE_HOST = "127.0.0.1"
"""Where ``tusk-events ui`` listens by default: this machine only; another address needs a token."""

CONSOLE_PORT = 8765
"""The console's default port."""

CONSOLE_TOKEN_ENV = "TUSK_UI_TOKEN"
"""Environment variable holding the console's access token (``--token`` overrides it)."""

CONSOLE_PAGE = 50
"""Events or dead letters per console page: a page costs the same however much is stored."""

CONSOLE_PAGE_MAX = 500
"""Largest page a client may ask the console for."""

CONSOLE_MAX_BODY = 1 << 20
"""Largest request body the console reads (ids of a selection to redrive or purge)."""

ASYNCAPI_VERSION = "3.0.0"
"""The AsyncAPI specification version of ``tusk-events docs`` documents."""

ASYNCAPI_DEFAULT_API_VERSION = "1.0.0"
"""``info.version`` of a document whose ``[contracts]`` names no ``api_version``."""

# --- isolation ---------------------------------------------------------------------------

ISOLATION_DEFAULT = "inline"
"""Where fujsen run when neither the config (``isolation``) nor the caller says: this process."""

ISOLATION_WORKERS = 2
"""Worker processes of a pool (``isolation_workers``); calls beyond that wait for a free one."""

ISOLATION_MAX_WORKERS = 64
"""Largest ``isolation_workers`` a config may ask for."""

ISOLATION_MEMORY_LIMIT = 1 << 30
"""Address space a worker may add to its size at start (RLIMIT_AS; ``isolation_memory_mb``)."""

ISOLATION_RECYCLE_RSS = 256 << 20
"""Growth of a worker's peak resident memory after which it is replaced (or half its limit)."""

ISOLATION_CPU_LIMIT_S = 600
"""RLIMIT_CPU of a worker: a lifetime backstop; it retires at 90 % (budgets are wall-clock)."""

ISOLATION_MAX_OPEN_FILES = 16
"""RLIMIT_NOFILE of a worker: its pipes, /dev/null and the odd file an import opens."""

ISOLATION_KILL_GRACE_S = 0.25
"""How long past its budget the parent waits for a call before it SIGKILLs the worker."""

ISOLATION_START_TIMEOUT_S = 10.0
"""How long a new worker may take to say hello (import, limits, network namespace)."""

ISOLATION_FOLLOW_S = 0.002
"""A call's worker runs on its caller's CPU until it has been silent this long, then on any: a
short call is a hand-over on one CPU instead of waking another (tens of µs when that CPU is
idle, e.g. in a VM)."""

ISOLATION_MAX_MESSAGE = 256 << 20
"""Largest frame on a worker's pipes: arguments, results and helper replies beyond are refused."""

ISOLATION_ENV_KEEP = ("PATH", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "TZ")
"""The only environment variables a worker inherits (secrets of the host stay with the host)."""

# --- operator output -----------------------------------------------------------------

PROGRESS_INTERVAL_S = 2.0
"""Seconds between two progress lines of ``run`` on a terminal (the line is rewritten in place)."""

PROGRESS_PLAIN_INTERVAL_S = 10.0
"""Seconds between two progress lines of ``run`` when stderr is a file or pipe (each is kept)."""

PROGRESS_BAR_WIDTH = 30
"""Characters of the bar of ``replay --to-bus`` and ``dlq redrive``."""

EXIT_DEAD_LETTERED = 3
"""``run``'s exit code when it ran to the end but dead-lettered at least one event."""

DEBUG_ENV_VAR = "TUSK_DEBUG"
"""Set to 1 to see Python tracebacks instead of one-line errors (as ``--debug`` does)."""

TSK_FILE_DEPTH = 8
"""How many ``@other.tsk.get(...)`` reads may chain (a cycle between .tsk files stops here)."""

EXPRESSION_DEPTH = 100
"""How deeply an operator expression may nest before it is refused (the reader is recursive)."""

# --- the testing kit (tusk_events.testing) ------------------------------------------------

TESTING_BUS_PREFIX = "memory://tusk-test-"
"""Name prefix of the private memory:// bus each test app gets (a random suffix follows)."""

TESTING_IDLE_SLICE_S = 0.1
"""How long one pass of a test app's run_until_idle may wait on entries that are not yet due
(left unacknowledged, so pending until their visibility timeout) before the app advances
the virtual clock to them and starts the next pass."""

TESTING_IDLE_TIMEOUT_S = 30.0
"""Real seconds a test app's run_until_idle may take before it fails, naming what is left."""

TESTING_BUS_ENV_VAR = "TUSK_TEST_BUS"
"""Buses (comma-separated URLs) the ``tusk_app`` fixture runs each test on, when no
``--tusk-bus`` option is given; memory:// when neither is."""

# --- trust ---------------------------------------------------------------------------------

TRUST_DEFAULT = "trusted"
"""How far a config is trusted when the operator does not say (``--untrusted`` says otherwise)."""

RUNTIME_KEY_PREFIX = "tusk:"
"""Redis keys the runtime owns (dead letters, dedup records, streams): refused to fujsen."""

UNTRUSTED_MAX_MESSAGE = 1 << 20
"""Largest frame on an untrusted config's worker pipes: a decoded frame can take ~30x its size
in the parent (one-byte empty lists), so this bounds one reply to tens of MiB and milliseconds."""

UNTRUSTED_MAX_GLOB_WILDCARDS = 4
"""Most ``*``, ``?`` and ``[`` in a Redis match pattern of an untrusted fujsen (no backtracking bombs)."""

UNTRUSTED_MAX_DICT_KEYS = 1000
"""Most non-text dict keys and set members in one message from an untrusted config's worker
(ints hash without a seed: colliding ones cost quadratic time to insert)."""

FUJSEN_SQL_MAX_BYTES = 8 << 20
"""Bytes of row data one fujsen ``query()`` may return; counted while rows are fetched."""

FUJSEN_SQL_FETCH_BATCH = 256
"""Rows fetched per round trip of a fujsen ``query()``, so the byte cap stops a large result early."""

BUS_CLUSTER_TAG = "{tusk}:"
"""Put before every bus key (streams, handled-event records, attempt counters) on a Redis
Cluster: one hash tag, so the keys one round trip or one MULTI touches live in one slot."""

BUS_CLUSTER_PROBE_TIMEOUT_S = 1.0
"""How long opening a ``redis://`` bus waits for ``INFO cluster`` to learn whether the node is
part of a Redis Cluster; a node that does not answer in time is taken as a single server."""

BUS_KAFKA_PREFIX = "tusk"
"""Topic prefix of a ``kafka://`` bus whose URL names none (``kafka://host:9092/<prefix>``)."""

BUS_KAFKA_PARTITIONS = 3
"""Partitions of a topic the ``kafka://`` bus creates (``?partitions=`` in the URL changes it)."""

BUS_KAFKA_SESSION_TIMEOUT_MS = 10_000
"""A consumer group member's session (``?session_timeout_ms=``): how long a member that stopped
heartbeating (killed) keeps its partitions. tansu also holds a group's JoinGroup for half of it
while members gather, so it is the first-record delay of a new subscription there."""

BUS_KAFKA_POLL_SLICE_S = 0.1
"""Longest single blocking poll of a Kafka consumer, so ``stop()`` is heard promptly."""
