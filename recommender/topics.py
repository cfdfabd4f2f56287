"""Kafka topics the project owns: create them when missing, delete scratch ones.

Every stage calls ``ensure_topics`` before it produces or subscribes, so a fresh cluster needs
no manual ``kafka-topics.sh`` step and a topic is never auto-created with the broker's default
partition count (which would silently change how keys are spread). Readiness is the broker's
own metadata: the call returns when every partition has a leader, not after a sleep.

Example::

    ensure_topics(settings, settings.kafka.ratings_topic, settings.kafka.ratings_dlq_topic)
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from recommender.clients import kafka_admin
from recommender.errors import BackendUnavailable
from recommender.settings import KafkaSettings, Settings

# The KafkaSettings fields that name the pipeline's topics.
TOPIC_FIELDS = ("ratings_topic", "ratings_dlq_topic", "requests_topic", "requests_dlq_topic",
                "predictions_topic", "predictions_dlq_topic")

if TYPE_CHECKING:
    from kafka import KafkaAdminClient

log = logging.getLogger(__name__)


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

    New topics get ``partitions`` (default ``settings.kafka.num_partitions``),
    ``settings.kafka.replication_factor`` and, when set, ``min_insync_replicas``; existing
    ones are left exactly as they are. Before creating any, the replication is checked
    against the brokers (``replication_warnings``). Returns the names this call created.
    Safe to call concurrently from several processes.
    """
    from kafka.errors import TopicAlreadyExistsError

    wanted = list(dict.fromkeys(names))
    if not wanted:
        return []
    with _admin(settings, timeout_s, f"Kafka topics {wanted} are not ready") as admin:
        existing = set(admin.list_topics())
        missing = [n for n in wanted if n not in existing]
        if missing:
            brokers = _broker_count(admin)
            if brokers is not None:
                for warning in replication_warnings(settings.kafka, brokers):
                    log.warning("%s", warning)
            result = admin.create_topics({n: new_topic_spec(settings.kafka, partitions)
                                          for n in missing}, raise_errors=False)
            for topic in result["topics"]:
                if topic["error_code"] not in (0, TopicAlreadyExistsError.errno):
                    raise BackendUnavailable(
                        f"Kafka refused to create topic {topic['name']!r}: "
                        f"{topic.get('error_message') or topic['error_code']}")
        admin.wait_for_topics(wanted, timeout_ms=int(timeout_s * 1000))
        return missing


def new_topic_spec(kafka: KafkaSettings, partitions: int | None = None) -> dict[str, Any]:
    """kafka-python's ``create_topics`` entry for a topic the project creates."""
    spec: dict[str, Any] = {"num_partitions": partitions or kafka.num_partitions,
                            "replication_factor": kafka.replication_factor}
    if kafka.min_insync_replicas is not None:
        spec["configs"] = {"min.insync.replicas": str(kafka.min_insync_replicas)}
    return spec


def replication_warnings(kafka: KafkaSettings, brokers: int) -> list[str]:
    """What is wrong with creating topics with ``kafka``'s replication on a cluster of
    ``brokers`` live brokers: warnings for what works but loses records with a broker;
    ``BackendUnavailable`` naming the setting for what Kafka would refuse (its own error,
    INVALID_REPLICATION_FACTOR, names neither the setting nor the broker count)."""
    rf, isr = kafka.replication_factor, kafka.min_insync_replicas
    if rf > brokers:
        raise BackendUnavailable(
            f"kafka.replication_factor is {rf} but the Kafka cluster at "
            f"{kafka.bootstrap_servers} has {brokers} live broker(s): new topics cannot be "
            f"created; set kafka.replication_factor to at most {brokers} "
            "(RECOMMENDER_KAFKA__REPLICATION_FACTOR), or start the missing brokers")
    if isr is not None and isr > rf:
        raise BackendUnavailable(
            f"kafka.min_insync_replicas is {isr}, more than kafka.replication_factor {rf}: "
            "every write with acks=all would be refused; set it to at most "
            f"{rf} (RECOMMENDER_KAFKA__MIN_INSYNC_REPLICAS)")
    warnings = []
    if brokers > 1 and rf == 1:
        warnings.append(f"kafka.replication_factor is 1 on a cluster of {brokers} brokers: "
                        "a broker's loss loses its partitions' records; set it to "
                        f"{min(brokers, 3)} (RECOMMENDER_KAFKA__REPLICATION_FACTOR)")
    if isr is not None and rf > 1 and isr == rf:
        warnings.append(f"kafka.min_insync_replicas is {isr}, as many as "
                        "kafka.replication_factor: writes (acks=all) stop while any replica "
                        f"is down; {rf - 1} keeps them going through one broker's loss")
    return warnings


def _broker_count(admin: KafkaAdminClient) -> int | None:
    """The live (unfenced) brokers, or None when the cluster cannot be described."""
    from kafka.errors import KafkaError

    try:
        brokers = admin.describe_cluster()["brokers"]
    except (KafkaError, KeyError) as exc:
        log.debug("cannot describe the Kafka cluster, replication not checked: %s", exc)
        return None
    return sum(1 for broker in brokers if not broker.get("is_fenced"))


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
