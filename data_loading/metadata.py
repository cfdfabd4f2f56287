"""Movie metadata into the serving stores: Cassandra ``movies`` and ``tags`` tables, and the
Elasticsearch ``movies`` index that the API searches and Kibana shows.

Ratings stream through Kafka; metadata does not, because it is a small, slowly changing
catalogue that every stage needs before the first rating arrives (the enricher looks titles
up, the predictor names its recommendations). Loading is idempotent: rows are keyed by
movie id (and user, movie, tag for tags) and documents by ``_id = movie_id``, so a rerun
overwrites instead of duplicating.

Example::

    result = load_metadata(settings, locate("ml-latest-small"))
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from data_loading.datasets import Dataset, Movie, Tag
from recommender.cassandra_schema import ensure_index, ensure_schema
from recommender.clients import cassandra_session, describe_urls, elasticsearch_client
from recommender.contracts import MOVIES_MAPPING
from recommender.errors import BackendUnavailable, RecommenderError
from recommender.settings import Settings

CONCURRENCY = 64  # in-flight Cassandra writes; more only queues on a single node
BULK_CHUNK = 2000


@dataclass(frozen=True)
class MetadataResult:
    dataset: str
    movies: int
    tags: int
    indexed: int
    keyspace: str | None
    index: str | None
    seconds: float


def movie_documents(movies: list[Movie], tags: list[Tag],
                    stats: dict[int, tuple[int, float]]) -> Iterator[dict[str, Any]]:
    """One ``movies`` index document per movie: catalogue fields, its distinct tags in lower
    case (users write "Pixar" and "pixar"; a keyword field matches exactly) and the count and
    mean of its ratings in the dataset. Movies nobody rated get ``rating_count`` 0, no mean."""
    tags_of: dict[int, set[str]] = {}
    for t in tags:
        if tag := t.tag.strip().lower():
            tags_of.setdefault(t.movie_id, set()).add(tag)
    for m in movies:
        count, mean = stats.get(m.movie_id, (0, None))
        yield {
            "movie_id": m.movie_id, "title": m.title, "year": m.year, "genres": list(m.genres),
            "imdb_id": m.imdb_id, "tmdb_id": m.tmdb_id,
            "tags": sorted(tags_of.get(m.movie_id, ())),
            "rating_count": count, "rating_mean": None if mean is None else round(mean, 4),
        }


def load_metadata(settings: Settings, dataset: Dataset, *, index: str | None = None,
                  cassandra: bool = True, elasticsearch: bool = True,
                  on_event: Callable[[str], None] | None = None) -> MetadataResult:
    """Write ``dataset``'s movies (with links) and tags to Cassandra and its movies to the
    Elasticsearch ``index`` (default: the settings' movies index), creating keyspace, tables
    and index when missing."""
    index = index or settings.elasticsearch.indices.movies
    say = on_event or (lambda _msg: None)
    start = time.monotonic()
    movies, tags = dataset.movies(), dataset.tags
    if cassandra:
        write_cassandra(settings, movies, tags)
        say(f"Cassandra {settings.cassandra.keyspace}: {len(movies)} movies, {len(tags)} tags")
    indexed = 0
    if elasticsearch:
        docs = movie_documents(movies, tags, dataset.rating_stats())
        indexed = write_elasticsearch(settings, docs, index)
        say(f"Elasticsearch {index}: {indexed} documents")
    return MetadataResult(dataset.name, len(movies), len(tags), indexed,
                          settings.cassandra.keyspace if cassandra else None,
                          index if elasticsearch else None, time.monotonic() - start)


def write_cassandra(settings: Settings, movies: list[Movie], tags: list[Tag]) -> None:
    """Upsert movies and tags with prepared statements, ``CONCURRENCY`` writes in flight."""
    from cassandra import DriverException
    from cassandra.cluster import NoHostAvailable
    from cassandra.concurrent import execute_concurrent_with_args

    keyspace = settings.cassandra.keyspace
    try:
        session = cassandra_session(settings.cassandra)
    except (DriverException, NoHostAvailable) as exc:
        raise BackendUnavailable(
            f"Cassandra at {settings.cassandra.contact_points} did not answer ({exc}); start "
            "it with `recommender stack up` or set RECOMMENDER_CASSANDRA__CONTACT_POINTS"
        ) from exc
    try:
        ensure_schema(session, settings, ["movies", "tags"])
        put_movie = session.prepare(
            f"INSERT INTO {keyspace}.movies (movie_id, title, year, genres, imdb_id, tmdb_id) "
            "VALUES (?, ?, ?, ?, ?, ?)")
        put_tag = session.prepare(
            f"INSERT INTO {keyspace}.tags (user_id, movie_id, tag, event_time) "
            "VALUES (?, ?, ?, ?)")
        execute_concurrent_with_args(
            session, put_movie,
            [(m.movie_id, m.title, m.year, list(m.genres), m.imdb_id, m.tmdb_id) for m in movies],
            concurrency=CONCURRENCY, raise_on_first_error=True)
        execute_concurrent_with_args(  # timestamps as epoch ms: the driver's int convention
            session, put_tag, [(t.user_id, t.movie_id, t.tag, t.event_time) for t in tags],
            concurrency=CONCURRENCY, raise_on_first_error=True)
    except (DriverException, NoHostAvailable) as exc:
        raise BackendUnavailable(f"Cassandra write to {keyspace} failed: {exc}") from exc
    finally:
        session.cluster.shutdown()


def write_elasticsearch(settings: Settings, docs: Iterator[dict[str, Any]], index: str) -> int:
    """Bulk-index ``docs`` with ``_id = movie_id`` and refresh, so searches see them at once."""
    from elastic_transport import ConnectionError as EsConnectionError
    from elasticsearch.helpers import bulk

    es = elasticsearch_client(settings.elasticsearch)
    try:
        ensure_index(es, index, MOVIES_MAPPING,
                     replicas=settings.elasticsearch.number_of_replicas)
        ok, errors = bulk(es, ({"_index": index, "_id": str(d["movie_id"]), "_source": d}
                               for d in docs), chunk_size=BULK_CHUNK, raise_on_error=False,
                          max_retries=3)
        if errors:
            raise RecommenderError(f"Elasticsearch rejected {len(errors)} movie documents in "
                                   f"{index!r}; first: {errors[0]}")
        es.indices.refresh(index=index)
        return ok
    except EsConnectionError as exc:
        raise BackendUnavailable(f"Elasticsearch at {describe_urls(settings.elasticsearch.urls)}"
                                 f" did not answer ({exc}); start it with `recommender stack "
                                 "up`") from exc
    finally:
        es.close()
