"""Kafka topics the project owns: create them when missing, delete scratch ones.

Every stage calls ``ensure_topics`` before it produces or subscribes, so a fresh cluster needs
no manual ``kafka-topics.sh`` step and a topic is never auto-created with the broker's default
partition count (which would silently change how keys are spread). Readiness is the broker's
own metadata: the call returns when every partition has a leader, not after a sleep.

Example::

    ensure_topics(settings, settings.kafka.ratings_topic, settings.kafka.ratings_dlq_topic)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from recommender.clients import kafka_admin
from recommender.errors import BackendUnavailable
from recommender.settings import Settings

# The KafkaSettings fields that name the pipeline's topics.
TOPIC_FIELDS = ("ratings_topic", "ratings_dlq_topic", "requests_topic", "requests_dlq_topic",
                "predictions_topic", "predictions_dlq_topic")

if TYPE_CHECKING:
    from kafka import KafkaAdminClient


@contextmanager
def _admin(settings: Settings, timeout_s: float, failure: str) -> Iterator[KafkaAdminClient]:
    """An admin client for one operation, closed after it; a Kafka error during the
    operation becomes ``BackendUnavailable(failure: error)``, and one while connecting says
    how to reach a broker."""
    from kafka.errors import KafkaError

    try:
        admin = kafka_admin(settings.kafka, bootstrap_timeout_ms=int(timeout_s * 1000))
    except KafkaError as exc:
        raise BackendUnavailable(
            f"Kafka at {settings.kafka.bootstrap_servers} did not answer ({exc}); "
            "start it with `recommender stack up` or set RECOMMENDER_KAFKA__BOOTSTRAP_SERVERS"
        ) from exc
    try:
        yield admin
    except KafkaError as exc:
        raise BackendUnavailable(f"{failure}: {exc}") from exc
    finally:
        admin.close()


def ensure_topics(settings: Settings, *names: str, partitions: int | None = None,
                  timeout_s: float = 30.0) -> list[str]:
    """Create the topics in ``names`` that do not exist yet and wait until they are usable.

    New topics get ``partitions`` (default ``settings.kafka.num_partitions``) and
    ``settings.kafka.replication_factor``; existing ones are left exactly as they are.
    Returns the names this call created. Safe to call concurrently from several processes.
    """
    from kafka.errors import TopicAlreadyExistsError

    wanted = list(dict.fromkeys(names))
    if not wanted:
        return []
    with _admin(settings, timeout_s, f"Kafka topics {wanted} are not ready") as admin:
        existing = set(admin.list_topics())
        missing = [n for n in wanted if n not in existing]
        if missing:
            spec = {"num_partitions": partitions or settings.kafka.num_partitions,
                    "replication_factor": settings.kafka.replication_factor}
            result = admin.create_topics({n: spec for n in missing}, raise_errors=False)
            for topic in result["topics"]:
                if topic["error_code"] not in (0, TopicAlreadyExistsError.errno):
                    raise BackendUnavailable(
                        f"Kafka refused to create topic {topic['name']!r}: "
                        f"{topic.get('error_message') or topic['error_code']}")
        admin.wait_for_topics(wanted, timeout_ms=int(timeout_s * 1000))
        return missing


def partition_count(settings: Settings, topic: str, timeout_s: float = 30.0) -> int:
    """How many partitions ``topic`` has (0 when it does not exist)."""
    with _admin(settings, timeout_s, f"Kafka could not describe topic {topic!r}") as admin:
        described = admin.describe_topics([topic])
    return next((len(t.get("partitions") or []) for t in described
                 if t.get("name") == topic and not t.get("error_code")), 0)


def delete_topics(settings: Settings, *names: str, timeout_s: float = 30.0) -> list[str]:
    """Delete the topics in ``names`` that exist; returns the names deleted. For tests and
    scratch topics: the pipeline's own topics are its data, so nothing calls this on them."""
    present = list(dict.fromkeys(names))
    with _admin(settings, timeout_s, f"Kafka could not delete topics {present}") as admin:
        existing = set(admin.list_topics())
        present = [n for n in present if n in existing]
        if present:
            admin.delete_topics(present, timeout_ms=int(timeout_s * 1000))
        return present
