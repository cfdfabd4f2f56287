"""How far behind each job of the pipeline is, from the same signals an operator would read.

* the predictor and the shipper commit to consumer groups (``kafka.predictor_group``,
  ``kafka.shipper_group``): their lag is what ``kafka-consumer-groups.sh --describe`` shows;
* the ingest job is a Structured Streaming query that joins no group: its progress is the
  offsets of the last micro-batch its checkpoint records as committed.

Lag is the input topic's end offsets (``bench.common.topic_end_offsets``) minus those,
summed over partitions.
"""

from __future__ import annotations

import json
from pathlib import Path

from recommender.settings import Settings


def group_offsets(settings: Settings, group: str, topic: str) -> dict[int, int]:
    """partition -> offset the consumer group committed on ``topic`` (none: not started)."""
    from recommender.clients import kafka_admin

    admin = kafka_admin(settings.kafka)
    try:
        result = admin.list_group_offsets({group: None})
    finally:
        admin.close()
    return {tp.partition: meta.offset for tp, meta in result.get(group, {}).items()
            if tp.topic == topic and meta.offset >= 0}


def checkpoint_offsets(checkpoint: Path, topic: str) -> dict[int, int]:
    """partition -> end offset of the newest micro-batch a Structured Streaming checkpoint
    has committed (``commits/<batch>`` written after the sink; ``offsets/<batch>`` holds the
    batch's end offsets as its last line)."""
    commits = [int(p.name) for p in (checkpoint / "commits").glob("[0-9]*")]
    if not commits:
        return {}
    lines = (checkpoint / "offsets" / str(max(commits))).read_text().strip().splitlines()
    return {int(p): int(o) for p, o in json.loads(lines[-1]).get(topic, {}).items()}


def lag(ends: dict[int, int], done: dict[int, int]) -> int:
    """Records received but not yet processed, over all partitions."""
    return sum(max(0, end - done.get(p, 0)) for p, end in ends.items())
