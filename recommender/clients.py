"""The one place that builds clients: Kafka producer/consumer/admin, the Cassandra session,
the Elasticsearch client and the SparkSession.

Every job gets its connections here, so security settings (SASL/TLS, passwords, API keys)
and tuning are applied once and the same code reaches the embedded stack, docker-compose
or a production cluster by configuration alone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from recommender.errors import BackendUnavailable
from recommender.settings import (
    CassandraSettings,
    ElasticsearchSettings,
    KafkaSettings,
    Settings,
    StackSettings,
)

if TYPE_CHECKING:
    from cassandra.cluster import ExecutionProfile, Session
    from confluent_kafka import Consumer as BulkConsumer
    from confluent_kafka import Producer as BulkProducer
    from elasticsearch import AsyncElasticsearch, Elasticsearch
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
    from pyspark.sql import SparkSession


log = logging.getLogger(__name__)
T = TypeVar("T")
CASSANDRA_FORMAT = "org.apache.spark.sql.cassandra"  # the connector's Spark data source
# Every producer the project runs waits for all in-sync replicas: with min.insync.replicas
# (``kafka.min_insync_replicas``) a record acknowledged survives the loss of a broker.
KAFKA_ACKS = "all"


def kafka_security(kafka: KafkaSettings) -> dict[str, Any]:
    """kafka-python's security options from the settings (empty for PLAINTEXT)."""
    opts: dict[str, Any] = {"security_protocol": kafka.security_protocol}
    if kafka.sasl_mechanism:
        opts["sasl_mechanism"] = kafka.sasl_mechanism
        opts["sasl_plain_username"] = kafka.sasl_username
        opts["sasl_plain_password"] = (
            kafka.sasl_password.get_secret_value() if kafka.sasl_password else None
        )
    if kafka.ssl_cafile:
        opts["ssl_cafile"] = kafka.ssl_cafile
    return opts


def kafka_producer(kafka: KafkaSettings, **overrides: Any) -> KafkaProducer:
    """A producer tuned for throughput with no loss: acks=all, batching, lz4 compression."""
    from kafka import KafkaProducer

    opts: dict[str, Any] = {
        "bootstrap_servers": kafka.bootstrap_servers.split(","),
        "acks": KAFKA_ACKS,
        "linger_ms": 20,
        "batch_size": 256 * 1024,
        "compression_type": "lz4",
        "retries": 10,
        "max_in_flight_requests_per_connection": 1,
        **kafka_security(kafka),
    }
    return KafkaProducer(**{**opts, **overrides})


LIBRDKAFKA_NAMES = {  # kafka-python option -> librdkafka property
    "security_protocol": "security.protocol", "sasl_mechanism": "sasl.mechanism",
    "sasl_plain_username": "sasl.username", "sasl_plain_password": "sasl.password",
    "ssl_cafile": "ssl.ca.location", "ssl_certfile": "ssl.certificate.location",
    "ssl_keyfile": "ssl.key.location",
}


BULK_PRODUCER_TUNING: dict[str, Any] = {
    "acks": KAFKA_ACKS, "enable.idempotence": True, "compression.type": "lz4", "linger.ms": 50,
    "batch.size": 1024 * 1024, "queue.buffering.max.messages": 1_000_000,
    "partitioner": "murmur2_random", "message.timeout.ms": 120_000,
}


def kafka_bulk_producer(kafka: KafkaSettings, **overrides: Any) -> BulkProducer:
    """librdkafka's producer, for bulk replay only: its C send path takes ~1 us per record
    where kafka-python's pure Python takes 10-25 us. Same guarantees as ``kafka_producer``
    (acks=all, idempotent, lz4) and the same key -> partition mapping (murmur2, as Java)."""
    from confluent_kafka import Producer

    conf = {"bootstrap.servers": kafka.bootstrap_servers, **BULK_PRODUCER_TUNING,
            **_librdkafka_security(kafka)}
    return Producer({**conf, **overrides})


def kafka_follower(kafka: KafkaSettings, **overrides: Any) -> BulkConsumer:
    """librdkafka's consumer for a process that follows a topic without a consumer group
    (it assigns partitions itself and never commits): decoding in C keeps up with bulk
    loads, where kafka-python spends tens of microseconds of Python per record."""
    from confluent_kafka import Consumer

    conf = {"bootstrap.servers": kafka.bootstrap_servers, "group.id": "unused-no-commits",
            "enable.auto.commit": False, "enable.auto.offset.store": False,
            **_librdkafka_security(kafka)}
    return Consumer({**conf, **overrides})


