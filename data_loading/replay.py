"""Produce a stream of ``RatingEvent`` to Kafka: as fast as possible, at a fixed rate, or
following the original timestamps sped up; resumable after a crash or Ctrl-C.

Why resumable: a replay of ml-25m takes minutes and a rerun from zero would duplicate every
event in the topic. A progress file records how many events of the (deterministic) ordering
Kafka acknowledged: the stream is cut into chunks, each with its own delivery callback, and
the file moves past a chunk only once every record of it and of all earlier chunks was
acknowledged; a rerun skips exactly those. At-least-once: a crash re-sends at most the
unrecorded chunks, and the ``event_id`` makes duplicates harmless downstream (same Cassandra
row, same ES document).

Why the send loop looks the way it does: one process must reach ~100k events/s, so the
producer is librdkafka's (``clients.kafka_bulk_producer``: ~1 us per record in C, where
kafka-python spends 10-25 us of Python) and the loop does nothing per event that it can
avoid: events are serialised by orjson straight from the dataclass, keys are partitioned by
murmur2 in C (identical to Java's default partitioner), and acknowledgements are settled from
the delivery callbacks while sending goes on. Only the end of the run waits (``flush()``):
a wait per chunk stalled the pipeline and cost a third of the throughput.

Example::

    result = replay(settings, locate("ml-latest-small").ratings(), "ratings", rate=500)
"""

from __future__ import annotations

import json
import os
import re
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from recommender.clients import kafka_bulk_producer
from recommender.contracts import RatingEvent
from recommender.errors import BackendUnavailable, DatasetError
from recommender.settings import Settings
from recommender.topics import ensure_topics

if TYPE_CHECKING:
    from confluent_kafka import Producer

MAX_SPEEDUP_GAP_S = 2.0  # with --speedup, no single wait is longer than this
FLUSH_TIMEOUT_S = 130.0  # just above the producer's delivery timeout (120 s)
@dataclass(frozen=True)
class ReplayProgress:
    """What a progress callback sees: events handed to the producer in this run, events
    acknowledged in total (including earlier runs), events skipped as already acknowledged."""

    sent: int
    acked: int
    skipped: int
    elapsed_s: float


@dataclass(frozen=True)
class ReplayResult:
    """``sent`` and ``acked`` count this run (equal on success), ``skipped`` the events an
    earlier run had delivered, ``acked_total`` both together."""

    topic: str
    source: str
    sent: int
    acked: int
    skipped: int
    acked_total: int
    seconds: float
    events_per_s: float
    exhausted: bool  # the whole stream is now in Kafka
    progress_file: str


def progress_path(settings: Settings, topic: str, source: str) -> Path:
    """``<state>/replay/<topic>-<source>.json``, one file per (topic, stream)."""
    return settings.stack.state_dir.parent / "replay" / f"{_safe(f'{topic}-{source}')}.json"


def forget_progress(settings: Settings, topic: str) -> list[Path]:
    """Delete the progress files of every stream replayed into ``topic`` (when the topic
    itself is deleted: a new topic of the same name must start from its first event)."""
    gone = list((settings.stack.state_dir.parent / "replay").glob(f"{_safe(topic)}-*.json"))
    for path in gone:
        path.unlink(missing_ok=True)
    return gone


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]", "_", name)


class ProgressFile:
    """How many events of one ordering are acknowledged, plus the last one's id to detect a
    changed ordering. Written atomically (temp file + rename)."""

    def __init__(self, path: Path):
        self.path = path

    def load(self) -> tuple[int, str | None]:
        try:
            data = json.loads(self.path.read_text())
            return int(data["acked"]), data.get("last_event_id")
        except FileNotFoundError:
            return 0, None
        except (ValueError, KeyError, TypeError) as exc:
            raise DatasetError(f"{self.path} is corrupt ({exc}); delete it or use "
                               "--no-resume") from exc

    def save(self, acked: int, last_event_id: str | None) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"acked": acked, "last_event_id": last_event_id,
                                   "updated_at": int(time.time() * 1000)}))
        os.replace(tmp, self.path)


class Pacer:
    """Waits so events leave at ``rate`` per second and/or at their original spacing divided
    by ``speedup`` (each gap capped at ``max_gap_s``, so a months-long pause in MovieLens
    does not stall a demo). Sleeps only when more than a millisecond ahead."""

    def __init__(self, rate: float = 0, speedup: float | None = None,
                 max_gap_s: float = MAX_SPEEDUP_GAP_S):
        if rate < 0 or (speedup is not None and speedup <= 0):
            raise ValueError("rate must be >= 0 and speedup > 0")
        self.rate, self.speedup, self.max_gap_s = rate, speedup, max_gap_s
        self.active = bool(rate) or speedup is not None
        self._start = time.monotonic()
        self._offset = 0.0  # seconds after start the current event is due (speedup)
        self._prev: int | None = None
        self._count = 0

    def due(self, event_time_ms: int) -> float:
        """Seconds after the start at which this event may be sent."""
        if self.speedup is not None:
            if self._prev is not None:
                gap = max(0, event_time_ms - self._prev) / 1000 / self.speedup
                self._offset += min(gap, self.max_gap_s)
            self._prev = event_time_ms
        by_rate = self._count / self.rate if self.rate else 0.0
        self._count += 1
        return max(self._offset, by_rate)

    def wait(self, event_time_ms: int) -> None:
        ahead = self._start + self.due(event_time_ms) - time.monotonic()
        if ahead > 0.001:
            time.sleep(ahead)


