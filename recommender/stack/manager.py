"""The embedded stack: Kafka, Cassandra and Elasticsearch as local processes, one node of
each, or with ``stack.nodes`` = 3 a local cluster of each plus a Spark standalone master
and workers.

``up`` is all-or-nothing: it checks every port and the memory the servers will take first,
starts what is not already running, waits until each server answers a real request, and
stops what it started if any fails.
``down`` stops only processes this stack started, found by their pid files.

Example::

    from recommender.settings import get_settings
    from recommender.stack import manager as stack
    stack.up(get_settings().stack)        # idempotent
    print(stack.status(get_settings().stack))
"""

from __future__ import annotations

import time
from collections.abc import Callable

from recommender.errors import StackError
from recommender.settings import StackSettings
from recommender.stack.access import ACCOUNTS
from recommender.stack.base import Service, ServiceStatus, find_java, maven_classpath
from recommender.stack.cassandra import CassandraService, SecureCassandraService
from recommender.stack.elasticsearch import ElasticsearchService, SecureElasticsearchService
from recommender.stack.kafka import KafkaService, SecureKafkaService
from recommender.stack.provision import identities
from recommender.stack.secrets import StackSecrets
from recommender.stack.spark import SparkMasterService, SparkWorkerService

SERVICE_TYPES: tuple[type[Service], ...] = (KafkaService, CassandraService, ElasticsearchService)
SECURE_SERVICE_TYPES: tuple[type[Service], ...] = (
    SecureKafkaService, SecureCassandraService, SecureElasticsearchService)


def services(settings: StackSettings) -> list[Service]:
    """The server processes of the stack ``settings`` address: plain, secure or a cluster
    (each in its own state dir and ports, see ``StackSettings.active``)."""
    active = settings.active()
    types = SECURE_SERVICE_TYPES if active.secure else SERVICE_TYPES
    nodes = range(1, active.nodes + 1)
    found = [cls(active, node) for cls in types for node in nodes]
    if active.nodes > 1:
        found.append(SparkMasterService(active))
        found += [SparkWorkerService(active, n) for n in range(1, active.spark_workers + 1)]
    return found


def check_memory(to_start: list[Service]) -> None:
    """Refuse, before anything starts, servers that would not fit in the available memory."""
    needed = sum(svc.memory_mb() for svc in to_start)
    available = available_mb()
    if needed > available:
        raise StackError(
            f"starting {len(to_start)} servers needs about {needed:,} MiB and this machine has "
            f"{available:,} MiB available; nothing was started. Stop other processes, or set "
            "smaller heaps (stack.kafka_heap, stack.cassandra_heap, stack.elasticsearch_heap)"
            " or fewer stack.nodes.")


def available_mb() -> int:
    """MemAvailable of /proc/meminfo, in MiB."""
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) // 1024
    raise StackError("/proc/meminfo has no MemAvailable line")


def fetch(settings: StackSettings, on_event: Callable[[str], None] = lambda _: None) -> None:
    """Resolve every jar the stack and the Spark jobs need, so later starts work offline."""
    find_java(settings)
    for artifact_set in ("kafka", "cassandra", "elasticsearch", "spark"):
        jars = maven_classpath(artifact_set, settings.cache_dir)
        on_event(f"{artifact_set}: {len(jars)} artifacts cached")


def up(
    settings: StackSettings, on_event: Callable[[str], None] = lambda _: None
) -> list[ServiceStatus]:
    """Start every service that is not already up and healthy; return their statuses.

    The secure stack first generates its secrets (once), and ends by creating or updating
    the components' accounts (``provision.identities``)."""
    java = find_java(settings)
    if settings.secure:
        StackSecrets.of(settings).ensure(ACCOUNTS)
    to_start: list[Service] = []
    for svc in services(settings):
        if svc.safe_ready():
            on_event(f"{svc.name}: already running on {svc.host}:{svc.port}, reused")
            continue
        if svc.pid() is not None:
            to_start.append(svc)  # our process exists but does not answer yet: wait for it
            continue
        busy = svc.busy_ports()
        if busy:
            raise StackError(
                f"{svc.name} cannot start: port {', '.join(map(str, busy))} on {svc.host} is "
                "already in use by another process. Stop it or free the port; nothing was started."
            )
        to_start.append(svc)
    check_memory([svc for svc in to_start if svc.pid() is None])
    started: list[Service] = []
    try:
        for svc in to_start:
            if svc.pid() is None:
                on_event(f"{svc.name}: starting {svc.version}")
                svc.start(java)
                started.append(svc)
        # servers of a cluster start side by side on the same cores: each gets its share
        deadline = time.monotonic() + settings.startup_timeout_s * max(1, settings.nodes)
        for svc in to_start:
            svc.wait_ready(deadline)
            on_event(f"{svc.name}: ready on {svc.host}:{svc.port}")
        if settings.secure:
            identities(settings, on_event)
    except BaseException:
        for svc in started:
            svc.stop(timeout=20)
        raise
    return status(settings)


def down(settings: StackSettings, on_event: Callable[[str], None] = lambda _: None) -> int:
    """Stop the services this stack started; return how many were running."""
    stopped = 0
    for svc in reversed(services(settings)):
        if svc.stop():
            stopped += 1
            on_event(f"{svc.name}: stopped")
    return stopped


def status(settings: StackSettings) -> list[ServiceStatus]:
    return [svc.status() for svc in services(settings)]
