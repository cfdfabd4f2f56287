"""Create the storage contracts of ``recommender.contracts`` where they are missing: the
Cassandra keyspace and tables, and Elasticsearch indices with their strict mappings.

Every writer calls these before its first write, so a fresh cluster needs no setup script
and a rerun is harmless: ``CREATE ... IF NOT EXISTS`` in Cassandra, exists-check plus a
tolerated "already exists" race in Elasticsearch. Existing tables and indices are never
altered; a changed contract needs a migration, not a silent rewrite.

Example::

    session = cassandra_session(settings.cassandra)
    ensure_schema(session, settings, ["movies", "tags"])
    es = elasticsearch_client(settings.elasticsearch)
    ensure_index(es, settings.elasticsearch.indices.movies, MOVIES_MAPPING)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from recommender.contracts import CASSANDRA_TABLES, keyspace_cql
from recommender.errors import BackendUnavailable
from recommender.settings import Settings

if TYPE_CHECKING:
    from cassandra.cluster import Session
    from elasticsearch import Elasticsearch
    from pyspark.sql import SparkSession

DDL_TIMEOUT_S = 60.0  # schema changes wait for agreement across the cluster
# One node cannot hold a replica: 0 keeps the embedded cluster green. Override per call.
DEFAULT_INDEX_SETTINGS: dict[str, Any] = {"number_of_shards": 1, "number_of_replicas": 0}


def ensure_schema(session: Session, settings: Settings,
                  tables: Iterable[str] | None = None) -> None:
    """Create ``settings.cassandra.keyspace`` and the named tables of ``CASSANDRA_TABLES``
    (all of them when ``tables`` is None) if they do not exist."""
    from cassandra import DriverException
    from cassandra.cluster import NoHostAvailable

    keyspace = settings.cassandra.keyspace
    names = list(tables) if tables is not None else list(CASSANDRA_TABLES)
    unknown = [n for n in names if n not in CASSANDRA_TABLES]
    if unknown:
        raise ValueError(f"no Cassandra table named {unknown}; known: {list(CASSANDRA_TABLES)}")
    try:
        for statement in missing_ddl(session, settings, names):
            session.execute(statement, timeout=DDL_TIMEOUT_S)
    except (DriverException, NoHostAvailable) as exc:
        raise BackendUnavailable(f"Cassandra could not create keyspace {keyspace!r} or its "
                                 f"tables {names}: {exc}") from exc


def ensure_tables(settings: Settings, tables: Iterable[str]) -> None:
    """``ensure_schema`` on a session of its own, with a clear error if Cassandra is down: for
    jobs (training, ``stats``) that need a few tables and hold no session."""
    from recommender.clients import cassandra_session

    try:
        session = cassandra_session(settings.cassandra)
    except Exception as exc:  # NoHostAvailable and friends: say which endpoint failed
        raise BackendUnavailable(f"cannot reach Cassandra at {settings.cassandra.contact_points}"
                                 f":{settings.cassandra.port}: {exc}") from exc
    try:
        ensure_schema(session, settings, tables)
    finally:
        session.cluster.shutdown()


def drop_keyspaces(settings: Settings, *keyspaces: str) -> None:
    """Drop the named keyspaces if they exist. For tests and benchmarks, which make their own:
    the pipeline's keyspace is its record, so nothing calls this on it."""
    from recommender.clients import cassandra_session

    session = cassandra_session(settings.cassandra)
    try:
        for keyspace in keyspaces:
            session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}", timeout=120)
    finally:
        session.cluster.shutdown()


def missing_ddl(session: Session, settings: Settings, names: list[str]) -> list[str]:
    """The CREATE statements for what the driver's schema metadata does not show yet. Nothing
    is sent for what exists, so a role without CREATE permission (secure mode, where an
    admin provisions the schema) passes through."""
    keyspace = settings.cassandra.keyspace
    existing = session.cluster.metadata.keyspaces.get(keyspace)
    statements = [] if existing else [keyspace_cql(keyspace,
                                                   settings.cassandra.replication_factor)]
    tables = existing.tables if existing else {}
    return statements + [CASSANDRA_TABLES[name].format(ks=keyspace)
                         for name in names if name not in tables]


def ensure_index(es: Elasticsearch, name: str, mapping: dict[str, Any],
                 index_settings: dict[str, Any] | None = None) -> bool:
    """Create index ``name`` with ``mapping`` unless it exists; True when this call made it."""
    from elastic_transport import ConnectionError as EsConnectionError
    from elasticsearch import BadRequestError

    try:
        if es.indices.exists(index=name):
            return False
        es.indices.create(index=name, mappings=mapping,
                          settings=index_settings or DEFAULT_INDEX_SETTINGS)
        return True
    except BadRequestError as exc:
        if exc.error == "resource_already_exists_exception":  # another writer won the race
            return False
        raise
    except EsConnectionError as exc:
        raise BackendUnavailable(f"Elasticsearch did not answer ({exc}); start it with "
                                 "`recommender stack up` or set "
                                 "RECOMMENDER_ELASTICSEARCH__URL") from exc


def wait_for_connector(spark: SparkSession, keyspace: str, tables: Iterable[str],
                       timeout_s: float = 120.0) -> None:
    """Block until Spark's Cassandra connector sees ``tables``. The connector's schema
    metadata follows DDL events, which a busy node can deliver seconds after the Python
    driver created the tables; a job that wrote before then would fail its first batch."""
    import time

    from pyspark.errors import AnalysisException

    from recommender.clients import CASSANDRA_FORMAT

    deadline = time.monotonic() + timeout_s
    for table in tables:
        while True:
            try:
                reader = spark.read.format(CASSANDRA_FORMAT)
                if reader.options(keyspace=keyspace, table=table).load().columns:
                    break
            except AnalysisException as exc:
                if time.monotonic() > deadline:
                    raise BackendUnavailable(f"Spark's Cassandra connector does not see "
                                             f"{keyspace}.{table} after {timeout_s:.0f}s: "
                                             f"{exc}") from exc
                time.sleep(1.0)
