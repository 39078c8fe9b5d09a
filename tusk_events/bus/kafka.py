"""The Kafka bus, ``kafka://host:9092[,host2:9092]/<prefix>``: consumer groups for ``durable``, a topic for ``broadcast``.

Mapping (``<prefix>`` defaults to ``tusk``)::

    <prefix>.<stream_prefix>.<type>   one topic per event type (``stream_prefix`` defaults to ``ev``;
                                      characters Kafka does not allow are escaped as ``-<hex>-``),
                                      ``partitions`` partitions (``?partitions=3``), records keyed
                                      by the payload field named by ``?key=`` (ordering per key),
                                      ``?key=id`` by event id (spread evenly, no order), else by
                                      type (one partition per type: the order other buses keep)
    consumer group ``<prefix>.<group>`` one per service; offsets are committed only after the
                                      handler (and its dedup record) is done, and only up to
                                      the first record not acknowledged yet (sent without
                                      waiting per batch, confirmed before ``pending()``, close
                                      and a rebalance)
    <prefix>.<channel>                broadcast: every listener reads it from its end, with no group

``?session_timeout_ms=`` sets the members' session (how long a killed member keeps its
partitions; tansu also holds a group join for half of it).

Why a topic per type rather than one topic with the type in a header: a group subscribing
to some types reads only those records, and lag is per type as in the other backends.

Kafka has no per-record acknowledgement or redelivery, so the reader keeps the records a
handler failed on and hands them back once the visibility timeout has passed, counting
deliveries itself; the highest offset handed out per (group, partition) is kept in the bus's
state client, so a record another member took over after a crash counts as a redelivery
(count 2; further counts are per member). Records a consumer fetched but did not commit go back to the
group when its partitions move (a worker joining or leaving, or one that died): at least
once, as everywhere. Kafka does not tell delivered from undelivered, so ``stream_info``
reports a group's uncommitted records as both ``pending`` and ``lag``.

The client, ``confluent-kafka`` (``pip install 'tusk_events[kafka]'``), is not asyncio:
its calls run in worker threads awaited from the bus's loop; each consumer polls in short
slices so ``stop()`` is heard at once. ``maxlen`` is not applied: Kafka keeps records by
time or size (``retention.ms``/``retention.bytes`` on the broker).
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import confluent_kafka
from confluent_kafka import (
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

from tusk_events.bus.base import GroupInfo, StreamInfo
from tusk_events.bus.broker import (
    BrokerBroadcast,
    BrokerBus,
    BrokerDurable,
    Message,
    Reader,
    open_state_client,
    split_state,
)
from tusk_events.defaults import (
    BUS_BROKER_CALL_TIMEOUT_S,
    BUS_KAFKA_PARTITIONS,
    BUS_KAFKA_POLL_SLICE_S,
    BUS_KAFKA_PREFIX,
    BUS_KAFKA_SESSION_TIMEOUT_MS,
)
from tusk_events.errors import BusError
from tusk_events.events import Event

log = logging.getLogger(__name__)

TRANSIENT: tuple[type[BaseException], ...] = (OSError, KafkaException)
"""Client errors after which the same call may succeed once the broker is back."""

_TIMEOUT_S = 10.0
_MIN_POLL_S = 0.02
_GROUPS_KEY = "tusk:kafka:groups:"
_COUNT_KEY = "tusk:kafka:delivered:"
_SAFE = re.compile(r"[A-Za-z0-9._]")
_ESCAPED = re.compile(r"-([0-9a-f]+)-")
_RETRY_PUBLISH = {KafkaError._MSG_TIMED_OUT, KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN,
                  KafkaError.UNKNOWN_TOPIC_OR_PART}
"""Publish errors librdkafka does not call retriable that a broker coming back cures."""


def open_client(url: str) -> Any:
    """The side-state client (dedup records, DLQ, delivery counts): see :mod:`tusk_events.bus.broker`."""
    return open_state_client(url)


def open_bus(url: str, **options: Any) -> KafkaBus:
    for k in ("socket_timeout", "socket_connect_timeout", "health_check_interval", "max_connections", "parser"):
        options.pop(k, None)
    return KafkaBus(url, **options)


def topic_token(text: str) -> str:
    """``text`` in Kafka's topic alphabet, reversibly (``-`` and anything outside it as ``-<hex>-``)."""
    return "".join(c if _SAFE.fullmatch(c) else f"-{ord(c):x}-" for c in text)