def connect(settings: Settings, attempts: int = 3, **overrides: Any) -> Producer:
    """A producer whose broker answered within at most ``attempts`` tries (10 s each)."""
    from confluent_kafka import KafkaException

    producer = kafka_bulk_producer(settings.kafka, **overrides)
    last: Exception | None = None
    for attempt in range(attempts):
        try:
            producer.list_topics(timeout=10)
            return producer
        except KafkaException as exc:
            last = exc
            time.sleep(min(2**attempt, 5))
    raise BackendUnavailable(f"Kafka at {settings.kafka.bootstrap_servers} did not answer "
                             f"after {attempts} attempts ({last})")


class Chunk:
    """The delivery callback of one chunk of consecutive events: counts acknowledgements and
    failures, keeps the first reason."""

    def __init__(self) -> None:
        self.size = 0  # known once the chunk is closed
        self.closed = False
        self.delivered = 0
        self.failed = 0
        self.first_error: object = None
        self.last_event_id: str | None = None

    def __call__(self, error: object, _message: object) -> None:
        if error is None:
            self.delivered += 1
        else:
            self.failed += 1
            self.first_error = self.first_error or error

    @property
    def settled(self) -> bool:
        return self.closed and self.delivered + self.failed == self.size


class Ledger:
    """Chunks in flight, oldest first. ``settle`` records progress past every leading chunk
    Kafka fully acknowledged; a failed record anywhere before stops the replay."""

    def __init__(self, state: ProgressFile, skipped: int, last_id: str | None) -> None:
        self.state, self.skipped, self.last_id = state, skipped, last_id
        self.acked = 0  # in this run
        self.cut_at = 0  # events sent in this run before the current chunk
        self.pending: deque[Chunk] = deque([Chunk()])

    @property
    def current(self) -> Chunk:
        return self.pending[-1]

    def cut(self, sent: int, last_event_id: str | None) -> Chunk:
        """Close the current chunk after the ``sent``-th event of this run (whose id is
        ``last_event_id``) and start the next one."""
        chunk = self.current
        chunk.closed, chunk.size, chunk.last_event_id = True, sent - self.cut_at, last_event_id
        self.cut_at = sent
        self.pending.append(Chunk())
        return self.current

    def settle(self) -> None:
        """Record every leading acknowledged chunk; raise ``ChunkFailed`` on a failed one."""
        recorded = False
        while self.pending and self.pending[0].settled:
            chunk = self.pending.popleft()
            if chunk.failed:
                raise ChunkFailed(chunk.first_error)
            self.acked += chunk.size
            self.last_id = chunk.last_event_id
            recorded = True
        if recorded:
            self.state.save(self.skipped + self.acked, self.last_id)


class ChunkFailed(Exception):
    """Kafka refused or timed out a record of a chunk."""


def replay(settings: Settings, events: Iterable[RatingEvent], topic: str | None = None, *,
           source: str | None = None, rate: float = 0, speedup: float | None = None,
           limit: int | None = None, resume: bool = True,
           progress: Callable[[ReplayProgress], None] | None = None,
           chunk: int = 50_000, producer: Producer | None = None) -> ReplayResult:
    """Send ``events`` to ``topic`` (default ``settings.kafka.ratings_topic``).

    ``rate``: events per second, 0 for as fast as Kafka takes them. ``speedup``: keep the
    original gaps between event times, divided by this factor. ``limit``: send at most this
    many events in this run (with ``resume`` a rerun continues with the next ones).
    ``resume``: skip the events an earlier run of the same (topic, source) got acknowledged;
    ``False`` starts over and overwrites the progress file. ``source`` names the stream in
    the progress file (default: the first event's ``source``). ``chunk``: events per
    recorded step of progress, i.e. about how many are re-sent after a crash. ``producer``:
    reuse one (it is then not closed). Raises ``BackendUnavailable`` when Kafka does not answer or
    stops acknowledging; the message says how many events are acknowledged, and a rerun
    resumes from there.
    """
    from confluent_kafka import KafkaException

    if limit is not None and limit < 1:
        raise ValueError("limit must be at least 1 (None: no limit)")
    topic = topic or settings.kafka.ratings_topic
    stream: Iterator[RatingEvent] = iter(events)
    first = next(stream, None)
    source = source or (first.source if first else "empty")
    state = ProgressFile(progress_path(settings, topic, source))
    skipped, last_id = state.load() if resume else (0, None)
    if not resume:
        state.save(0, None)
    stream = _skip(chain([first] if first else [], stream), skipped, last_id, state.path)
    try:
        ensure_topics(settings, topic)
        owns_producer = producer is None
        producer = producer or connect(settings)
    except BackendUnavailable as exc:
        raise BackendUnavailable(f"{exc}; 0 events sent in this run ({skipped} of {source} "
                                 f"acknowledged earlier, recorded in {state.path})") from exc
    run = _Sender(producer, topic, source, Ledger(state, skipped, last_id), progress)
    try:
        exhausted = run.send_all(stream, Pacer(rate, speedup), chunk, limit)
        run.finish()
    except KeyboardInterrupt:  # record what Kafka already has, so a rerun resends little
        run.finish()
        raise
    except KafkaException as exc:
        raise run.stopped(exc) from exc
    finally:
        if owns_producer:
            producer.flush(5)
    return run.result(exhausted)