def _librdkafka_security(kafka: KafkaSettings) -> dict[str, Any]:
    return {LIBRDKAFKA_NAMES[k]: v for k, v in kafka_security(kafka).items()
            if k in LIBRDKAFKA_NAMES and v is not None}


def kafka_consumer(kafka: KafkaSettings, *topics: str, group_id: str | None,
                   **overrides: Any) -> KafkaConsumer:
    """A consumer that commits only when told to: jobs commit after their sink acknowledged."""
    from kafka import KafkaConsumer

    opts: dict[str, Any] = {
        "bootstrap_servers": kafka.bootstrap_servers.split(","),
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        **kafka_security(kafka),
    }
    return KafkaConsumer(*topics, **{**opts, **overrides})


def kafka_admin(kafka: KafkaSettings, **overrides: Any) -> KafkaAdminClient:
    from kafka import KafkaAdminClient

    opts = {"bootstrap_servers": kafka.bootstrap_servers.split(","), **kafka_security(kafka)}
    return KafkaAdminClient(**{**opts, **overrides})


def cassandra_session(cassandra: CassandraSettings, keyspace: str | None = None,
                      connect_timeout: float = 10.0, wait_s: float = 0.0) -> Session:
    """A session on the contact points; the caller owns ``session.cluster.shutdown()``.

    ``wait_s``: how long to keep retrying, with backoff, while no node answers. Jobs pass
    ``cassandra.connect_wait_s`` so one started while Cassandra restarts waits for it rather
    than exiting; refused credentials are never retried."""
    import time

    from cassandra import AuthenticationFailed
    from cassandra.cluster import NoHostAvailable

    deadline, delay = time.monotonic() + wait_s, 1.0
    while True:
        try:
            return _connect(cassandra, keyspace, connect_timeout)
        except NoHostAvailable as exc:
            errors = exc.errors.values() if isinstance(exc.errors, dict) else exc.errors
            if not wait_s or any(isinstance(e, AuthenticationFailed) for e in errors):
                raise
            if time.monotonic() + delay > deadline:
                raise BackendUnavailable(
                    f"no Cassandra node at {cassandra.contact_points} port "
                    f"{cassandra.port} answered within {wait_s:.0f} s: {exc}") from exc
            log.warning("Cassandra at %s:%d not reachable; retrying in %.0f s",
                        cassandra.contact_points, cassandra.port, delay)
            time.sleep(delay)
            delay = min(2 * delay, 15.0)


def _connect(cassandra: CassandraSettings, keyspace: str | None,
             connect_timeout: float) -> Session:
    from cassandra.auth import PlainTextAuthProvider
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster

    auth = None
    if cassandra.username:
        password = cassandra.password.get_secret_value() if cassandra.password else ""
        auth = PlainTextAuthProvider(username=cassandra.username, password=password)
    cluster = Cluster(
        cassandra.contact_points, port=cassandra.port, auth_provider=auth,
        execution_profiles={EXEC_PROFILE_DEFAULT: cassandra_profile(cassandra)},
        protocol_version=5, connect_timeout=connect_timeout,
    )
    try:
        return cluster.connect(keyspace)
    except Exception:
        cluster.shutdown()  # a failed connect leaves the cluster's threads running
        raise


def cassandra_profile(cassandra: CassandraSettings) -> ExecutionProfile:
    """The sessions' default execution profile: token-aware in the local data centre, every
    statement at ``cassandra.consistency_level`` (as the Spark connector, ``spark_conf``)."""
    from cassandra import ConsistencyLevel
    from cassandra.cluster import ExecutionProfile
    from cassandra.policies import DCAwareRoundRobinPolicy, TokenAwarePolicy

    return ExecutionProfile(
        load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy(local_dc=cassandra.local_dc)),
        request_timeout=cassandra.request_timeout_s,
        consistency_level=ConsistencyLevel.name_to_value[cassandra.consistency_level],
    )


