"""Kafka offsets as an operator reads them: where each topic ends, what a consumer group has
committed, what a Structured Streaming checkpoint has finished, and the lag between them.

The predictor's rollover, the live monitor, the benchmarks and the tests all read offsets
here. The predictor and the shipper commit to consumer groups (``kafka.predictor_group``,
``kafka.shipper_group``), so their lag is what ``kafka-consumer-groups.sh --describe`` shows;
the ingest job joins no group, and its progress is the newest micro-batch its checkpoint
records as committed.
"""

from __future__ import annotations

import json
from pathlib import Path

from recommender.clients import kafka_admin, kafka_consumer
from recommender.settings import Settings


def end_offsets(settings: Settings, topics: list[str]) -> dict[str, dict[int, int]]:
    """topic -> partition -> end offset (records each partition holds since creation); a
    topic that does not exist has no partitions."""
    from kafka import TopicPartition

    consumer = kafka_consumer(settings.kafka, group_id=None)
    try:
        out = {}
        for topic in topics:
            parts = consumer.partitions_for_topic(topic) or set()
            ends = consumer.end_offsets([TopicPartition(topic, p) for p in parts])
            out[topic] = {tp.partition: offset for tp, offset in ends.items()}
        return out
    finally:
        consumer.close()


def topic_end_offsets(settings: Settings, topic: str) -> dict[int, int]:
    """partition -> end offset of one topic."""
    return end_offsets(settings, [topic])[topic]


def group_offsets(settings: Settings, group: str, topic: str) -> dict[int, int]:
    """partition -> offset ``group`` committed on ``topic`` (empty: it has not committed)."""
    admin = kafka_admin(settings.kafka)
    try:
        result = admin.list_group_offsets({group: None})
    finally:
        admin.close()
    committed = result.get(group, result)
    return {tp.partition: meta.offset for tp, meta in committed.items()
            if tp.topic == topic and meta.offset >= 0}


def checkpoint_offsets(checkpoint: Path, topic: str) -> dict[int, int]:
    """partition -> end offset of the newest micro-batch a Structured Streaming checkpoint
    has committed (``commits/<batch>`` is written after the sink; ``offsets/<batch>`` holds
    the batch's end offsets as its last line)."""
    commits = [int(p.name) for p in (checkpoint / "commits").glob("[0-9]*")]
    if not commits:
        return {}
    lines = (checkpoint / "offsets" / str(max(commits))).read_text().strip().splitlines()
    return {int(p): int(o) for p, o in json.loads(lines[-1]).get(topic, {}).items()}


def lag(ends: dict[int, int], done: dict[int, int]) -> int:
    """Records received but not yet processed, over all partitions."""
    return sum(max(0, end - done.get(p, 0)) for p, end in ends.items())
