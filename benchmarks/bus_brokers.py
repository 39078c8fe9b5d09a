"""Durable consumption on the broker buses, each next to its raw client's batched loop doing the same work.

    python benchmarks/bus.py --url nats://127.0.0.1:4222 [--rounds 3] [--quick]
    python benchmarks/bus.py --url amqp://guest:guest@127.0.0.1:5672/ [--rounds 3] [--quick]
    python benchmarks/bus.py --url kafka://127.0.0.1:9092 [--rounds 3] [--quick]

(or run this file with the same arguments). Every round uses a stream / namespace of its
own, deleted at the end; nothing else on the server is touched. Figures are medians over
``--rounds`` rounds, bus and raw interleaved so both see the same machine state.

* NATS: a pre-filled JetStream subject; raw = nats-py's ``pull_subscribe`` + ``fetch(100)``,
  ``json.loads``, handler, ``ack()`` per message; bus = ``subscribe(...).run_until_idle()``.
* RabbitMQ: a pre-filled quorum queue; raw = aio-pika ``consume`` with prefetch 100, a batch
  of 100 taken from the consumer, ``json.loads``, handler, one ``ack(multiple=True)`` per batch;
  bus = ``subscribe(...).run_until_idle()`` on the same queue layout.
* Kafka: a pre-filled 3-partition topic; raw = confluent-kafka ``consume(100)`` in a consumer
  group, ``json.loads``, handler, one synchronous ``commit`` per batch; bus =
  ``subscribe(...).run_until_idle()``. Both are timed from the first record handled (a group
  join takes seconds on some brokers, and it is not consumption) to the last commit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tusk_events.bus import connect

BATCH = 100
PAYLOAD = {"user_id": 12345, "email": "ada@example.com", "plan": "pro", "tags": ["a", "b"]}


def envelope(i: int) -> bytes:
    return json.dumps(
        {"id": str(uuid.uuid4()), "type": "bench", "payload": {**PAYLOAD, "i": i}, "metadata": {},
         "timestamp": time.time()}
    ).encode()


# --- NATS ------------------------------------------------------------------------------


async def _nats_fill(server: str, subject: str, n: int) -> None:
    import nats

    nc = await nats.connect(server)
    js = nc.jetstream(publish_async_max_pending=2000)
    futs = [await js.publish_async(subject, envelope(i)) for i in range(n)]
    await asyncio.gather(*futs)
    await nc.close()


async def _nats_raw(server: str, stream: str, subject: str, n: int, handler: Any) -> None:
    import nats

    nc = await nats.connect(server)
    js = nc.jetstream()
    psub = await js.pull_subscribe(subject, durable="raw", stream=stream)
    done = 0
    while done < n:
        msgs = await psub.fetch(BATCH, timeout=5)
        for m in msgs:
            handler(json.loads(m.data))
            await m.ack()
        done += len(msgs)
    await nc.flush()
    await nc.close()


def bench_nats(server: str, n: int, rounds: int) -> tuple[float, float]:
    seen = [0]

    def handler(event: Any) -> None:
        seen[0] += 1

    times: dict[str, list[float]] = {"bus": [], "raw": []}
    for k in range(rounds):
        for who in ("bus", "raw") if k % 2 == 0 else ("raw", "bus"):
            stream = f"BENCH{uuid.uuid4().hex[:10]}"
            bus = connect(f"{server}/{stream}", publish_to="durable")
            try:
                bus.publish("warmup", 0)  # creates the stream
                subject = bus.subject("bench")  # type: ignore[attr-defined]
                asyncio.run(_nats_fill(server, subject, n))
                seen[0] = 0
                t0 = time.perf_counter()
                if who == "bus":
                    bus.subscribe(handler, ["bench"], group="g", batch=BATCH).run_until_idle(timeout=300)
                else:
                    asyncio.run(_nats_raw(server, stream, subject, n, handler))
                times[who].append(time.perf_counter() - t0)
                assert seen[0] == n, (who, seen[0])
            finally:
                bus.delete_stream()  # type: ignore[attr-defined]
                bus.close()
    return n / statistics.median(times["bus"]), n / statistics.median(times["raw"])


# --- RabbitMQ --------------------------------------------------------------------------


async def _amqp_fill(url: str, queue: str, n: int) -> None:
    import aio_pika

    conn = await aio_pika.connect(url)
    ch = await conn.channel(publisher_confirms=True)
    for start in range(0, n, 1000):
        await asyncio.gather(*(
            ch.default_exchange.publish(
                aio_pika.Message(envelope(i), type="bench", delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key=queue,
            )
            for i in range(start, min(n, start + 1000))
        ))
    await conn.close()


async def _amqp_raw(url: str, queue: str, n: int, handler: Any) -> None:
    import aio_pika

    conn = await aio_pika.connect(url)
    ch = await conn.channel()
    await ch.set_qos(prefetch_count=BATCH)
    q = await ch.declare_queue(queue, passive=True)
    inbox: asyncio.Queue[Any] = asyncio.Queue()
    await q.consume(inbox.put, no_ack=False)
    done = 0
    while done < n:
        batch = [await inbox.get()]
        while not inbox.empty() and len(batch) < BATCH:
            batch.append(inbox.get_nowait())
        for m in batch:
            handler(json.loads(m.body))
        await batch[-1].ack(multiple=True)
        done += len(batch)
    await ch.close()
    await conn.close()


def bench_amqp(url: str, n: int, rounds: int) -> tuple[float, float]:
    from tusk_events.bus.amqp import parse_url

    seen = [0]

    def handler(event: Any) -> None:
        seen[0] += 1

    times: dict[str, list[float]] = {"bus": [], "raw": []}
    base = url.split("?", 1)[0]
    for k in range(rounds):
        for who in ("bus", "raw") if k % 2 == 0 else ("raw", "bus"):
            bus = connect(f"{base}?namespace=bench{uuid.uuid4().hex[:10]}", publish_to="durable")
            client_url, _ = parse_url(bus.url)
            try:
                sub = bus.subscribe(handler, ["bench"], group="g", batch=BATCH)  # declares the group's queue
                queue = bus.group_queue("g", "bench")  # type: ignore[attr-defined]
                asyncio.run(_amqp_fill(client_url, queue, n))
                seen[0] = 0
                t0 = time.perf_counter()
                if who == "bus":
                    sub.run_until_idle(timeout=300)
                else:
                    asyncio.run(_amqp_raw(client_url, queue, n, handler))
                times[who].append(time.perf_counter() - t0)
                assert seen[0] == n, (who, seen[0])
            finally:
                bus.delete_queues()  # type: ignore[attr-defined]
                bus.close()
    return n / statistics.median(times["bus"]), n / statistics.median(times["raw"])


# --- Kafka -----------------------------------------------------------------------------


def _kafka_raw(servers: str, topic: str, n: int, handler: Any) -> float:
    from confluent_kafka import Consumer

    c = Consumer({"bootstrap.servers": servers, "group.id": "raw", "enable.auto.commit": False,
                  "auto.offset.reset": "earliest", "fetch.wait.max.ms": 20})
    c.subscribe([topic])
    seen, t0 = 0, None
    try:
        while seen < n:
            msgs = [m for m in c.consume(BATCH, 0.5) if m.error() is None]
            if not msgs:
                continue
            if t0 is None:
                t0 = time.perf_counter()
            for m in msgs:
                handler(json.loads(m.value()))
            seen += len(msgs)
            c.commit(asynchronous=False)
        assert t0 is not None
        return time.perf_counter() - t0
    finally:
        c.close()


def bench_kafka(url: str, n: int, rounds: int) -> tuple[float, float]:
    seen = [0]
    first: list[float] = []

    def handler(event: Any) -> None:
        if not seen[0]:
            first.append(time.perf_counter())
        seen[0] += 1

    base = url.split("?", 1)[0].rstrip("/")
    base = base if base.count("/") <= 2 else base.rsplit("/", 1)[0]
    times: dict[str, list[float]] = {"bus": [], "raw": []}
    for k in range(rounds):
        for who in ("bus", "raw") if k % 2 == 0 else ("raw", "bus"):
            bus = connect(f"{base}/bench{uuid.uuid4().hex[:10]}?key=id", publish_to="durable")
            try:
                for i in range(0, n, 1000):
                    bus.publish_many(("bench", PAYLOAD) for _ in range(min(1000, n - i)))
                seen[0] = 0
                first.clear()
                if who == "bus":
                    bus.subscribe(handler, ["bench"], group="g", batch=BATCH).run_until_idle(timeout=300)
                    times[who].append(time.perf_counter() - first[0])
                else:
                    servers = base.split("://", 1)[1]
                    times[who].append(_kafka_raw(servers, bus.topic("bench"), n, handler))  # type: ignore[attr-defined]
                assert seen[0] == n, (who, seen[0])
            finally:
                bus.delete_topics()  # type: ignore[attr-defined]
                bus.close()
    return n / statistics.median(times["bus"]), n / statistics.median(times["raw"])


def run(url: str, rounds: int, quick: bool) -> int:
    if url.startswith("kafka://"):
        n = 5_000 if quick else 20_000
        b, w = bench_kafka(url, n, rounds)
        name = "Kafka (confluent-kafka)"
    elif url.startswith("nats://"):
        server = url.split("?", 1)[0].rstrip("/")
        server = server if server.count("/") <= 2 else server.rsplit("/", 1)[0]
        n = 5_000 if quick else 20_000
        b, w = bench_nats(server, n, rounds)
        name = "NATS JetStream"
    else:
        n = 1_000 if quick else 5_000
        b, w = bench_amqp(url, n, rounds)
        name = "RabbitMQ quorum queue"
    ok = b / w >= 0.5
    print(f"{name}: durable consume of {n:,} pre-filled events, batch {BATCH}, {rounds} rounds (medians)\n")
    print(f"{'':34} {'bus':>11} {'raw':>11} {'bus/raw':>8}  target")
    print(f"{'durable consume (ev/s)':34} {b:>11,.0f} {w:>11,.0f} {b / w:>7.2f}x  >= 0.5x {'ok' if ok else 'MISSED'}")
    return 0 if ok else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True, help="nats://host:4222, amqp://user:pass@host:5672/ or kafka://host:9092")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    return run(args.url, 2 if args.quick else args.rounds, args.quick)


if __name__ == "__main__":
    sys.exit(main())
