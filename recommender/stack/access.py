"""Who may do what in secure mode: one account per component, least privilege, in one table.

Each component of the pipeline authenticates as itself to Kafka (a SCRAM user), Cassandra (a
role) and Elasticsearch (a file-realm user) with the same name, and gets exactly the rights
its code uses: the loader may write the ratings topic but not read it, the API may read the
predictions indices but not write them, nothing but ``admin`` may create a keyspace, a topic
or an ACL. Schema, topics and index templates are created by ``admin`` when the stack is
provisioned (``recommender stack up --secure`` / ``stack provision``), so the components'
own ``CREATE ... IF NOT EXISTS`` calls find everything in place.

The table names the Kafka topics and groups by their settings field (``ratings_topic``), so
renamed or per-test topics get the same rights.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from recommender import contracts
from recommender.settings import KafkaSettings

ADMIN = "admin"  # the stack's own superuser in all three systems; never handed to a component
SPARK_GROUP_PREFIX = "spark-kafka-"  # Spark's Kafka source names its consumer groups so

READ, WRITE = "READ", "WRITE"  # Kafka operations; both imply DESCRIBE
SELECT, MODIFY = "SELECT", "MODIFY"  # Cassandra permissions
# The embedded secure stack's roles name the default (unprefixed) indices.
_NAMES = contracts.IndexNames()
RATINGS_INDICES = f"{_NAMES.ratings_prefix}*"
PREDICTION_INDICES = (_NAMES.predictions_alias, f"{_NAMES.predictions_prefix}*",
                      _NAMES.latest_predictions)
VECTOR_INDICES = (_NAMES.movie_vectors, f"{_NAMES.movie_vectors}-*")
# write documents, auto-create, add a newer release's fields to an existing index
WRITE_INDEX = ("create_index", "view_index_metadata", "index", "indices:admin/mapping/put")
# ``recommender.indices.setup``, which ingest, training and the shipper run before they write
# (idempotent):
# the index templates, and the fixed indices created when missing.
SETUP_CLUSTER = ("manage_index_templates",)
SETUP_INDICES = ((_NAMES.movies, _NAMES.user_taste),
                 ("create_index", "view_index_metadata"))


@dataclass(frozen=True)
class Component:
    """One account and its rights. ``topics`` maps a ``KafkaSettings`` topic field to the
    operation (or operations) allowed on it; ``indices`` pairs Elasticsearch index names
    with privileges."""

    name: str
    runs: str
    tables: dict[str, tuple[str, ...]] = field(default_factory=dict)
    topics: dict[str, str | tuple[str, ...]] = field(default_factory=dict)
    groups: tuple[str, ...] = ()
    spark: bool = False  # reads Kafka through Spark, whose consumer groups are generated
    es_cluster: tuple[str, ...] = ()
    indices: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = ()

    def kafka_topics(self, kafka: KafkaSettings) -> dict[str, tuple[str, ...]]:
        """Topic name -> operations, with the names these settings give."""
        return {getattr(kafka, name): (ops,) if isinstance(ops, str) else ops
                for name, ops in self.topics.items()}

    def kafka_groups(self, kafka: KafkaSettings) -> list[str]:
        return [getattr(kafka, name) for name in self.groups]

    def es_role(self) -> dict[str, Any]:
        """The Elasticsearch role descriptor (``roles.yml`` entry)."""
        return {"cluster": list(self.es_cluster),
                "indices": [{"names": list(names), "privileges": list(privileges)}
                            for names, privileges in self.indices]}


COMPONENTS: tuple[Component, ...] = (
    Component(
        "loader", "recommender load ratings / load metadata / generate",
        tables={"movies": (MODIFY,), "tags": (MODIFY,)},
        topics={"ratings_topic": WRITE},
        indices=(((_NAMES.movies,), (*WRITE_INDEX, "maintenance")),),
    ),
    Component(
        "ingest", "recommender ingest",
        tables={"ratings": (MODIFY,), "tags": (MODIFY,), "movies": (SELECT,)},
        topics={"ratings_topic": READ, "ratings_dlq_topic": WRITE}, spark=True,
        es_cluster=("monitor", *SETUP_CLUSTER),
        indices=(((RATINGS_INDICES,), WRITE_INDEX), SETUP_INDICES),
    ),
    Component(
        "trainer", "recommender train / models / es publish-vectors",
        tables={"ratings": (SELECT,), "movies": (SELECT,), "user_taste": (MODIFY,),
                "similar_users": (MODIFY,)},
        es_cluster=SETUP_CLUSTER,
        indices=((VECTOR_INDICES, ("manage", "index", "read")), SETUP_INDICES,
                 ((_NAMES.user_taste,), ("index", "maintenance"))),
    ),
    Component(
        "predictor", "recommender predict / rollover",
        tables={"ratings": (SELECT,), "movies": (SELECT,)},
        topics={"requests_topic": READ, "predictions_topic": WRITE, "requests_dlq_topic": WRITE},
        groups=("predictor_group",), spark=True,
    ),
    Component(
        "shipper", "recommender ship",
        topics={"predictions_topic": READ, "predictions_dlq_topic": WRITE},
        groups=("shipper_group",),
        es_cluster=("monitor", *SETUP_CLUSTER),
        indices=((PREDICTION_INDICES, WRITE_INDEX), SETUP_INDICES),
    ),
    Component(
        "api", "recommender serve",
        tables={"ratings": (SELECT,), "movies": (SELECT,), "user_taste": (SELECT,),
                "similar_users": (SELECT,)},
        topics={"requests_topic": WRITE, "ratings_topic": (WRITE, READ)},  # POST /ratings;
        # it follows the ratings topic to keep the users' ratings it serves current
        es_cluster=("monitor",),
        indices=(((*PREDICTION_INDICES, *VECTOR_INDICES, _NAMES.movies,
                   _NAMES.user_taste, RATINGS_INDICES), ("read", "view_index_metadata")),),
    ),
)
ACCOUNTS = (ADMIN, *(c.name for c in COMPONENTS))


def component(name: str) -> Component:
    for candidate in COMPONENTS:
        if candidate.name == name:
            return candidate
    raise ValueError(f"no component {name!r}; one of {', '.join(c.name for c in COMPONENTS)}")


def es_role_name(name: str) -> str:
    return f"recommender_{name}"


def es_roles() -> dict[str, dict[str, Any]]:
    """Every component's role, as ``roles.yml`` holds them."""
    return {es_role_name(c.name): c.es_role() for c in COMPONENTS}


def es_user_roles() -> dict[str, list[str]]:
    """``users_roles``: role -> users; admin is Elasticsearch's built-in ``superuser``."""
    return {"superuser": [ADMIN], **{es_role_name(c.name): [c.name] for c in COMPONENTS}}


def cassandra_grants(keyspace: str) -> list[str]:
    """The GRANT statements of every component on the tables of ``keyspace``."""
    return [f"GRANT {permission} ON TABLE {keyspace}.{table} TO {c.name}"
            for c in COMPONENTS for table, permissions in c.tables.items()
            for permission in permissions]
