"""Private names for one test: its own topics, consumer groups, Spark checkpoints and, when
asked, Cassandra keyspace, so it reads only what it wrote and a rerun starts from nothing."""

from __future__ import annotations

import uuid
from typing import Any

from recommender.settings import Settings
from recommender.topics import ensure_topics

TOPIC_FIELDS = ("ratings_topic", "ratings_dlq_topic", "requests_topic", "requests_dlq_topic",
                "predictions_topic", "predictions_dlq_topic")


def private(settings: Settings, name: str, *, own_keyspace: bool = False,
            **spark: Any) -> Settings:
    """``settings`` with private topics (created), groups and checkpoints; ``own_keyspace``
    also gives a private keyspace (else the session's, which holds ml-latest-small), and
    ``spark`` overrides Spark settings such as ``max_offsets_per_trigger``."""
    suffix = f"{name}-{uuid.uuid4().hex[:6]}"
    kafka = settings.kafka.model_copy(update={
        **{field: f"it-{suffix}-{field.removesuffix('_topic').replace('_', '-')}"
           for field in TOPIC_FIELDS},
        "predictor_group": f"it-{suffix}-predictor", "shipper_group": f"it-{suffix}-shipper"})
    update: dict[str, Any] = {"kafka": kafka, "spark": settings.spark.model_copy(update={
        "checkpoint_dir": settings.spark.checkpoint_dir / suffix, **spark})}
    if own_keyspace:
        update["cassandra"] = settings.cassandra.model_copy(
            update={"keyspace": f"it_{suffix}".replace("-", "_")})
    own = settings.model_copy(update=update)
    ensure_topics(own, *(getattr(kafka, field) for field in TOPIC_FIELDS))
    return own
