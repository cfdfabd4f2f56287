"""The API's reads from Elasticsearch and Cassandra, one function per question.

Queries are built from the clients' DSL (dicts and keyword arguments, bound CQL parameters);
a user-supplied value never becomes query text. The only identifier put into CQL is the
keyspace from the settings, which is configuration, not input. Every call runs inside the
backend's error translator, so a down backend is a 503 with its name, never a trace.
"""

from __future__ import annotations

import math
import weakref
from typing import TYPE_CHECKING, Any

from recommender.errors import NotFound
from recommender.serve.backends import cassandra_errors, es_errors
from recommender.settings import Settings

if TYPE_CHECKING:
    from cassandra.cluster import Session
    from elasticsearch import AsyncElasticsearch

ONLY_SOURCES = ["hits.hits._source"]  # no scores, sort values or shard stats to parse
LATEST_ORDER = [{"predicted_rating": {"order": "desc", "missing": "_last"}},
                {"score": {"order": "desc", "missing": "_last"}}, {"movie_id": "asc"}]
MAX_REQUEST_DOCS = 10_000  # documents one request can have (top-k rows)


# --- Elasticsearch: the predictor's output, as the shipper indexed it -----------------------


async def user_predictions(es: AsyncElasticsearch, settings: Settings, index: str,
                           user_id: int, k: int, fields: list[str]) -> list[dict[str, Any]]:
    """The user's ``k`` best predicted movies, using only the latest prediction per movie,
    each with only those of ``fields`` its document has (picked here: asking Elasticsearch
    to filter sources cost it a quarter more CPU per search, and it is the busier process).

    The latest-predictions index holds one document per (user, movie), the newest (the
    shipper writes it with ``predicted_at`` as external version), so this is a term query
    sorted by predicted rating, then score; predictions without a rating come last. An index
    that does not exist yet (nothing shipped) gives an empty list.
    """
    with es_errors(settings):
        response = await es.search(index=index, query={"term": {"user_id": user_id}},
                                   sort=LATEST_ORDER, size=k, ignore_unavailable=True,
                                   allow_no_indices=True, filter_path=ONLY_SOURCES)
    return [{name: source[name] for name in fields if name in source}
            for source in (hit["_source"] for hit in response.get("hits", {}).get("hits", []))]


async def search_movies(es: AsyncElasticsearch, settings: Settings, index: str, text: str,
                        limit: int) -> list[dict[str, Any]]:
    """Movies of the catalogue whose title matches ``text`` (all its words, or the words
    typed so far), the best matches first and the most-rated among equals."""
    query = {"bool": {"should": [
        {"match": {"title": {"query": text, "operator": "and"}}},
        {"match_phrase_prefix": {"title": {"query": text}}}], "minimum_should_match": 1}}
    with es_errors(settings):
        response = await es.search(index=index, query=query, size=limit,
                                   sort=["_score", {"rating_count": {"order": "desc",
                                                                     "missing": "_last"}}],
                                   ignore_unavailable=True, allow_no_indices=True,
                                   filter_path=ONLY_SOURCES)
    return [hit["_source"] for hit in response.get("hits", {}).get("hits", [])]


async def request_predictions(es: AsyncElasticsearch, settings: Settings, alias: str,
                              request_id: str) -> list[dict[str, Any]]:
    """The request's newest complete answer, by rank; ``NotFound`` until there is one."""
    with es_errors(settings):
        response = await es.search(
            index=alias,
            query={"bool": {"filter": [{"term": {"request_id": request_id}}]}},
            sort=[{"rank": {"order": "asc", "missing": "_first"}}],
            size=MAX_REQUEST_DOCS,
            ignore_unavailable=True, allow_no_indices=True,
        )
    docs = [hit["_source"] for hit in response["hits"]["hits"]]
    if not docs:
        raise NotFound(f"no prediction for request {request_id!r} yet: requests are answered "
                       "asynchronously, poll again shortly")
    return newest_complete_answer(request_id, docs)


def newest_complete_answer(request_id: str, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Of the request's documents (by rank), those of its newest answer with all
    ``answer_size`` of them searchable.

    A refresh between two of the shipper's bulks shows a top-k in part; a request answered
    twice (a retry, or both predictors during a rollover) has two answers, told apart by
    ``predicted_at`` and ``model_version``, and mixing them would rank two lists as one.
    Documents shipped before ``answer_size`` existed count as whole answers.
    """
    answers: dict[tuple[Any, Any], list[dict[str, Any]]] = {}
    for doc in docs:
        answers.setdefault((doc.get("predicted_at"), doc.get("model_version")), []).append(doc)
    newest_first = sorted(answers.values(), key=lambda a: a[0].get("predicted_at") or 0,
                          reverse=True)
    for answer in newest_first:
        if len(answer) >= (answer[0].get("answer_size") or 1):
            return answer
    newest = newest_first[0]
    raise NotFound(f"request {request_id!r} is indexed in part ({len(newest)} of "
                   f"{newest[0]['answer_size']} predictions): poll again shortly")


# --- Cassandra: the system of record and the profiles training writes -----------------------


_PREPARED: weakref.WeakKeyDictionary[Session, dict[str, Any]] = weakref.WeakKeyDictionary()


def _prepared(session: Session, query: str) -> Any:
    """``query`` prepared once per session: the per-request reads skip Cassandra's parsing
    and planning, and bind their values in the binary protocol."""
    statements = _PREPARED.setdefault(session, {})
    if query not in statements:
        statements[query] = session.prepare(query)
    return statements[query]


def user_ratings(session: Session, settings: Settings, user_id: int) -> dict[int, float]:
    """``{movie_id: rating}`` of the user: fold-in input and the movies never to recommend."""
    keyspace = settings.cassandra.keyspace
    with cassandra_errors(settings):
        rows = session.execute(_prepared(
            session, f"SELECT movie_id, rating FROM {keyspace}.ratings WHERE user_id = ?"),
            (user_id,))
        return {int(movie): float(rating) for movie, rating in rows if rating is not None}


def movie_exists(session: Session, settings: Settings, movie_id: int) -> bool:
    """Whether the catalogue (Cassandra's ``movies``, what ``recommender load-movies`` wrote)
    has the movie."""
    keyspace = settings.cassandra.keyspace
    with cassandra_errors(settings):
        return session.execute(_prepared(
            session, f"SELECT movie_id FROM {keyspace}.movies WHERE movie_id = ?"),
            (movie_id,)).one() is not None


def similar_user(session: Session, settings: Settings, user_id: int) -> dict[str, Any]:
    keyspace = settings.cassandra.keyspace
    with cassandra_errors(settings):
        row = session.execute(
            f"SELECT user_id, neighbour_id, similarity, suggested_movie_id, model_version "
            f"FROM {keyspace}.similar_users WHERE user_id = %s", (user_id,)).one()
    if row is None:
        raise NotFound(f"no similar user known for user {user_id}: profiles are written "
                       "after training, for users the model knows")
    return row._asdict()


def user_taste(session: Session, settings: Settings, user_id: int) -> list[dict[str, Any]]:
    keyspace = settings.cassandra.keyspace
    with cassandra_errors(settings):
        rows = [r._asdict() for r in session.execute(
            f"SELECT genre, score, percentile, ratings FROM {keyspace}.user_taste "
            "WHERE user_id = %s", (user_id,))]
    if not rows:
        raise NotFound(f"no taste profile for user {user_id}: profiles are written after "
                       "training, for users with ratings")
    rows.sort(key=lambda r: r["score"] if r["score"] is not None else -math.inf, reverse=True)
    return rows
