"""Reading a test's private topics back: until a condition holds, or everything up to the
current end offsets (an exact count, no guessing how long to wait)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from recommender.clients import kafka_consumer
from recommender.offsets import topic_end_offsets
from recommender.settings import Settings

if TYPE_CHECKING:
    from kafka.consumer.fetcher import ConsumerRecord


def collect(settings: Settings, topic: str, until: Callable[[list[dict]], bool],
            timeout_s: float = 240) -> list[dict]:
    """JSON values of ``topic`` from the start until ``until(records)`` holds; each value
    also carries its Kafka timestamp as ``_kafka_ts``."""
    consumer = kafka_consumer(settings.kafka, topic, group_id=None, consumer_timeout_ms=1000)
    records: list[dict] = []
    deadline = time.monotonic() + timeout_s
    try:
        while not until(records):
            assert time.monotonic() < deadline, f"gave up waiting on {topic}: {records[-3:]}"
            for message in consumer:
                value = json.loads(message.value)
                value["_kafka_ts"] = message.timestamp
                records.append(value)
    finally:
        consumer.close()
    return records


def read_all(settings: Settings, topic: str, timeout_s: float = 300) -> list[ConsumerRecord]:
    """Every record ``topic`` holds now, read up to the end offsets taken at the call."""
    from kafka import TopicPartition

    ends = {p: end for p, end in topic_end_offsets(settings, topic).items() if end}
    if not ends:  # nothing was ever written (or the topic does not exist yet)
        return []
    consumer = kafka_consumer(settings.kafka, group_id=None)
    records: list[Any] = []
    try:
        consumer.assign([TopicPartition(topic, p) for p in ends])
        consumer.seek_to_beginning()
        position = dict.fromkeys(ends, 0)
        deadline = time.monotonic() + timeout_s
        while any(position[p] < end for p, end in ends.items()):
            assert time.monotonic() < deadline, f"{topic}: read {len(records)} records only"
            for tp, batch in consumer.poll(timeout_ms=1000, max_records=50_000).items():
                records += [r for r in batch if r.offset < ends[tp.partition]]
                position[tp.partition] = consumer.position(tp)
    finally:
        consumer.close()
    return records
