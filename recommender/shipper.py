"""The built-in shipper: predictions topic -> Elasticsearch, the job Logstash does in the
docker-compose deployment, with the same document ids and indices.

Each prediction is written twice in one bulk request: into its daily ``predictions-*`` index
(the history, keyed by ``request_id`` (+ ``movie_id`` for top-k rows)) and into the
``latest-predictions`` index keyed by ``user_id:movie_id`` with ``predicted_at`` as external
version, so that index holds exactly the newest prediction per (user, movie) whatever order
re-deliveries arrive in, and ``/users/{id}/predictions`` is a plain sorted query over it.

Guarantees: offsets are committed only after Elasticsearch acknowledged the batch, so a
crash re-delivers instead of losing; ids are deterministic, so a re-delivery overwrites
instead of duplicating. While batches are being indexed the next is polled and encoded, so
Elasticsearch and the shipper's own CPU work at the same time. While Elasticsearch is
down the shipper waits and retries with backoff. Documents Elasticsearch rejects (a mapping
conflict) and records that are not valid predictions go to the dead-letter topic with the
reason; the shipper keeps going. Several shippers in the same group share the partitions.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict, deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

import orjson
from elastic_transport import TransportError
from elasticsearch import ApiError
from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import OffsetAndMetadata, TopicPartition

from recommender.clients import elasticsearch_client, kafka_consumer, kafka_producer
from recommender.contracts import (
    DeadLetter,
    IndexNames,
    latest_prediction_doc_id,
    prediction_doc_id,
)
from recommender.indices import (
    PREDICTIONS_TEMPLATES,
    BulkRetry,
    bulk_index,
    predictions_index,
)
from recommender.indices import setup as setup_indices
from recommender.settings import Settings

if TYPE_CHECKING:
    from kafka import KafkaProducer
    from kafka.consumer.fetcher import ConsumerRecord

log = logging.getLogger(__name__)
T = TypeVar("T")
REQUIRED = ("request_id", "user_id", "predicted_at")


ES_DOWN = (ApiError, TransportError, BulkRetry)
KAFKA_DOWN = (KafkaError,)  # a broker restart: connection refused, no coordinator, timeouts
MAX_BACKOFF_S = 15.0
# Bulk requests in flight at once. Each bulk's shard-level work runs on one Elasticsearch
# write thread per index; a second request in flight keeps the node busy while the first
# one's acknowledgement is handled and the next batch is polled.
IN_FLIGHT = 2


@dataclass
class ShipStats:
    """``indexed`` counts predictions, ``documents`` what Elasticsearch wrote for them (two
    per pair prediction: history and latest)."""

    indexed: int = 0
    documents: int = 0
    dead_letters: int = 0
    batches: int = 0
    es_retries: int = 0
    kafka_retries: int = 0
    started: float = field(default_factory=time.monotonic)
    first_poll: float | None = None  # when the first records arrived
    last_ack: float | None = None  # when Elasticsearch acknowledged the last batch

    def per_s(self, count: int) -> float:
        """``count`` per second since the shipper started."""
        return count / max(time.monotonic() - self.started, 1e-9)


def to_actions(value: bytes, timestamp: int | None, names: IndexNames) -> list[bytes] | str:
    """The bulk lines (action + source) for one record's value and Kafka timestamp, or the
    reason it is not a prediction. The source is encoded once and sent to both indices."""
    try:
        doc = orjson.loads(value)
    except (orjson.JSONDecodeError, TypeError):
        return "malformed JSON"
    if not isinstance(doc, dict):
        return "not a JSON object"
    absent = [name for name in REQUIRED if doc.get(name) is None]
    if absent:
        return f"missing field(s): {', '.join(absent)}"
    try:
        predicted_at = int(doc["predicted_at"])
    except (TypeError, ValueError):
        return "predicted_at is not epoch milliseconds"
    if doc.get("requested_at") is not None and timestamp:
        doc["latency_ms"] = int(timestamp) - int(doc["requested_at"])
    doc["indexed_at"] = int(time.time() * 1000)
    source = orjson.dumps(doc) + b"\n"
    movie_id = doc.get("movie_id")
    history = {"index": {"_index": predictions_index(names, predicted_at),
                         "_id": prediction_doc_id(str(doc["request_id"]), movie_id,
                                                  doc.get("rank"))}}
    lines = [orjson.dumps(history) + b"\n", source]
    if movie_id is not None:
        latest = {"index": {"_index": names.latest_predictions, "version": predicted_at,
                            "version_type": "external_gte",
                            "_id": latest_prediction_doc_id(doc["user_id"], movie_id)}}
        lines += [orjson.dumps(latest) + b"\n", source]
    return lines


@dataclass
class Batch:
    """Polled records on their way to Elasticsearch; ``owners[i]`` is the record of bulk
    action ``i``."""

    records: list[ConsumerRecord]
    body: bytes = b""
    owners: list[int] = field(default_factory=list)
    dead: list[tuple[ConsumerRecord, str]] = field(default_factory=list)

    def offsets(self) -> dict[TopicPartition, OffsetAndMetadata]:
        """Per partition, the next offset to read: committed once the batch is indexed."""
        last: dict[TopicPartition, int] = defaultdict(lambda: -1)
        for record in self.records:
            tp = TopicPartition(record.topic, record.partition)
            last[tp] = max(last[tp], record.offset)
        return {tp: OffsetAndMetadata(offset + 1, "", -1) for tp, offset in last.items()}


class Shipper:
    """One shipper process: a consumer-group member that indexes and commits in batches."""

    def __init__(self, settings: Settings, *, group_id: str | None = None,
                 max_records: int = 5000) -> None:
        self.settings = settings
        self.max_records = max_records
        self.names = settings.elasticsearch.indices
        kafka = settings.kafka
        deadline = time.monotonic() + kafka.connect_wait_s
        self.stats = ShipStats()
        self.consumer = self.while_down(
            lambda: kafka_consumer(kafka, kafka.predictions_topic,
                                   group_id=group_id or kafka.shipper_group,
                                   max_poll_records=max_records, fetch_max_bytes=64 * 1024 * 1024),
            "connecting to Kafka", KAFKA_DOWN, lambda: time.monotonic() > deadline)
        self.producer: KafkaProducer = self.while_down(
            lambda: kafka_producer(kafka), "connecting to Kafka", KAFKA_DOWN,
            lambda: time.monotonic() > deadline)
        self.es = elasticsearch_client(settings.elasticsearch)

    def run(self, stop_when: Callable[[], bool] = lambda: False,
            idle_exit_s: float | None = None) -> ShipStats:
        """Ship until ``stop_when()``; with ``idle_exit_s``, also stop after that long idle.

        Up to ``IN_FLIGHT`` bulk requests are in flight while the next batch is polled and
        encoded; a batch is committed only after its own acknowledgement, and batches are
        committed in order."""
        self.while_down(lambda: self.es.cluster.health(wait_for_status="yellow", timeout="5s"),
                        "waiting for Elasticsearch", ES_DOWN, stop_when)
        setup_indices(self.es, self.names, upgrade=PREDICTIONS_TEMPLATES,
                      replicas=self.settings.elasticsearch.number_of_replicas)
        idle_since = time.monotonic()
        in_flight: deque[tuple[Batch, Future[list[tuple[int, str]]]]] = deque()
        indexer = ThreadPoolExecutor(IN_FLIGHT, thread_name_prefix="bulk")
        try:
            while not stop_when():
                records = self.poll(stop_when)
                if not records:
                    while in_flight:
                        self.finish(*in_flight.popleft())
                    if idle_exit_s is not None and time.monotonic() - idle_since > idle_exit_s:
                        break
                    continue
                batch = self.encode(records)
                if len(in_flight) == IN_FLIGHT:
                    self.finish(*in_flight.popleft())
                idle_since = time.monotonic()
                self.stats.first_poll = self.stats.first_poll or idle_since
                in_flight.append((batch, indexer.submit(self.index, batch, stop_when)))
            while in_flight:
                self.finish(*in_flight.popleft())
        finally:
            indexer.shutdown(wait=True)
            self.close()
        return self.stats

    def encode(self, records: list[ConsumerRecord]) -> Batch:
        batch, lines = Batch(records), []
        for position, record in enumerate(records):
            actions = to_actions(record.value, record.timestamp, self.names)
            if isinstance(actions, str):
                batch.dead.append((record, actions))
                continue
            lines += actions
            batch.owners += [position] * (len(actions) // 2)
        batch.body = b"".join(lines)
        return batch

    def while_down(self, action: Callable[[], T], what: str,
                   down: tuple[type[BaseException], ...], give_up: Callable[[], bool]) -> T:
        """``action()``, retried with capped backoff while its server is down (the shipper
        outlives Kafka and Elasticsearch restarts); re-raised once ``give_up()``."""
        delay = 1.0
        while True:
            try:
                return action()
            except down as exc:
                if give_up():
                    raise
                if down is KAFKA_DOWN:
                    self.stats.kafka_retries += 1
                else:
                    self.stats.es_retries += 1
                log.warning("%s: server unavailable (%s); retrying in %.0fs", what, exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF_S)

    def poll(self, stop_when: Callable[[], bool]) -> list[ConsumerRecord]:
        def records() -> list[ConsumerRecord]:
            batches = self.consumer.poll(timeout_ms=500, max_records=self.max_records)
            return [r for part in batches.values() for r in part]

        try:
            return self.while_down(records, "polling Kafka", KAFKA_DOWN, stop_when)
        except KAFKA_DOWN:  # asked to stop while Kafka is down: nothing more to ship
            return []

    def index(self, batch: Batch, stop_when: Callable[[], bool]) -> list[tuple[int, str]]:
        """Bulk-index the batch, waiting out an Elasticsearch outage; the rejected actions."""
        if not batch.body:
            return []
        return self.while_down(lambda: bulk_index(self.es, batch.body), "bulk index",
                               ES_DOWN, stop_when)

    def finish(self, batch: Batch, acked: Future[list[tuple[int, str]]]) -> None:
        """After Elasticsearch acknowledged: dead letters, then the batch's offsets."""
        rejected_actions = acked.result()
        rejected = {batch.owners[action]: reason for action, reason in rejected_actions}
        self.stats.last_ack = time.monotonic()
        dead = batch.dead + [(batch.records[owner], reason) for owner, reason in rejected.items()]
        self.dead_letter(dead)
        self.commit(batch.offsets())
        self.stats.indexed += len(set(batch.owners)) - len(rejected)
        self.stats.documents += len(batch.owners) - len(rejected_actions)
        self.stats.dead_letters += len(dead)
        self.stats.batches += 1

    def dead_letter(self, dead: list[tuple[ConsumerRecord, str]]) -> None:
        now = int(time.time() * 1000)
        for record, reason in dead:
            letter = DeadLetter.of(record.value, source_topic=record.topic,
                                   partition=record.partition, offset=record.offset,
                                   reason=reason, failed_at=now)
            self.producer.send(self.settings.kafka.predictions_dlq_topic,
                               key=f"{record.topic}:{record.partition}:{record.offset}".encode(),
                               value=letter.to_json())
        if dead:
            self.producer.flush()

    def commit(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None:
        """Commit an indexed batch's offsets, waiting out a broker restart for up to
        ``kafka.connect_wait_s`` (an uncommitted batch is only re-shipped by id, but
        committing keeps re-deliveries few)."""
        def attempt() -> None:
            try:
                self.consumer.commit(offsets)
            except CommitFailedError as exc:  # partitions moved to another shipper: it re-ships
                log.warning("offsets not committed (%s); the new owner re-ships them by id", exc)

        deadline = time.monotonic() + self.settings.kafka.connect_wait_s
        self.while_down(attempt, "committing offsets", KAFKA_DOWN,
                        lambda: time.monotonic() > deadline)

    def close(self) -> None:
        self.consumer.close()
        self.producer.close()
        self.es.close()