def elasticsearch_client(es: ElasticsearchSettings, **overrides: Any) -> Elasticsearch:
    from elasticsearch import Elasticsearch

    return Elasticsearch(es.urls, **{**_elasticsearch_options(es), **overrides})


def async_elasticsearch_client(es: ElasticsearchSettings, **overrides: Any) -> AsyncElasticsearch:
    """The asyncio client (aiohttp), for API routes that only wait on Elasticsearch: no
    thread-pool hop per request, about half the API's CPU per request."""
    from elasticsearch import AsyncElasticsearch

    return AsyncElasticsearch(es.urls, **{**_elasticsearch_options(es), **overrides})


def _elasticsearch_options(es: ElasticsearchSettings) -> dict[str, Any]:
    """Both clients get every node of ``es.urls`` (they fail over between them) and parse
    responses with orjson: a few times faster than the standard library on search hits, and
    a quarter of the shipper's CPU went to parsing bulk responses."""
    from elasticsearch.serializer import OrjsonSerializer

    opts: dict[str, Any] = {"request_timeout": es.request_timeout,
                            "serializer": OrjsonSerializer()}
    if es.api_key:
        opts["api_key"] = es.api_key.get_secret_value()
    elif es.username:
        opts["basic_auth"] = (es.username, es.password.get_secret_value() if es.password else "")
    if es.ca_certs:
        opts["ca_certs"] = es.ca_certs
    if any(url.startswith("https") for url in es.urls):
        opts["verify_certs"] = es.verify_certs
    return opts


def describe_urls(urls: Iterable[str]) -> str:
    """Node URLs for a message: scheme, host and port of each, never credentials."""
    from urllib.parse import urlsplit

    shown = []
    for url in urls:
        parts = urlsplit(url)
        port = f":{parts.port}" if parts.port else ""
        shown.append(f"{parts.scheme}://{parts.hostname}{port}" if parts.hostname else url)
    return ", ".join(shown)


def try_urls(urls: Sequence[str], request: Callable[[str], T],
             connection_errors: tuple[type[BaseException], ...] = (OSError,)) -> T:
    """``request(url)`` on each of ``urls`` in turn until one connects, for raw HTTP beside
    the Elasticsearch clients (which fail over by themselves). Only ``connection_errors``
    move on to the next node; when every node fails, ``BackendUnavailable`` names them all.

    Example::

        health = try_urls(es.urls, lambda url: httpx.get(f"{url}/_cluster/health"),
                          (httpx.TransportError,))
    """
    failures = []
    for url in urls:
        try:
            return request(url)
        except connection_errors as exc:
            log.debug("%s did not answer, trying the next node: %s", describe_urls([url]), exc)
            failures.append(f"{describe_urls([url])}: {exc}")
    raise BackendUnavailable(f"no Elasticsearch node of {describe_urls(urls)} answered ("
                             f"{'; '.join(failures) or 'no URL given'})")


def spark_jars(stack: StackSettings) -> list[Path]:
    """The Kafka source/sink and Cassandra connector jars, fetched ahead of time (offline start)."""
    from recommender.runtime import maven_classpath

    return maven_classpath("spark", stack.cache_dir)


# The ingest job hands the connector each user's ratings side by side, and the connector
# groups rows by Cassandra partition: 64 KiB lets one unlogged batch carry a user's ratings
# where the 1 KiB default cut them into batches of about 20 (Cassandra CPU per rating down by
# about a quarter). Single-partition batches are exempt from Cassandra's
# batch_size_fail_threshold. ``spark.extra_conf`` overrides it.
CONNECTOR_WRITE_DEFAULTS = {"spark.cassandra.output.batch.size.bytes": str(64 * 1024)}


def spark_session(settings: Settings, app_name: str | None = None) -> SparkSession:
    """The SparkSession every job uses; ``spark.master`` decides local or cluster.

    Jars come from the local Maven cache instead of ``--packages`` so that jobs start without
    the network; on a cluster the same list ships to executors through ``spark.jars``.
    """
    import os
    import sys

    from pyspark.sql import SparkSession

    spark = settings.spark
    # PySpark starts its Python workers with $PYSPARK_PYTHON (the conf alone is not read).
    os.environ.setdefault("PYSPARK_PYTHON", spark.python or sys.executable)
    builder = (
        SparkSession.builder.master(spark.master)
        .appName(app_name or spark.app_name)
        .config("spark.jars", ",".join(str(j) for j in spark_jars(settings.stack)))
    )
    for key, value in spark_conf(settings).items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("WARN")
    _quiet_kafka_consumer_warning(session)
    return session


