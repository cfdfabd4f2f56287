"""Elasticsearch index templates, aliases and retention: ``recommender es setup``.

Time-based indices (``ratings-YYYY`` by event year, ``predictions-YYYY.MM.DD`` by day) take
their mappings from index templates, so a new period's index is right from its first
document. Every call here is idempotent.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from recommender import contracts

if TYPE_CHECKING:
    from collections.abc import Iterable

    from elasticsearch import Elasticsearch


log = logging.getLogger(__name__)
CONFLICT = 409


class BulkRetry(Exception):
    """Elasticsearch answered 429/5xx for part of a bulk request: resend the batch."""


# Only what bulk_index reads: every item keeps its place (for positions) but only its status
# and error, a tenth of the response to parse.
BULK_RESULT_FIELDS = "errors,items.*.status,items.*.error.type,items.*.error.reason"


def bulk_index(es: Elasticsearch, body: bytes) -> list[tuple[int, str]]:
    """Send one NDJSON bulk body; return (position, reason) of the documents it rejected.

    Transport errors and 429/5xx item failures raise, so the caller resends the whole body
    (ids are deterministic, so a resend overwrites); 4xx item failures (mapping conflicts)
    are permanent and are returned for the dead letters. A 409 is not a failure: only
    versioned writes conflict, and a conflict means a newer document is already there.
    """
    response = es.bulk(operations=body, refresh=False, filter_path=BULK_RESULT_FIELDS)
    if not response.get("errors"):
        return []
    rejected, retry = [], False
    for position, item in enumerate(response["items"]):
        result = next(iter(item.values()))
        status = result.get("status", 200)
        if status >= 300 and status != CONFLICT:
            if status == 429 or status >= 500:
                retry = True
            else:
                error = result.get("error", {})
                rejected.append((position, f"{error.get('type')}: {error.get('reason')}"))
    if retry:
        raise BulkRetry("Elasticsearch asked to retry part of a bulk request")
    return rejected


def index_settings(replicas: int = 0, refresh_interval: str = "1s") -> dict[str, Any]:
    """The settings of every index the project creates, templates included: one shard, and
    ``replicas`` copies of it (``elasticsearch.number_of_replicas``; 0 keeps a single node
    green, 1 on a cluster loses no shard with a node)."""
    return {"number_of_shards": 1, "number_of_replicas": replicas,
            "refresh_interval": refresh_interval}


# Charts of ratings per day need no second-old data; fewer refreshes mean fewer tiny segments
# to merge while a backlog streams in.
RATINGS_REFRESH = "30s"


def replica_warnings(replicas: int, data_nodes: int) -> list[str]:
    """What is wrong with ``replicas`` (``elasticsearch.number_of_replicas``) on a cluster of
    ``data_nodes`` data nodes; empty when nothing is. Neither stops a write: without replicas
    a node's loss loses its shards, and a replica that has no node of its own stays
    unassigned (the cluster stays yellow)."""
    warnings = []
    if data_nodes > 1 and replicas == 0:
        warnings.append(f"elasticsearch.number_of_replicas is 0 on a cluster of {data_nodes} "
                        "data nodes: losing one loses the shards it holds; set it to 1 "
                        "(RECOMMENDER_ELASTICSEARCH__NUMBER_OF_REPLICAS)")
    if data_nodes and replicas >= data_nodes:
        warnings.append(f"elasticsearch.number_of_replicas is {replicas} on a cluster of "
                        f"{data_nodes} data node(s): each shard needs {replicas + 1} nodes, so "
                        f"the indices stay yellow; set it to at most {data_nodes - 1}")
    return warnings


def warn_about_replicas(es: Elasticsearch, replicas: int) -> None:
    """Log ``replica_warnings`` for the cluster ``es`` reaches. Skipped (debug log) when the
    account may not read cluster health: the check advises, it never stops a writer."""
    from elastic_transport import TransportError
    from elasticsearch import ApiError

    try:
        data_nodes = es.cluster.health(filter_path="number_of_data_nodes")["number_of_data_nodes"]
    except (ApiError, TransportError, KeyError) as exc:
        log.debug("cannot count Elasticsearch data nodes, replicas not checked: %s", exc)
        return
    for warning in replica_warnings(replicas, data_nodes):
        log.warning("%s", warning)


RATINGS_TEMPLATES = ("recommender-ratings",)
PREDICTIONS_TEMPLATES = ("recommender-predictions", "recommender-latest-predictions")


def templates(names: contracts.IndexNames, replicas: int = 0) -> dict[str, dict[str, Any]]:
    """The index templates, by their unprefixed name, for ``names``; their indices get
    ``replicas`` replicas."""
    return {
        "recommender-ratings": {
            "index_patterns": [f"{names.ratings_prefix}*"],
            "template": {"settings": index_settings(replicas, RATINGS_REFRESH),
                         "mappings": contracts.RATINGS_MAPPING},
        },
        "recommender-predictions": {
            "index_patterns": [f"{names.predictions_prefix}*"],
            "template": {
                "settings": index_settings(replicas),
                "mappings": contracts.PREDICTIONS_MAPPING,
                "aliases": {names.predictions_alias: {}},
            },
        },
        # One fixed index, but a template all the same: whoever writes first (the shipper,
        # or Logstash in docker-compose) creates it with the right mapping.
        "recommender-latest-predictions": {
            "index_patterns": [names.latest_predictions],
            "template": {"settings": index_settings(replicas),
                         "mappings": contracts.LATEST_PREDICTIONS_MAPPING},
        },
    }


def ratings_index(names: contracts.IndexNames, event_time_ms: int) -> str:
    """Ratings span decades of event time: one index per event year keeps the count small."""
    return f"{names.ratings_prefix}{datetime.fromtimestamp(event_time_ms / 1000, UTC):%Y}"


DAY_MS = 86_400_000


def predictions_index(names: contracts.IndexNames, predicted_at_ms: int) -> str:
    """Daily indices; the shipper asks once per document, so the day's name is cached."""
    return names.predictions_prefix + _day(predicted_at_ms // DAY_MS)


@lru_cache(maxsize=64)
def _day(day: int) -> str:
    return f"{datetime.fromtimestamp(day * DAY_MS / 1000, UTC):%Y.%m.%d}"


def setup(es: Elasticsearch, names: contracts.IndexNames, shards: dict[str, Any] | None = None,
          upgrade: Iterable[str] = (*RATINGS_TEMPLATES, *PREDICTIONS_TEMPLATES),
          replicas: int = 0) -> list[str]:
    """Install the index templates and create the fixed indices; return what was created.

    New indices get ``replicas`` replicas (pass ``elasticsearch.number_of_replicas``; a
    warning says when the cluster's data nodes do not fit it); ``shards`` overrides the fixed
    indices' settings. Existing indices of the ``upgrade`` templates get the fields they lack
    (``add_new_fields``). Components name only the templates of the indices they write,
    which their role may update.
    """
    warn_about_replicas(es, replicas)
    created = []
    bodies = templates(names, replicas)
    for name, body in bodies.items():
        es.indices.put_index_template(name=names.template(name), **body, priority=100)
    for name in upgrade:
        add_new_fields(es, bodies[name])
    for index, mapping in ((names.movies, contracts.MOVIES_MAPPING),
                           (names.user_taste, contracts.USER_TASTE_MAPPING)):
        if not es.indices.exists(index=index) and _create(
                es, index, shards or index_settings(replicas), mapping):
            created.append(index)
    return created


def _create(es: Elasticsearch, index: str, settings: dict[str, Any],
            mappings: dict[str, Any]) -> bool:
    """Create ``index``; False when another component created it first (ingest and the
    shipper set up the same fixed indices when they start together)."""
    from elasticsearch import BadRequestError

    try:
        es.indices.create(index=index, settings=settings, mappings=mappings)
    except BadRequestError as exc:
        if exc.error != "resource_already_exists_exception":
            raise
        return False
    return True


def add_new_fields(es: Elasticsearch, template: dict[str, Any]) -> None:
    """Give the template's existing indices the fields a newer release added to it.

    A template only shapes indices created after it, and their mappings are strict: without
    this, today's index would refuse a new field until tomorrow's (``latest-predictions``,
    one index, for ever). Fields an index already has are left as they are, because
    Elasticsearch cannot change a field's type or indexing in place.
    """
    wanted = template["template"]["mappings"]["properties"]
    existing = es.indices.get_mapping(index=template["index_patterns"], allow_no_indices=True,
                                      ignore_unavailable=True, expand_wildcards="open")
    for index, body in existing.items():
        missing = {field: spec for field, spec in wanted.items()
                   if field not in body["mappings"].get("properties", {})}
        if missing:
            es.indices.put_mapping(index=index, properties=missing)


def delete_older_than(es: Elasticsearch, prefix: str, days: int,
                      now: datetime | None = None) -> list[str]:
    """Retention: drop daily ``<prefix>YYYY.MM.DD`` indices whose day is older than ``days``."""
    cutoff = (now or datetime.now(UTC)).date() - timedelta(days=days)
    doomed = []
    for name in es.indices.get(index=f"{prefix}*", expand_wildcards="open"):
        try:
            day = datetime.strptime(name.removeprefix(prefix), "%Y.%m.%d").date()
        except ValueError:
            continue
        if day < cutoff:
            doomed.append(name)
    if doomed:
        es.indices.delete(index=",".join(doomed))
    return doomed


RETENTION_PAGE = 5000


def delete_predicted_before(es: Elasticsearch, index: str, days: int,
                            now: datetime | None = None) -> int:
    """Retention for a non-daily index: delete its documents predicted more than ``days`` ago.

    Page by page through search + bulk delete, because the embedded distribution has no
    ``_delete_by_query`` (it lives in the reindex module). Returns how many were deleted.
    """
    day = (now or datetime.now(UTC)).date() - timedelta(days=days)
    cutoff_ms = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)
    if not es.indices.exists(index=index):
        return 0
    deleted = 0
    while True:
        hits = es.search(index=index, query={"range": {"predicted_at": {"lt": cutoff_ms}}},
                         source=False, size=RETENTION_PAGE)["hits"]["hits"]
        if not hits:
            return deleted
        es.bulk(operations=[{"delete": {"_index": index, "_id": hit["_id"]}} for hit in hits],
                refresh=True)
        deleted += len(hits)
