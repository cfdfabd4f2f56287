"""Session fixtures on the real stack, shared by every suite (a pytest plugin registered in
``tests/conftest.py``): the stack, started once per session and reused if already up, one
SparkSession, ml-latest-small ingested, and a trained model.

At the end the session's private names are dropped (``tests.support.names``), then the
stack is stopped if this session started it; a stack that was already running (a
developer's, or a demo's) is left running.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

from bench.fixtures import install_index_templates
from recommender.errors import StackError
from recommender.settings import Settings, StackSettings
from recommender.stack import manager
from recommender.stack.base import ServiceStatus
from tests.support.names import drop_remembered


@contextmanager
def running(stack: StackSettings, what: str,
            cleanup: Callable[[], None]) -> Iterator[list[ServiceStatus]]:
    """``stack`` up for the block (started unless it already answers); afterwards
    ``cleanup`` runs while it still answers, then the stack stops if this started it."""
    already_up = all(s.up for s in manager.status(stack))
    try:
        statuses = manager.up(stack, on_event=print)
    except StackError as exc:
        pytest.fail(f"{what} could not start: {exc}")
    for s in statuses:
        print(f"{what}: {s.name} ({s.role}) {s.version} on {s.host}:{s.port} (pid {s.pid})")
    yield statuses
    cleanup()
    if not already_up:
        manager.down(stack, on_event=print)


@pytest.fixture(scope="session")
def stack(settings: Settings) -> Iterator[dict[str, ServiceStatus]]:
    # drop_remembered while the stack still answers: a stopped stack keeps its topics
    with running(settings.stack, "the real stack (Kafka, Cassandra, Elasticsearch)",
                 drop_remembered) as statuses:
        install_index_templates(settings)
        yield {s.name: s for s in statuses}


@pytest.fixture(scope="session")
def spark(settings: Settings, stack: dict[str, ServiceStatus]) -> Iterator[object]:
    """One SparkSession (local[2]) for the whole test session: the JVM start is the slow part."""
    from recommender.clients import spark_session

    session = spark_session(settings, app_name="recommender-tests")
    yield session
    session.stop()


@dataclass(frozen=True)
class Ingested:
    settings: Settings
    replayed: int
    started_ms: int


@pytest.fixture(scope="session")
def ml_small(spark, settings: Settings, data_dir) -> Ingested:
    """ml-latest-small replayed into the session's ratings topic and ingested into its
    keyspace (ratings, and movies metadata for enrichment)."""
    import time
    import uuid

    from data_loading.datasets import locate
    from data_loading.metadata import load_metadata
    from data_loading.replay import replay
    from recommender.cassandra_schema import ensure_schema
    from recommender.clients import cassandra_session
    from recommender.ingest_job import start_ingest
    from recommender.topics import ensure_topics

    ensure_topics(settings, settings.kafka.ratings_topic, settings.kafka.ratings_dlq_topic)
    session = cassandra_session(settings.cassandra)
    ensure_schema(session, settings)
    session.cluster.shutdown()
    started_ms = int(time.time() * 1000)
    dataset = locate("ml-latest-small", data_dir)
    load_metadata(settings, dataset)
    result = replay(settings, dataset.ratings(), resume=False)
    start_ingest(spark, settings, available_now=True,
                 query_name=f"ingest-{uuid.uuid4().hex[:6]}").awaitTermination()
    return Ingested(settings, result.acked, started_ms)


@pytest.fixture(scope="session")
def trained(spark, ml_small: Ingested, tmp_path_factory) -> Settings:
    """A version trained with the product's defaults (a ranking and a rating model) on the
    ingested ratings and promoted into a registry of its own; returns the settings that
    point at it (``settings.model.models_dir``)."""
    from recommender.model import snapshot
    from recommender.train import pipeline

    models = ml_small.settings.model.model_copy(
        update={"models_dir": tmp_path_factory.mktemp("trained-models")})
    settings = ml_small.settings.model_copy(update={"model": models})
    ratings = snapshot.read_cassandra(spark, settings.cassandra.keyspace)
    result = pipeline.run(ratings, settings, pipeline.TrainOptions(),
                          source="cassandra")
    assert result.decision.accepted, result.decision
    return settings
