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

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from recommender.contracts import CASSANDRA_TABLES, keyspace_cql
from recommender.errors import BackendUnavailable
from recommender.indices import index_settings as default_index_settings
from recommender.indices import warn_about_replicas
from recommender.settings import CassandraSettings, Settings

if TYPE_CHECKING:
    from cassandra.cluster import Session
    from cassandra.metadata import KeyspaceMetadata
    from elasticsearch import Elasticsearch
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)
DDL_TIMEOUT_S = 60.0  # schema changes wait for agreement across the cluster
# Consistency levels that answer from one replica: on a cluster a read may miss a write
# that another replica took.
SINGLE_REPLICA_LEVELS = ("ONE", "LOCAL_ONE")


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
    warn_about_replication(session, settings.cassandra)
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


def replication_warnings(cassandra: CassandraSettings, nodes: int,
                         keyspace_replicas: int | None = None) -> list[str]:
    """What is wrong with ``cassandra``'s replication and consistency on a cluster of
    ``nodes`` nodes; empty when nothing is. ``keyspace_replicas``: the replication factor
    (in the local data centre) of the keyspace when it exists already, which is what the
    data gets; Cassandra keeps it whatever the settings say."""
    rf = cassandra.replication_factor if keyspace_replicas is None else keyspace_replicas
    source = ("cassandra.replication_factor" if keyspace_replicas is None
              else f"the replication factor of keyspace {cassandra.keyspace!r}")
    warnings = []
    if keyspace_replicas is not None and keyspace_replicas != cassandra.replication_factor:
        warnings.append(f"keyspace {cassandra.keyspace!r} has replication factor "
                        f"{keyspace_replicas} but cassandra.replication_factor is "
                        f"{cassandra.replication_factor}: the keyspace is kept as it is "
                        "(ALTER KEYSPACE, then nodetool repair, to change it)")
    if nodes > 1 and rf == 1:
        fix = (f"set cassandra.replication_factor to {min(nodes, 3)} "
               "(RECOMMENDER_CASSANDRA__REPLICATION_FACTOR) before the keyspace is created"
               if keyspace_replicas is None else "ALTER KEYSPACE, then nodetool repair")
        warnings.append(f"{source} is 1 on a cluster of {nodes} nodes: losing a node loses "
                        f"the data it holds; {fix}")
    if nodes > 1 and cassandra.consistency_level in SINGLE_REPLICA_LEVELS:
        warnings.append(f"cassandra.consistency_level is {cassandra.consistency_level} on a "
                        f"cluster of {nodes} nodes: a read may miss a write another replica "
                        "took; LOCAL_QUORUM reads what the last write acknowledged")
    if rf > nodes:
        level = cassandra.consistency_level
        needed = replicas_needed(level, rf)
        consequence = (f"every read and write at {level} (cassandra.consistency_level) fails: "
                       f"it waits for {needed} replicas" if needed > nodes
                       else f"only {nodes} copies exist, of which {needed} must answer at "
                       f"{level}, so fewer nodes may be lost than {rf} replicas promise")
        warnings.append(f"{source} is {rf} but the cluster has {nodes} node(s): "
                        f"{consequence}")
    return warnings


def replicas_needed(consistency_level: str, replication_factor: int) -> int:
    """How many replicas must answer a request at ``consistency_level``."""
    if consistency_level in SINGLE_REPLICA_LEVELS:
        return 1
    if consistency_level == "ALL":
        return replication_factor
    return replication_factor // 2 + 1  # QUORUM, LOCAL_QUORUM


def keyspace_replication(keyspace: KeyspaceMetadata | None, local_dc: str) -> int | None:
    """The replication factor of ``keyspace`` in ``local_dc`` (None: no such keyspace, or a
    strategy this cannot read)."""
    if keyspace is None:
        return None
    strategy = keyspace.replication_strategy
    if hasattr(strategy, "dc_replication_factors"):  # NetworkTopologyStrategy
        return strategy.dc_replication_factors.get(local_dc)
    return getattr(strategy, "replication_factor", None)


def warn_about_replication(session: Session, cassandra: CassandraSettings) -> None:
    """Log ``replication_warnings`` for the cluster ``session`` reaches: its nodes are the
    rows of ``system.peers`` and the coordinator. Advice only: a failed look-up is skipped."""
    from cassandra import DriverException
    from cassandra.cluster import NoHostAvailable

    try:
        nodes = len(list(session.execute("SELECT peer FROM system.peers"))) + 1
    except (DriverException, NoHostAvailable) as exc:
        log.debug("cannot count Cassandra nodes, replication not checked: %s", exc)
        return
    existing = keyspace_replication(session.cluster.metadata.keyspaces.get(cassandra.keyspace),
                                    cassandra.local_dc)
    for warning in replication_warnings(cassandra, nodes, existing):
        log.warning("%s", warning)


def ensure_index(es: Elasticsearch, name: str, mapping: dict[str, Any],
                 index_settings: dict[str, Any] | None = None, replicas: int = 0) -> bool:
    """Create index ``name`` with ``mapping`` unless it exists; True when this call made it.
    It gets ``replicas`` replicas (``elasticsearch.number_of_replicas``) unless
    ``index_settings`` replaces its settings."""
    from elastic_transport import ConnectionError as EsConnectionError
    from elasticsearch import BadRequestError

    try:
        if es.indices.exists(index=name):
            return False
        warn_about_replicas(es, replicas)
        es.indices.create(index=name, mappings=mapping,
                          settings=index_settings or default_index_settings(replicas))
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