def untoken(token: str) -> str:
    return _ESCAPED.sub(lambda m: chr(int(m.group(1), 16)), token)


def parse_url(url: str) -> tuple[str, str, dict[str, str]]:
    """``kafka://h1:9092,h2:9092/P?partitions=3`` -> ("h1:9092,h2:9092", "P", {"partitions": "3"})."""
    plain, _ = split_state(url)
    parts = urlsplit(plain)
    if parts.scheme != "kafka":
        raise BusError(f"not a Kafka URL: {plain!r} (expected kafka://host:9092/<prefix>)")
    if not parts.netloc:
        raise BusError(f"invalid Kafka URL {plain!r}: no host")
    prefix = parts.path.strip("/") or BUS_KAFKA_PREFIX
    if not re.fullmatch(r"[A-Za-z0-9._-]+", prefix):
        raise BusError(f"invalid Kafka topic prefix {prefix!r} in {plain!r}: letters, digits, '.', '_', '-' only")
    return parts.netloc, prefix, dict(parse_qsl(parts.query))


def _check(err: Any) -> None:
    if err is not None:
        raise KafkaException(err)


class KafkaBus(BrokerBus):
    """A bus on a Kafka (protocol) broker."""

    scheme_name = "kafka"
    transient = TRANSIENT

    def __init__(
        self,
        url: str,
        *,
        stream_prefix: str | None = None,
        maxlen: int | None = None,
        approximate: bool = True,
        discover_interval_s: float | None = None,
        **options: Any,
    ) -> None:
        super().__init__(url, **options)
        self.servers, self.prefix, query = parse_url(url)
        try:
            self.partitions = int(query.get("partitions", BUS_KAFKA_PARTITIONS))
        except ValueError:
            raise BusError(f"partitions must be a number in {self.shown_url}") from None
        if self.partitions < 1:
            raise BusError(f"partitions must be at least 1 in {self.shown_url}")
        try:
            self.session_timeout_ms = int(query.get("session_timeout_ms", BUS_KAFKA_SESSION_TIMEOUT_MS))
        except ValueError:
            raise BusError(f"session_timeout_ms must be a number in {self.shown_url}") from None
        if self.session_timeout_ms < 1000:
            raise BusError(f"session_timeout_ms must be at least 1000 in {self.shown_url}")
        self.key_field = query.get("key") or None
        self.root = f"{self.prefix}.{topic_token((stream_prefix or 'ev').strip(':.'))}"
        self.broadcast_topic = f"{self.prefix}.{topic_token(self.channel)}"
        self.discover_interval_s = discover_interval_s
        self._producer: Any = None
        self._admin: Any = None
        self._known: set[str] = set()
        self._probe: Any = None
        self._probe_lock = threading.Lock()
        self._true_ends: dict[tuple[str, int], tuple[int, int]] = {}
        """(end the broker reported, end read from the last record) per partition: a new batch
        changes the reported end, so while it stays the same the end read before still holds."""

    # --- connection -----------------------------------------------------------------

    def base_config(self) -> dict[str, Any]:
        return {"bootstrap.servers": self.servers, "socket.connection.setup.timeout.ms": 3000}

    def consumer_config(self, group: str) -> dict[str, Any]:
        return {**self.base_config(), "group.id": group, "enable.auto.commit": False, "fetch.wait.max.ms": 20}

    def admin(self) -> Any:
        if self._admin is None:
            self._admin = AdminClient(self.base_config())
        return self._admin

    def producer(self) -> Any:
        if self._producer is None:
            self._producer = Producer({
                **self.base_config(), "linger.ms": 1, "acks": "all", "enable.idempotence": True,
                "message.timeout.ms": int(_TIMEOUT_S * 1000),
            })
        return self._producer

    def group_id(self, group: str | None) -> str:
        """The Kafka consumer group of a bus group: under the prefix, as its topics are, so buses
        with different prefixes on one cluster never share (or stall) a group of the same name."""
        return f"{self.prefix}.{group or ''}"

    def topic(self, type: str) -> str:
        return f"{self.root}.{topic_token(type)}"

    def type_of(self, topic: str) -> str:
        return untoken(topic[len(self.root) + 1 :])

    def ensure_topics(self, topics: Sequence[str]) -> None:
        """Create the topics not known to exist yet (blocking; run in a worker thread)."""
        missing = [t for t in topics if t not in self._known]
        if not missing:
            return
        existing = set(self.admin().list_topics(timeout=_TIMEOUT_S).topics)
        new = [t for t in missing if t not in existing]
        if new:
            futures = self.admin().create_topics(  # broadcast keeps one partition: one order for all listeners
                [NewTopic(t, 1 if t == self.broadcast_topic else self.partitions, 1) for t in new]
            )
            for t, fut in futures.items():
                try:
                    fut.result(_TIMEOUT_S)
                except KafkaException as exc:
                    if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                        raise
                    log.debug("topic %s created meanwhile: %s", t, exc)
        self._known.update(missing)

    def committed(self, group: str | None, parts: Sequence[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """The committed offset of ``group`` per (topic, partition), -1 where it has none (blocking).

        Asked through the admin client: a member's own ``committed()`` waits until a group join
        in progress is done (seconds on tansu), the admin's OffsetFetch does not."""
        if not parts:
            return {}
        req = ConsumerGroupTopicPartitions(self.group_id(group), [TopicPartition(t, p) for t, p in parts])
        (fut,) = self.admin().list_consumer_group_offsets([req]).values()
        out = {(t, p): -1 for t, p in parts}
        for tp in fut.result(_TIMEOUT_S).topic_partitions or ():
            out[(tp.topic, tp.partition)] = tp.offset if tp.offset >= 0 else -1
        return out

    def ends(self, topics: Sequence[str]) -> dict[tuple[str, int], tuple[int, int]]:
        """(low, end) offsets per partition of ``topics`` (blocking; worker thread).

        The end is read from the last record rather than trusted from ListOffsets: tansu
        0.6 answers the base offset of the last batch + 1 there, short of its later records."""
        with self._probe_lock:
            if self._probe is None:
                self._probe = Consumer(self.consumer_config("tusk-probe"))
            probe = self._probe
            md = probe.list_topics(timeout=_TIMEOUT_S).topics
            out: dict[tuple[str, int], tuple[int, int]] = {}
            tail: list[Any] = []
            for topic in topics:
                for p in (md[topic].partitions if topic in md else ()):
                    low, high = probe.get_watermark_offsets(TopicPartition(topic, p), timeout=_TIMEOUT_S)
                    known = self._true_ends.get((topic, p))
                    if known is not None and known[0] == high:  # no batch since: the end read before holds
                        out[(topic, p)] = (low, max(high, known[1]))
                        continue
                    out[(topic, p)] = (low, high)
                    if high > low:
                        tail.append(TopicPartition(topic, p, high - 1))
            if tail:
                probe.assign(tail)
                waiting = {(tp.topic, tp.partition) for tp in tail}
                until = time.monotonic() + _TIMEOUT_S
                while waiting and time.monotonic() < until:
                    for m in probe.consume(1000, 0.2):
                        if m.error() is None:
                            key = (m.topic(), m.partition())
                            low, high = out[key]
                            out[key] = (low, max(high, m.offset() + 1))
                            waiting.discard(key)
                probe.unassign()
                for tp in tail:
                    self._true_ends[(tp.topic, tp.partition)] = (tp.offset + 1, out[(tp.topic, tp.partition)][1])
            return out

    async def _disconnect(self) -> None:
        if self._probe is not None:
            await asyncio.to_thread(self._probe.close)
        if self._producer is not None:
            await asyncio.to_thread(self._producer.flush, 5)

    # --- publishing -----------------------------------------------------------------

    def _key(self, event: Event) -> bytes:
        if self.key_field == "id":
            return event.id.encode()
        if self.key_field and isinstance(event.payload, dict) and self.key_field in event.payload:
            return str(event.payload[self.key_field]).encode()
        return event.type.encode()

    def _produce(self, items: list[tuple[Event, bytes]]) -> None:
        topics = [self.topic(e.type) for e, _ in items] if self.to_durable else []
        self.ensure_topics(sorted(set(topics) | ({self.broadcast_topic} if self.to_broadcast else set())))
        p = self.producer()
        errors: list[Any] = []

        def done(err: Any, _msg: Any) -> None:
            if err is not None:
                errors.append(err)

        for i, (event, data) in enumerate(items):
            headers = [("tusk-type", event.type.encode())]
            if self.to_durable:
                self._produce_one(p, topics[i], data, self._key(event), headers, done)
            if self.to_broadcast:
                self._produce_one(p, self.broadcast_topic, data, None, headers, done)
        left = p.flush(_TIMEOUT_S)
        if left:
            raise TimeoutError(f"{left} records not confirmed by the broker within {_TIMEOUT_S:g}s")
        if errors:
            err = errors[0]
            self._known.clear()  # a restarted broker may have lost a topic: look again next time
            if err.fatal():  # an idempotent producer that lost its sequence (a broker restart) is spent
                self._producer = None
                raise KafkaException(err)
            if err.retriable() or err.code() in _RETRY_PUBLISH:
                raise KafkaException(err)
            raise BusError(f"Kafka refused a publish on {self.shown_url}: {err.str()}")

    @staticmethod
    def _produce_one(p: Any, topic: str, data: bytes, key: bytes | None, headers: Any, done: Any) -> None:
        while True:
            try:
                p.produce(topic, data, key=key, headers=headers, on_delivery=done)
                return
            except BufferError:  # the local queue is full: let deliveries drain
                p.poll(0.05)

    async def _send(self, items: list[tuple[Event, bytes]]) -> None:
        await asyncio.to_thread(self._produce, items)

    # --- subscribing ----------------------------------------------------------------

    def _durable_reader(self, sub: BrokerDurable) -> Reader:
        return _KafkaReader(self, sub)

    async def _broadcast_listener(
        self, sub: BrokerBroadcast, push: Callable[[bytes], None]
    ) -> Callable[[], Awaitable[None]]:
        def open_() -> Any:
            self.ensure_topics([self.broadcast_topic])
            c = Consumer(self.consumer_config(f"tusk-broadcast-{uuid.uuid4().hex}"))
            meta = c.list_topics(self.broadcast_topic, timeout=_TIMEOUT_S).topics[self.broadcast_topic]
            tps = []
            for p in meta.partitions:  # from the end as it is now: nothing published after start() is missed
                _, high = c.get_watermark_offsets(TopicPartition(self.broadcast_topic, p), timeout=_TIMEOUT_S)
                tps.append(TopicPartition(self.broadcast_topic, p, high))
            c.assign(tps)
            return c

        consumer = await asyncio.to_thread(open_)
        stopping = False

        def poll() -> None:
            while not stopping:
                for m in consumer.consume(500, BUS_KAFKA_POLL_SLICE_S):
                    if m.error() is None:
                        push(m.value() or b"")

        task = asyncio.get_running_loop().run_in_executor(None, poll)

        async def stop() -> None:
            nonlocal stopping
            stopping = True
            await task
            await asyncio.to_thread(consumer.close)

        return stop

    def declare(self, sub: BrokerDurable) -> None:
        if sub.types is not None:
            pipe = self.state.pipeline(transaction=False)
            for t in sub.types:
                pipe.sadd(_GROUPS_KEY + self.topic(t), sub.group or "")
            pipe.execute()

    # --- introspection --------------------------------------------------------------

    def ping(self) -> float:
        def go() -> float:
            t0 = time.perf_counter()
            self.admin().list_topics(timeout=2)
            return time.perf_counter() - t0

        return self.call(lambda: asyncio.to_thread(go), "ping")

    def stream_info(self, types: Sequence[str] | None = None) -> dict[str, StreamInfo]:
        return self.call(lambda: asyncio.to_thread(self._stream_info, types), "read stream info")

    def _stream_info(self, types: Sequence[str] | None) -> dict[str, StreamInfo]:
        topics = self.admin().list_topics(timeout=_TIMEOUT_S).topics
        ours = {t: md for t, md in topics.items() if t.startswith(self.root + ".")}
        wanted = list(types) if types is not None else sorted(self.type_of(t) for t in ours)
        out: dict[str, StreamInfo] = {}
        ends = self.ends([self.topic(t) for t in wanted if self.topic(t) in ours])
        for t in wanted:
            topic = self.topic(t)
            md = ours.get(topic)
            if md is None:
                out[t] = StreamInfo(t, topic, 0, None, {})
                continue
            marks = {p: ends[(topic, p)] for p in md.partitions if (topic, p) in ends}
            length = sum(high - low for low, high in marks.values())
            last = max(((high, p) for p, (_, high) in marks.items() if high > 0), default=None)
            groups: dict[str, GroupInfo] = {}
            for g in sorted(m.decode() if isinstance(m, bytes) else m
                            for m in self.state.smembers(_GROUPS_KEY + topic)):
                lag = self._uncommitted(g, topic, marks)
                groups[g] = GroupInfo(name=g, consumers=1, pending=lag, lag=lag, last_delivered_id="")
            out[t] = StreamInfo(type=t, key=topic, length=length,
                                last_id=None if last is None else f"{last[1]}-{last[0] - 1}", groups=groups)
        return out

    def _uncommitted(self, group: str, topic: str, marks: dict[int, tuple[int, int]]) -> int:
        total = 0
        for (_, part), off in self.committed(group, [(topic, p) for p in marks]).items():
            low, high = marks[part]
            total += high - (off if off >= 0 else low)
        return total

    def partition_lag(self, group: str, types: Sequence[str]) -> dict[tuple[str, int], int]:
        """Uncommitted records of ``group`` per (type, partition): consumer lag for metrics."""

        def go() -> dict[tuple[str, int], int]:
            out: dict[tuple[str, int], int] = {}
            by_topic = {self.topic(t): t for t in types}
            ends = self.ends(list(by_topic))
            for (topic, part), off in self.committed(group, sorted(ends)).items():
                low, high = ends[(topic, part)]
                out[(by_topic[topic], part)] = high - (off if off >= 0 else low)
            return out

        return self.call(lambda: asyncio.to_thread(go), "read consumer lag")

    def delete_topics(self) -> None:
        """Delete this bus's topics (its prefix): for tests and teardown."""

        def go() -> None:
            topics = [t for t in self.admin().list_topics(timeout=_TIMEOUT_S).topics
                      if t.startswith(self.prefix + ".")]
            if topics:
                for fut in self.admin().delete_topics(topics).values():
                    try:
                        fut.result(_TIMEOUT_S)
                    except KafkaException as exc:
                        log.debug("delete topic: %s", exc)
            self._known.clear()

        self.call(lambda: asyncio.to_thread(go), "delete the topics")


class _KafkaReader(Reader):
    """One consumer-group member; keeps failed records for redelivery and commits contiguous prefixes."""

    def __init__(self, bus: KafkaBus, sub: BrokerDurable) -> None:
        self.bus = bus
        self.sub = sub
        self.consumer: Any = None
        self.topics = [bus.topic(t) for t in sub.types] if sub.types is not None else None
        self._count_key = _COUNT_KEY + (sub.group or "")
        self._fetched: dict[tuple[str, int], dict[int, bool]] = {}
        """Per partition, offsets fetched and not yet committed -> acknowledged?"""
        self._retry: dict[tuple[str, int, int], tuple[float, Message]] = {}
        """Records handed out and not acknowledged: (due again, message)."""
        self._start_marks: dict[tuple[str, int], int] = {}
        self._woken = False
        self._unsynced: dict[tuple[str, int], int] = {}
        """Offsets sent by an asynchronous commit and not confirmed by a synchronous one since."""
        self._handed: dict[str, int] = {}
        """Highest offset handed out per partition this member owns, as written to the state store."""
        self._types: dict[str, str] = {}
        self._acked = False
        """Records were acknowledged since the last commit was sent."""

    # --- blocking parts (worker thread) -----------------------------------------------

    def _open(self) -> None:
        bus, sub = self.bus, self.sub
        if self.topics is not None:
            bus.ensure_topics(self.topics)
        cfg = {
            **bus.consumer_config(bus.group_id(sub.group)), "client.id": sub.consumer,
            "auto.offset.reset": "earliest",
            # a member heartbeats a few times per session: a rebalance (a member joining or
            # leaving) is heard within one heartbeat, a dead member missed after one session
            "session.timeout.ms": bus.session_timeout_ms,
            "heartbeat.interval.ms": max(100, min(1000, bus.session_timeout_ms // 5)),
        }
        if bus.discover_interval_s is not None:
            cfg["topic.metadata.refresh.interval.ms"] = max(100, int(bus.discover_interval_s * 1000))
        c = Consumer(cfg)
        if sub.start_at == "latest" and self.topics is not None:
            self._start_marks = self._marks(c, self.topics)
        pattern = [f"^{re.escape(bus.root)}\\..*"]
        c.subscribe(self.topics if self.topics is not None else pattern,
                    on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_revoke)
        self.consumer = c

    def _marks(self, c: Any, topics: list[str]) -> dict[tuple[str, int], int]:
        return {k: end for k, (_, end) in self.bus.ends(topics).items()}

    def _on_assign(self, c: Any, tps: list[Any]) -> None:
        if self._start_marks:  # start="latest": a partition the group never committed starts where it was at subscribe
            committed = c.committed(tps, timeout=_TIMEOUT_S)
            for tp, cm in zip(tps, committed):
                mark = self._start_marks.get((tp.topic, tp.partition))
                if cm.offset < 0 and mark is not None:
                    tp.offset = mark
            c.assign(tps)

    def _on_revoke(self, c: Any, tps: list[Any]) -> None:
        try:
            self._commit()
        except KafkaException as exc:
            log.debug("commit on revoke: %s", exc)
        for tp in tps:
            self._fetched.pop((tp.topic, tp.partition), None)
            self._unsynced.pop((tp.topic, tp.partition), None)
            self._handed.pop(f"{tp.topic}/{tp.partition}", None)
            for k in [k for k in self._retry if k[:2] == (tp.topic, tp.partition)]:
                del self._retry[k]

    def _poll(self, n: int, wait_s: float) -> list[Any]:
        # even a "no wait" read gives the fetcher a moment: records already on their way fill
        # the batch, and an empty answer costs the caller a pending() round trip
        until = time.monotonic() + max(wait_s, _MIN_POLL_S)
        while True:
            left = until - time.monotonic()
            msgs = self.consumer.consume(n, max(0.0, min(left, BUS_KAFKA_POLL_SLICE_S)))
            if msgs or left <= 0 or self._woken or self._due(until):
                return list(msgs)

    def _due(self, until: float) -> bool:
        now = time.monotonic()
        return any(due <= now for due, _ in self._retry.values())

    def _commit(self, consumer: Any = None, *, asynchronous: bool = False) -> None:
        """Commit, per partition, up to the first record not acknowledged yet.

        After each batch the commit is sent without waiting (``asynchronous``): the offsets
        still follow the handlers, and one that is lost on the way is covered by the next
        commit, or resent and awaited here before ``pending()`` answers, before the member
        closes and before its partitions move (a lost one otherwise means redelivery, never loss)."""
        consumer = consumer or self.consumer
        offsets = []
        for (topic, part), seen in self._fetched.items():
            upto = None
            for off in sorted(seen):
                if not seen[off]:
                    break
                upto = off
            if upto is not None:
                offsets.append(TopicPartition(topic, part, upto + 1))
        if consumer is None:
            return
        if asynchronous:
            if offsets:
                consumer.commit(offsets=offsets, asynchronous=True)
                for tp in offsets:
                    self._unsynced[(tp.topic, tp.partition)] = tp.offset
        else:
            offsets += [TopicPartition(t, p, o) for (t, p), o in self._unsynced.items()
                        if not any(tp.topic == t and tp.partition == p for tp in offsets)]
            if not offsets:
                return
            consumer.commit(offsets=offsets, asynchronous=False)
            self._unsynced.clear()
        for tp in offsets:  # forgotten once sent: a failed synchronous commit is tried again
            seen = self._fetched.get((tp.topic, tp.partition), {})
            for off in [o for o in seen if o < tp.offset]:
                del seen[off]

    # --- Reader -------------------------------------------------------------------------

    async def setup(self) -> None:
        if self.consumer is None:
            await asyncio.to_thread(self._open)

    async def fetch(self, n: int, wait_s: float) -> list[Message]:
        self._woken = False
        out = self._due_again(n)
        if not out:  # one trip to a worker thread: poll, turn records into messages, count them
            out = await asyncio.to_thread(self._take, n, wait_s)
            out += self._due_again(n - len(out))
        if out:
            due = time.monotonic() + self.sub.visibility_timeout_ms / 1000
            retry = self._retry
            for m in out:
                retry[m.handle] = (due, m)
        return out

    def _due_again(self, n: int) -> list[Message]:
        """Records a handler failed on whose visibility timeout has passed, counted once more."""
        if not self._retry or n <= 0:
            return []
        now = time.monotonic()
        out = [m for due, m in self._retry.values() if due <= now][:n]
        for m in out:
            m.count += 1
        return out

    def _take(self, n: int, wait_s: float) -> list[Message]:
        if self._acked:
            self._acked = False
            self._commit(asynchronous=True)
        out: list[Message] = []
        fetched = self._fetched
        types = self._types
        for m in self._poll(n, wait_s):
            err = m.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    continue
                if err.fatal() or not err.retriable():
                    log.warning("%s: %s", self.bus.shown_url, err.str())
                    continue
                raise KafkaException(err)
            topic, part, off = m.topic(), m.partition(), m.offset()
            key = (topic, part, off)
            if key in self._retry:  # handed out already (still held): not a new delivery
                continue
            seen = fetched.get((topic, part))
            if seen is None:
                seen = fetched[(topic, part)] = {}
            seen[off] = False
            t = types.get(topic)
            if t is None:
                t = types[topic] = self.bus.type_of(topic)
            out.append(Message(m.value() or b"", 1, f"{part}-{off}", t, key))
        if out:
            self._count(out)
        return out

    def _count(self, msgs: list[Message]) -> None:
        """A record at or below the highest offset of its partition handed out before (by any
        member) is a redelivery: a member died or left holding it. The mark is read from the
        state store once per partition after it is assigned, and written once per batch."""
        tops: dict[str, int] = {}
        for m in msgs:
            field = f"{m.handle[0]}/{m.handle[1]}"
            if m.handle[2] > tops.get(field, -1):
                tops[field] = m.handle[2]
        marks = self._handed
        unknown = [f for f in tops if f not in marks]
        if unknown:
            for f, v in zip(unknown, self.bus.state.hmget(self._count_key, unknown)):
                marks[f] = -1 if v is None else int(v)
        for m in msgs:
            if m.handle[2] <= marks[f"{m.handle[0]}/{m.handle[1]}"]:
                m.count = 2
        raised = {f: top for f, top in tops.items() if top > marks[f]}
        if raised:
            self.bus.state.hset(self._count_key, mapping=raised)
            marks.update(raised)

    async def ack(self, handles: list[Any]) -> None:
        if not handles:
            return
        for h in handles:
            self._retry.pop(h, None)
            seen = self._fetched.get(h[:2])
            if seen is not None and h[2] in seen:
                seen[h[2]] = True
        self._acked = True  # committed (without waiting) by the next fetch: no thread trip of its own

    async def pending(self) -> int:
        def go() -> int:
            self._commit()  # what was sent without waiting is confirmed before it is counted
            c = self.consumer
            topics = self.topics
            if topics is None:
                topics = [t for t in c.list_topics(timeout=_TIMEOUT_S).topics if t.startswith(self.bus.root + ".")]
            ends = self.bus.ends(topics)
            marks = {k: end for k, (_, end) in ends.items()}
            if not marks:
                return 0
            total = 0
            for key, off in self.bus.committed(self.sub.group, sorted(marks)).items():
                high = marks[key]
                start = self._start_marks.get(key)
                if off >= 0:
                    total += high - off
                elif start is not None:
                    total += high - start
                else:
                    total += high - ends[key][0]
            return total

        return await asyncio.to_thread(go)

    def wake(self) -> None:
        self._woken = True

    async def close(self) -> None:
        c, self.consumer = self.consumer, None
        if c is not None:
            owned = bool(self._fetched) or bool(await asyncio.to_thread(c.assignment))
            try:
                await asyncio.wait_for(asyncio.to_thread(self._commit, c), BUS_BROKER_CALL_TIMEOUT_S)
            finally:
                # leaving the group can wait for a join still in progress: stop() does not wait for it
                closing = asyncio.ensure_future(asyncio.to_thread(c.close))
                try:  # a member that holds no partitions yet has nothing to hand on: no wait
                    await asyncio.wait_for(asyncio.shield(closing), 0.5 if owned else 0.01)
                except TimeoutError:
                    log.debug("%s: consumer still leaving its group", self.bus.shown_url)
        self._fetched.clear()
        self._retry.clear()
        self._unsynced.clear()
        self._handed.clear()


__all__ = ["KafkaBus", "open_bus", "open_client", "topic_token", "untoken", "confluent_kafka"]