def spark_conf(settings: Settings) -> dict[str, str]:
    """The SparkSession's options besides master, app name and jars; ``spark.extra_conf``
    overrides any of them."""
    import sys

    spark, cass = settings.spark, settings.cassandra
    conf = {
        "spark.driver.memory": spark.driver_memory,
        "spark.executor.memory": spark.executor_memory,
        "spark.sql.shuffle.partitions": str(spark.sql_shuffle_partitions),
        "spark.sql.session.timeZone": "UTC",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.pyspark.python": spark.python or sys.executable,
        # half a second less per Python task on Python 3.10-3.11 (see the module)
        "spark.python.daemon.module": "recommender.pyspark_daemon",
        "spark.sql.extensions": "com.datastax.spark.connector.CassandraSparkExtensions",
        "spark.cassandra.connection.host": ",".join(cass.contact_points),
        "spark.cassandra.connection.port": str(cass.port),
        "spark.cassandra.connection.localDC": cass.local_dc,
        # as the Python driver's (``_connect``); the connector's own defaults differ
        # (LOCAL_QUORUM writes, LOCAL_ONE reads)
        "spark.cassandra.output.consistency.level": cass.consistency_level,
        "spark.cassandra.input.consistency.level": cass.consistency_level,
        **CONNECTOR_WRITE_DEFAULTS,
    }
    if spark.cores_max is not None:
        conf["spark.cores.max"] = str(spark.cores_max)
    if spark.executor_cores is not None:
        conf["spark.executor.cores"] = str(spark.executor_cores)
    if spark.driver_host is not None:
        conf["spark.driver.host"] = conf["spark.driver.bindAddress"] = spark.driver_host
    if cass.username:
        conf["spark.cassandra.auth.username"] = cass.username
        conf["spark.cassandra.auth.password"] = (
            cass.password.get_secret_value() if cass.password else "")
    return {**conf, **spark.extra_conf}


def _quiet_kafka_consumer_warning(session: SparkSession) -> None:
    """Spark's Kafka source warns once per record read outside the task's own thread, which
    is where a Python UDF's input is read (the predictor): 50,000 log lines per micro-batch,
    about a possible hang on interrupt (KAFKA-1894) that does not depend on the record. In
    local mode the executors share this JVM; on a cluster set the same level in the
    executors' log4j2.properties."""
    jvm = session.sparkContext._jvm
    jvm.org.apache.logging.log4j.core.config.Configurator.setLevel(
        "org.apache.spark.sql.kafka010.consumer.KafkaDataConsumer",
        jvm.org.apache.logging.log4j.Level.ERROR)


def spark_kafka_options(kafka: KafkaSettings) -> dict[str, str]:
    """``kafka.*`` options for Spark's Kafka source and sink, security included."""
    opts = {"kafka.bootstrap.servers": kafka.bootstrap_servers,
            "kafka.security.protocol": kafka.security_protocol}
    if kafka.sasl_mechanism:
        module = ("org.apache.kafka.common.security.plain.PlainLoginModule"
                  if kafka.sasl_mechanism == "PLAIN"
                  else "org.apache.kafka.common.security.scram.ScramLoginModule")
        password = kafka.sasl_password.get_secret_value() if kafka.sasl_password else ""
        opts["kafka.sasl.mechanism"] = kafka.sasl_mechanism
        opts["kafka.sasl.jaas.config"] = (
            f'{module} required username="{kafka.sasl_username}" password="{password}";'
        )
    if kafka.ssl_cafile:
        opts["kafka.ssl.truststore.type"] = "PEM"
        opts["kafka.ssl.truststore.location"] = kafka.ssl_cafile
    return opts


def spark_kafka_sink_options(kafka: KafkaSettings) -> dict[str, str]:
    """``spark_kafka_options`` plus what only a producer takes: acks from ``KAFKA_ACKS``, as
    every other producer of the project (the source's consumer would warn about it)."""
    return {**spark_kafka_options(kafka), "kafka.acks": KAFKA_ACKS}
