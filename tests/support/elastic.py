"""What a test finds in Elasticsearch, and removing what it wrote into shared indices.

The session's settings put every index under a private ``elasticsearch.index_prefix``
(``tests/conftest.py``), dropped when the session ends; tests tag their documents (a
``source``, a ``request_id`` prefix) so they can count exactly their own.
"""

from __future__ import annotations

from typing import Any

from recommender.clients import elasticsearch_client
from recommender.settings import Settings

CHUNK = 1000


def documents(settings: Settings, request_ids: list[str]) -> dict[str, int]:
    """How many prediction documents each request has in Elasticsearch."""
    es = elasticsearch_client(settings.elasticsearch)
    alias = settings.elasticsearch.indices.predictions_alias
    try:
        es.indices.refresh(index=alias)
        counts: dict[str, int] = {}
        for start in range(0, len(request_ids), CHUNK):
            body = es.search(index=alias, size=0, query={"terms": {
                "request_id": request_ids[start:start + CHUNK]}}, aggs={"ids": {"terms": {
                    "field": "request_id", "size": CHUNK}}})
            counts.update({b["key"]: b["doc_count"]
                           for b in body["aggregations"]["ids"]["buckets"]})
        return counts
    finally:
        es.close()


def count(settings: Settings, index: str, query: dict[str, Any]) -> int:
    """Documents matching ``query``, refreshed first; 0 while the index does not exist."""
    es = elasticsearch_client(settings.elasticsearch)
    try:
        es.indices.refresh(index=index, ignore_unavailable=True, allow_no_indices=True)
        return es.count(index=index, query=query, ignore_unavailable=True,
                        allow_no_indices=True)["count"]
    finally:
        es.close()


def delete_matching(settings: Settings, index: str, query: dict[str, Any]) -> int:
    """Delete a test's own documents from a shared index pattern; how many went. (Scan and
    bulk delete: the embedded distribution has no reindex module, so no delete-by-query.)"""
    from elasticsearch import helpers

    es = elasticsearch_client(settings.elasticsearch, request_timeout=300)
    try:
        hits = helpers.scan(es, index=index, query={"query": query}, _source=False,
                            ignore_unavailable=True, allow_no_indices=True)
        deleted, _ = helpers.bulk(es, ({"_op_type": "delete", "_index": hit["_index"],
                                        "_id": hit["_id"]} for hit in hits),
                                  refresh=True, raise_on_error=False)
        return deleted
    finally:
        es.close()
