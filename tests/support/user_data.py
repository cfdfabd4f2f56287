"""What a user's stack holds under the names a deployment uses by default: the suite must
leave it exactly as it found it (``tests/test_user_data.py`` compares the two snapshots).

A snapshot is taken before the first test and after the last: every Elasticsearch index,
alias and index template of the default names with its document count, the end offsets of
the default topics, the default keyspace's tables, and the versions in the default models
directory. Reading changes none of them (a refresh only makes indexed documents countable).
"""

from __future__ import annotations

from typing import Any

from recommender.contracts import IndexNames
from recommender.settings import Settings
from recommender.topics import TOPIC_FIELDS

TEMPLATES = ("recommender-ratings", "recommender-predictions", "recommender-latest-predictions")


def snapshot(base: Settings) -> dict[str, Any]:
    """The default names' contents, reached through ``base``'s endpoints."""
    defaults = Settings(_env_file=None, kafka=base.kafka.model_dump(exclude=set(TOPIC_FIELDS)),
                        cassandra=base.cassandra.model_dump(exclude={"keyspace"}),
                        elasticsearch=base.elasticsearch.model_dump(exclude={"index_prefix"}))
    return {"elasticsearch": _elasticsearch(defaults), "kafka": _kafka(defaults),
            "cassandra": _cassandra(defaults), "models": _models(defaults)}


def _elasticsearch(settings: Settings) -> dict[str, Any]:
    from recommender.clients import elasticsearch_client

    names = IndexNames()
    es = elasticsearch_client(settings.elasticsearch)
    try:
        patterns = ",".join(names.patterns())
        found = dict(es.indices.get(index=patterns, ignore_unavailable=True,
                                    allow_no_indices=True, expand_wildcards="all"))
        counts = {}
        if found:
            es.indices.refresh(index=",".join(found))
            stats = es.indices.stats(index=",".join(found), metric="docs")["indices"]
            counts = {index: body["primaries"]["docs"]["count"] for index, body in stats.items()}
        templates = es.indices.get_index_template()
        return {"indices": counts,
                "aliases": {index: sorted(body.get("aliases", {}))
                            for index, body in found.items()},
                "templates": sorted(t["name"] for t in templates["index_templates"]
                                    if t["name"] in TEMPLATES)}
    finally:
        es.close()


def _kafka(settings: Settings) -> dict[str, dict[int, int]]:
    """End offsets of the default topics that exist (asking for a missing topic's partitions
    could auto-create it)."""
    from recommender.clients import kafka_admin
    from recommender.offsets import topic_end_offsets

    admin = kafka_admin(settings.kafka)
    try:
        existing = set(admin.list_topics())
    finally:
        admin.close()
    return {topic: topic_end_offsets(settings, topic)
            for topic in (getattr(settings.kafka, field) for field in TOPIC_FIELDS)
            if topic in existing}


def _cassandra(settings: Settings) -> list[str]:
    from recommender.clients import cassandra_session

    session = cassandra_session(settings.cassandra)
    try:
        rows = session.execute("SELECT table_name FROM system_schema.tables "
                               "WHERE keyspace_name = %s", (settings.cassandra.keyspace,))
        return sorted(row.table_name for row in rows)
    finally:
        session.cluster.shutdown()


def _models(settings: Settings) -> list[str]:
    root = settings.model.models_dir
    return sorted(p.name for p in root.iterdir()) if root.is_dir() else []
