"""The real stack for integration tests: started once per session, reused if already up.

When this session started the stack it stops it at the end; a stack that was already
running (a developer's, or a demo's) is left running.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from recommender.errors import StackError
from recommender.settings import Settings
from recommender.stack import manager
from recommender.stack.base import ServiceStatus


@pytest.fixture(scope="session")
def stack(settings: Settings) -> Iterator[dict[str, ServiceStatus]]:
    already_up = all(s.up for s in manager.status(settings.stack))
    try:
        statuses = manager.up(settings.stack, on_event=print)
    except StackError as exc:
        pytest.fail(f"the real stack (Kafka, Cassandra, Elasticsearch) could not start: {exc}")
    for s in statuses:
        print(f"stack: {s.name} {s.version} on {s.host}:{s.port} (pid {s.pid})")
    yield {s.name: s for s in statuses}
    if not already_up:
        manager.down(settings.stack, on_event=print)


@pytest.fixture(scope="session")
def spark(settings: Settings, stack: dict[str, ServiceStatus]) -> Iterator[object]:
    """One SparkSession (local[2]) for the whole test session: the JVM start is the slow part."""
    from recommender.clients import spark_session

    session = spark_session(settings, app_name="recommender-tests")
    yield session
    session.stop()
