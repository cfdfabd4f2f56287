"""Documents a test writes into the pipeline's shared Elasticsearch indices, and putting
those indices back as they were.

``ratings-*``, ``predictions-*`` and ``user-taste`` are the BI contract, so their names are
not per-run settings: a test that runs the real jobs writes into the indices a demo shows.
The embedded Elasticsearch has no delete-by-query (no reindex module), so this works by id:
``claim`` ids before writing them (remembering any document they replace) or
``claim_matching`` a query for documents only the test can have written (its own request
ids); ``restore`` deletes the claimed documents, puts the replaced ones back and drops the
indices the test created once they are empty, and ``unrestored`` checks that it did.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from elasticsearch import helpers

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch

CHUNK = 1000


class SharedIndices:
    def __init__(self, es: Elasticsearch, patterns: Iterable[str]) -> None:
        self.es = es
        self.patterns = ",".join(patterns)
        self.existing = self._indices()
        self.replaced: dict[tuple[str, str], dict[str, Any] | None] = {}

    def _indices(self) -> set[str]:
        return set(self.es.indices.get(index=self.patterns, ignore_unavailable=True,
                                       allow_no_indices=True, expand_wildcards="open"))

    def _sources(self, index: str, ids: list[str]) -> dict[str, dict[str, Any]]:
        """The documents among ``ids`` that ``index`` holds now."""
        if not self.es.indices.exists(index=index):
            return {}
        found = {}
        for start in range(0, len(ids), CHUNK):
            docs = self.es.mget(index=index, ids=ids[start:start + CHUNK])["docs"]
            found.update({d["_id"]: d["_source"] for d in docs if d.get("found")})
        return found

    def claim(self, index: str, ids: Iterable[str]) -> None:
        """Before writing ``ids`` into ``index``: remember the documents they replace."""
        new = [i for i in dict.fromkeys(ids) if (index, i) not in self.replaced]
        found = self._sources(index, new)
        self.replaced.update({(index, i): found.get(i) for i in new})

    def claim_matching(self, index: str, query: dict[str, Any]) -> None:
        """After writing: the documents matching ``query`` are the test's own."""
        self.es.indices.refresh(index=index, ignore_unavailable=True, allow_no_indices=True)
        for hit in helpers.scan(self.es, index=index, query={"query": query}, _source=False,
                                ignore_unavailable=True, allow_no_indices=True):
            self.replaced.setdefault((hit["_index"], hit["_id"]), None)

    def restore(self) -> None:
        actions = [{"_op_type": "index", "_index": index, "_id": doc_id, "_source": source}
                   if source is not None else
                   {"_op_type": "delete", "_index": index, "_id": doc_id}
                   for (index, doc_id), source in self.replaced.items()]
        # 404: a claimed id the run never came to write
        helpers.bulk(self.es, actions, chunk_size=CHUNK, refresh=True, ignore_status=404)
        for index in sorted(self._indices() - self.existing):
            if self.es.count(index=index)["count"] == 0:
                self.es.indices.delete(index=index)

    def unrestored(self) -> list[tuple[str, str]]:
        """The claimed documents that are not as they were before the test: none after
        ``restore``."""
        by_index: dict[str, list[str]] = {}
        for index, doc_id in self.replaced:
            by_index.setdefault(index, []).append(doc_id)
        wrong = []
        for index, ids in by_index.items():
            now = self._sources(index, ids)
            wrong += [(index, i) for i in ids if now.get(i) != self.replaced[(index, i)]]
        return wrong