class _Sender:
    """One run's producing side: sends events, cuts them into chunks, settles the chunks
    Kafka acknowledged and reports progress."""

    def __init__(self, producer: Producer, topic: str, source: str, ledger: Ledger,
                 progress: Callable[[ReplayProgress], None] | None) -> None:
        self.producer, self.topic, self.source, self.ledger = producer, topic, source, ledger
        self.progress = progress
        self.sent = 0
        self.last_sent_id = ledger.last_id
        self.deliveries = ledger.current
        self.start = time.monotonic()

    def send_all(self, stream: Iterator[RatingEvent], pacer: Pacer, chunk: int,
                 limit: int | None) -> bool:
        """Send until the stream or ``limit`` ends; whether the stream is exhausted. A chunk
        closes every ``chunk`` events, or every second when paced (so progress is recorded
        while a slow replay runs)."""
        dumps, ledger, send, last_cut = orjson.dumps, self.ledger, self.send, time.monotonic()
        sent = self.sent  # locals in the loop: it runs once per event
        try:
            for event in stream:
                if pacer.active:
                    pacer.wait(event.event_time)
                send(dumps(event), event.key())
                sent += 1
                self.last_sent_id = event.event_id
                if sent - ledger.cut_at >= chunk or (pacer.active and
                                                     time.monotonic() - last_cut > 1):
                    self.deliveries = ledger.cut(sent, self.last_sent_id)
                    last_cut = time.monotonic()
                if sent % 1000 == 0:
                    self.sent = sent
                    self.producer.poll(0)  # serve delivery reports as they come
                    self.settle()
                    self.report()
                if sent == limit:
                    break
        finally:
            self.sent = sent
        return sent != limit or next(stream, None) is None

    def send(self, value: bytes, key: bytes) -> None:
        while True:
            try:
                self.producer.produce(self.topic, value, key, on_delivery=self.deliveries)
                return
            except BufferError:  # the local queue is full: let librdkafka drain it
                self.producer.poll(0.05)
                self.settle()

    def settle(self) -> None:
        try:
            self.ledger.settle()
        except ChunkFailed as exc:
            raise self.stopped(exc) from exc

    def finish(self) -> None:
        """Wait for every outstanding acknowledgement and record it."""
        self.ledger.cut(self.sent, self.last_sent_id)
        unsent = self.producer.flush(FLUSH_TIMEOUT_S)
        self.settle()
        if unsent:
            raise self.stopped(f"{unsent} records not acknowledged within "
                               f"{FLUSH_TIMEOUT_S:.0f}s")

    def stopped(self, error: object) -> BackendUnavailable:
        ledger = self.ledger
        return BackendUnavailable(
            f"Kafka stopped acknowledging on topic {self.topic!r} ({error}); "
            f"{ledger.skipped + ledger.acked} events of {self.source} are acknowledged and "
            f"recorded in {ledger.state.path}; rerun to resume")

    def report(self) -> None:
        if self.progress is not None:
            ledger = self.ledger
            self.progress(ReplayProgress(self.sent, ledger.skipped + ledger.acked,
                                         ledger.skipped, time.monotonic() - self.start))

    def result(self, exhausted: bool) -> ReplayResult:
        self.report()
        seconds = time.monotonic() - self.start
        ledger = self.ledger
        return ReplayResult(self.topic, self.source, self.sent, ledger.acked, ledger.skipped,
                            ledger.skipped + ledger.acked, seconds,
                            self.sent / seconds if seconds > 0 else 0.0, exhausted,
                            str(ledger.state.path))


def _skip(stream: Iterator[RatingEvent], count: int, last_id: str | None,
          path: Path) -> Iterator[RatingEvent]:
    """Drop the first ``count`` events, checking the last dropped one is the event the
    progress file recorded: a different ordering must not be silently half-skipped."""
    for index, event in enumerate(stream):
        if index < count - 1:
            continue
        if index == count - 1:
            if last_id is not None and event.event_id != last_id:
                raise DatasetError(
                    f"{path} says {count} events were sent, the last being {last_id}, but "
                    f"event #{count} of this stream is {event.event_id}: the stream changed "
                    "(other dataset, tags included or not?); rerun with --no-resume")
            continue
        yield event
    # a stream shorter than the recorded count is fully sent already: nothing to yield
