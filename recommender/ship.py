"""The built-in shipper: predictions topic -> Elasticsearch, the job Logstash does in the
docker-compose deployment, with the same document ids and indices.

Guarantees: offsets are committed only after Elasticsearch acknowledged the batch, so a
crash re-delivers instead of losing; documents are keyed by ``request_id`` (+ ``movie_id``
for top-k rows), so a re-delivery overwrites instead of duplicating. While Elasticsearch is
down the shipper waits and retries with backoff. Documents Elasticsearch rejects (a mapping
conflict) and records that are not valid predictions go to the dead-letter topic with the
reason; the shipper keeps going. Several shippers in the same group share the partitions.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
from elastic_transport import TransportError
from elasticsearch import ApiError

from recommender.clients import elasticsearch_client, kafka_consumer, kafka_producer
from recommender.contracts import DeadLetter, prediction_doc_id
from recommender.indices import BulkRetry, bulk_index, predictions_index
from recommender.indices import setup as setup_indices
from recommender.settings import Settings

if TYPE_CHECKING:
    from kafka import KafkaProducer
    from kafka.consumer.fetcher import ConsumerRecord

log = logging.getLogger(__name__)
REQUIRED = ("request_id", "user_id", "predicted_at")


ES_DOWN = (ApiError, TransportError, BulkRetry)


@dataclass
class ShipStats:
    indexed: int = 0
    dead_letters: int = 0
    batches: int = 0
    es_retries: int = 0
    started: float = field(default_factory=time.monotonic)

    @property
    def docs_per_s(self) -> float:
        return self.indexed / max(time.monotonic() - self.started, 1e-9)


def to_action(record: ConsumerRecord) -> tuple[dict[str, Any], dict[str, Any]] | str:
    """The bulk action and source for one record, or the reason it is not a prediction."""
    try:
        doc = orjson.loads(record.value)
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
    if doc.get("requested_at") is not None and record.timestamp:
        doc["latency_ms"] = int(record.timestamp) - int(doc["requested_at"])
    doc["indexed_at"] = int(time.time() * 1000)
    doc_id = prediction_doc_id(str(doc["request_id"]), doc.get("movie_id"), doc.get("rank"))
    return {"index": {"_index": predictions_index(predicted_at), "_id": doc_id}}, doc


def bulk_body(pairs: Iterable[tuple[dict[str, Any], dict[str, Any]]]) -> bytes:
    return b"".join(orjson.dumps(a) + b"\n" + orjson.dumps(d) + b"\n" for a, d in pairs)


class Shipper:
    """One shipper process: a consumer-group member that indexes and commits in batches."""

    def __init__(self, settings: Settings, *, group_id: str | None = None,
                 max_records: int = 5000) -> None:
        self.settings = settings
        self.max_records = max_records
        kafka = settings.kafka
        self.consumer = kafka_consumer(kafka, kafka.predictions_topic,
                                       group_id=group_id or kafka.shipper_group,
                                       max_poll_records=max_records,
                                       fetch_max_bytes=64 * 1024 * 1024)
        self.producer: KafkaProducer = kafka_producer(kafka)
        self.es = elasticsearch_client(settings.elasticsearch)
        self.stats = ShipStats()

    def run(self, stop_when: Callable[[], bool] = lambda: False,
            idle_exit_s: float | None = None) -> ShipStats:
        """Ship until ``stop_when()``; with ``idle_exit_s``, also stop after that long idle."""
        self.wait_for_es(stop_when)
        setup_indices(self.es)
        idle_since = time.monotonic()
        try:
            while not stop_when():
                batches = self.consumer.poll(timeout_ms=500, max_records=self.max_records)
                records = [r for part in batches.values() for r in part]
                if not records:
                    if idle_exit_s is not None and time.monotonic() - idle_since > idle_exit_s:
                        break
                    continue
                idle_since = time.monotonic()
                self.ship(records, stop_when)
        finally:
            self.close()
        return self.stats

    def ship(self, records: list[ConsumerRecord], stop_when: Callable[[], bool]) -> None:
        pairs, sources, dead = [], [], []
        for record in records:
            action = to_action(record)
            if isinstance(action, str):
                dead.append((record, action))
            else:
                pairs.append(action)
                sources.append(record)
        rejected: list[tuple[int, str]] = []
        delay = 1.0
        while pairs:
            try:
                rejected = bulk_index(self.es, bulk_body(pairs))
                break
            except ES_DOWN as exc:  # ES down or overloaded: wait, never drop the batch
                if stop_when():
                    raise
                self.stats.es_retries += 1
                log.warning("Elasticsearch unavailable (%s); retrying in %.0fs", exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, 15.0)
        dead += [(sources[position], reason) for position, reason in rejected]
        self.dead_letter(dead)
        self.consumer.commit()
        self.stats.indexed += len(pairs) - len(rejected)
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

    def wait_for_es(self, stop_when: Callable[[], bool]) -> None:
        delay = 1.0
        while not stop_when():
            try:
                self.es.cluster.health(wait_for_status="yellow", timeout="5s")
                return
            except ES_DOWN as exc:  # not up yet: the shipper outlives ES restarts
                log.warning("waiting for Elasticsearch: %s", exc)
                time.sleep(delay)
                delay = min(delay * 2, 15.0)

    def close(self) -> None:
        self.consumer.close()
        self.producer.close()
        self.es.close()
