"""The clients the API shares across requests, opened lazily with short timeouts.

An API must answer "Elasticsearch is down" in a second or two, not hang for the 30 s the
batch jobs tolerate, and it must start (and report itself unhealthy) while a backend is
down. So the clients come from ``recommender.clients`` like everywhere else, but with
timeouts capped at ``BACKEND_TIMEOUT_S`` and no client-side retries; Cassandra and Kafka
connect on first use, and each client library's failures become ``BackendUnavailable``
(503) in the ``*_errors`` context managers, never a stack trace.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from recommender.clients import (
    async_elasticsearch_client,
    cassandra_session,
    describe_urls,
    elasticsearch_client,
    kafka_admin,
    kafka_producer,
)
from recommender.errors import BackendUnavailable
from recommender.settings import Settings

if TYPE_CHECKING:
    from cassandra.cluster import Session
    from elasticsearch import AsyncElasticsearch, Elasticsearch
    from kafka import KafkaAdminClient, KafkaProducer

log = logging.getLogger(__name__)
BACKEND_TIMEOUT_S = 3.0


class Backends:
    """Elasticsearch, Cassandra and Kafka for one app; thread-safe, closed by ``close``."""

    def __init__(self, settings: Settings, timeout_s: float = BACKEND_TIMEOUT_S) -> None:
        self.settings = settings
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._es: Elasticsearch | None = None
        self._async_es: AsyncElasticsearch | None = None
        self._async_loop: asyncio.AbstractEventLoop | None = None
        self._cassandra: Session | None = None
        self._producer: KafkaProducer | None = None
        self._admin: KafkaAdminClient | None = None

    @property
    def es(self) -> Elasticsearch:
        """The Elasticsearch client (no connection is made until a request). One retry, for
        a pooled connection the server dropped; a timeout is not retried."""
        with self._lock:
            if self._es is None:
                es = self.settings.elasticsearch
                self._es = elasticsearch_client(
                    es, request_timeout=min(es.request_timeout, self.timeout_s), max_retries=1,
                    retry_on_timeout=False)
            return self._es

    @property
    def async_es(self) -> AsyncElasticsearch:
        """The asyncio client, with the same limits, for routes that only read Elasticsearch.

        Its connections belong to the event loop that made it: a server has one loop, but test
        harnesses may call one app from several, so a new loop gets a new client."""
        loop = asyncio.get_running_loop()
        if self._async_es is None or self._async_loop is not loop:
            es = self.settings.elasticsearch
            self._async_es = async_elasticsearch_client(
                es, request_timeout=min(es.request_timeout, self.timeout_s), max_retries=1,
                retry_on_timeout=False)
            self._async_loop = loop
        return self._async_es

    async def close_async(self) -> None:
        """Close the asyncio client if it belongs to this loop (another loop's cannot be
        awaited from here; it goes with its loop)."""
        client, loop = self._async_es, self._async_loop
        self._async_es = self._async_loop = None
        if client is not None and loop is asyncio.get_running_loop():
            await client.close()

    def cassandra(self) -> Session:
        """The shared session (keyspace-qualified queries, so no default keyspace)."""
        with self._lock:
            if self._cassandra is None:
                with cassandra_errors(self.settings):
                    session = cassandra_session(self.settings.cassandra,
                                                connect_timeout=self.timeout_s)
                from cassandra.cluster import EXEC_PROFILE_DEFAULT

                session.get_execution_profile(EXEC_PROFILE_DEFAULT).request_timeout = self.timeout_s
                self._cassandra = session
            return self._cassandra

    def producer(self) -> KafkaProducer:
        """A producer for the request and ratings topics, which are created first if missing
        (never left to broker auto-creation, which would pick the broker's partition count)."""
        from recommender.topics import ensure_topics

        with self._lock:
            if self._producer is None:
                ms = int(self.timeout_s * 1000)
                with kafka_errors(self.settings):
                    ensure_topics(self.settings, self.settings.kafka.requests_topic,
                                  self.settings.kafka.ratings_topic, timeout_s=self.timeout_s)
                    self._producer = kafka_producer(
                        self.settings.kafka, linger_ms=5, max_block_ms=ms,
                        request_timeout_ms=ms, delivery_timeout_ms=2 * ms + 5,
                        bootstrap_timeout_ms=ms, allow_auto_create_topics=False)
            return self._producer

    def kafka_admin(self) -> KafkaAdminClient:
        with self._lock:
            if self._admin is None:
                ms = int(self.timeout_s * 1000)
                with kafka_errors(self.settings):
                    self._admin = kafka_admin(self.settings.kafka, bootstrap_timeout_ms=ms,
                                              request_timeout_ms=ms)
            return self._admin

    def reset_kafka_admin(self) -> None:
        """Drop the admin client after a failure so the next health check reconnects."""
        with self._lock:
            admin, self._admin = self._admin, None
        if admin is not None:
            _quietly(admin.close)

    def close(self) -> None:
        """Close every client; a later call opens them again (an app may be started twice)."""
        with self._lock:
            if self._producer is not None:
                _quietly(self._producer.close, timeout=self.timeout_s)
            if self._admin is not None:
                _quietly(self._admin.close)
            if self._cassandra is not None:
                _quietly(self._cassandra.cluster.shutdown)
            if self._es is not None:
                _quietly(self._es.close)
            self._producer = self._admin = self._cassandra = self._es = None


@contextmanager
def es_errors(settings: Settings) -> Iterator[None]:
    """Elasticsearch transport failures and server errors as a 503 that names the node URLs."""
    from elastic_transport import TransportError
    from elasticsearch import ApiError

    where = f"Elasticsearch at {describe_urls(settings.elasticsearch.urls)}"
    try:
        yield
    except TransportError as exc:
        raise BackendUnavailable(
            f"{where} is unavailable: {type(exc).__name__}: {exc.message}") from exc
    except ApiError as exc:
        raise BackendUnavailable(f"{where} answered {exc.meta.status}: {exc.message}") from exc


@contextmanager
def cassandra_errors(settings: Settings) -> Iterator[None]:
    """Driver failures (no host, too few replicas, timeouts, a missing table) as a 503
    naming what failed: with a quorum lost, which consistency level needs how many replicas
    and how many are alive."""
    from cassandra import DriverException, InvalidRequest, Unavailable
    from cassandra.cluster import NoHostAvailable

    where = f"Cassandra at {','.join(settings.cassandra.contact_points)}"
    try:
        yield
    except InvalidRequest as exc:
        raise BackendUnavailable(f"{where} refused the query (is keyspace "
                                 f"{settings.cassandra.keyspace!r} set up?): {exc}") from exc
    except Unavailable as exc:
        raise BackendUnavailable(
            f"{where} cannot answer at cassandra.consistency_level "
            f"{settings.cassandra.consistency_level}: {exc.required_replicas} replicas "
            f"needed, {exc.alive_replicas} alive (a quorum of nodes is down)") from exc
    except (NoHostAvailable, DriverException) as exc:
        raise BackendUnavailable(f"{where} is unavailable: {type(exc).__name__}") from exc


@contextmanager
def kafka_errors(settings: Settings) -> Iterator[None]:
    from kafka.errors import KafkaError

    try:
        yield
    except KafkaError as exc:
        raise BackendUnavailable(
            f"Kafka at {settings.kafka.bootstrap_servers} is unavailable: {exc}") from exc


def _quietly(close: Any, **kwargs: Any) -> None:
    try:
        close(**kwargs)
    except Exception as exc:  # noqa: BLE001 - closing must never fail a shutdown
        log.debug("closing %s failed: %s", close, exc)
