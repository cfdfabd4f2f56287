"""Private names for one test: its own topics, consumer groups, Spark checkpoints and, when
asked, Cassandra keyspace, so it reads only what it wrote and a rerun starts from nothing.

Every name handed out is remembered, and ``drop_remembered`` deletes them, with the replay
progress files of the topics, when the session ends: the development stack lives for weeks,
and each run's topics, keyspaces and indices would otherwise pile up in it (every Cassandra
table holds on to heap). Elasticsearch names are private through
``elasticsearch.index_prefix``: everything under a remembered prefix (indices, their
aliases, index templates) is deleted.
"""

from __future__ import annotations

import uuid
import warnings
from typing import Any

from recommender.settings import Settings
from recommender.topics import TOPIC_FIELDS, ensure_topics

# name -> settings that can reach it, for every topic and keyspace handed out
_topics: dict[str, Settings] = {}
_keyspaces: dict[str, Settings] = {}
_index_prefixes: dict[str, Settings] = {}


def remember(settings: Settings) -> Settings:
    """Have ``drop_remembered`` delete these settings' topics and keyspace: only names made
    for tests (``it-``, ``it_``), so a demo's or a user's data can never be dropped."""
    for field in TOPIC_FIELDS:
        if (topic := getattr(settings.kafka, field)).startswith("it-"):
            _topics[topic] = settings
    if settings.cassandra.keyspace.startswith("it_"):
        _keyspaces[settings.cassandra.keyspace] = settings
    if settings.elasticsearch.index_prefix.startswith("it-"):
        _index_prefixes[settings.elasticsearch.index_prefix] = settings
    return settings


def drop_remembered() -> None:
    """Delete every remembered topic and keyspace that exists; a failure only warns, so an
    unreachable stack (a unit-test run) never fails the session."""
    from recommender.cassandra_schema import drop_keyspaces
    from recommender.topics import delete_topics

    if not _topics and not _keyspaces and not _index_prefixes:
        return
    anyone = next(iter({**_topics, **_keyspaces, **_index_prefixes}.values()))
    replayed, keyspaces, prefixes = dict(_topics), list(_keyspaces), list(_index_prefixes)
    _topics.clear()
    _keyspaces.clear()
    _index_prefixes.clear()
    steps = {"topics": lambda: delete_topics(anyone, *replayed),
             "replay progress files": lambda: forget_replay_progress(replayed),
             "keyspaces": lambda: drop_keyspaces(anyone, *keyspaces),
             "indices": lambda: drop_indices(anyone, *prefixes)}
    for what, step in steps.items():  # each on its own: one failure must not skip the rest
        try:
            step()
        except Exception as exc:  # noqa: BLE001 - cleanup must not fail the test session
            warnings.warn(f"could not drop this session's {what}: {exc}", stacklevel=1)


def forget_replay_progress(topics: dict[str, Settings] | None = None) -> None:
    """Delete the replay progress files of ``topics`` (default: every remembered topic), in
    the state directory of the settings that reached them, whichever stack they were on."""
    from data_loading.replay import forget_progress

    for topic, settings in (_topics if topics is None else topics).items():
        forget_progress(settings, topic)


def drop_indices(settings: Settings, *prefixes: str) -> None:
    """Delete every index and index template under ``prefixes`` (by name: Elasticsearch
    refuses wildcard deletes)."""
    from recommender.clients import elasticsearch_client

    es = elasticsearch_client(settings.elasticsearch)
    try:
        for prefix in prefixes:
            indices = list(es.indices.get(index=f"{prefix}*", expand_wildcards="all"))
            for start in range(0, len(indices), 50):
                es.indices.delete(index=",".join(indices[start:start + 50]))
            templates = es.options(ignore_status=404).indices.get_index_template(name=f"{prefix}*")
            for template in templates.get("index_templates", []):
                es.indices.delete_index_template(name=template["name"])
    finally:
        es.close()


def private(settings: Settings, name: str, *, own_keyspace: bool = False,
            **spark: Any) -> Settings:
    """``settings`` with private topics (created), groups and checkpoints; ``own_keyspace``
    also gives a private keyspace (else the session's, which holds ml-latest-small), and
    ``spark`` overrides Spark settings such as ``max_offsets_per_trigger``."""
    suffix = f"{name}-{uuid.uuid4().hex[:6]}"
    kafka = settings.kafka.model_copy(update={
        **{field: f"it-{suffix}-{field.removesuffix('_topic').replace('_', '-')}"
           for field in TOPIC_FIELDS},
        "predictor_group": f"it-{suffix}-predictor", "shipper_group": f"it-{suffix}-shipper"})
    update: dict[str, Any] = {"kafka": kafka, "spark": settings.spark.model_copy(update={
        "checkpoint_dir": settings.spark.checkpoint_dir / suffix, **spark})}
    if own_keyspace:
        update["cassandra"] = settings.cassandra.model_copy(
            update={"keyspace": f"it_{suffix}".replace("-", "_")})
    own = remember(settings.model_copy(update=update))
    ensure_topics(own, *(getattr(kafka, field) for field in TOPIC_FIELDS))
    return own
