"""The movie-vectors index: a model version's item factors in Elasticsearch, for kNN serving.

``publish_movie_vectors`` builds a fresh index ``movie-vectors-<version>`` per model version
and only then moves the alias ``movie-vectors`` onto it in one ``update_aliases`` call, so a
reader sees the old version or the new one, never a half-loaded index. The registry's
promote and rollback call it; ``recommender es publish-vectors`` does it by hand.

Each index records the exact registry version in its mapping ``_meta`` (index names must be
lowercase, version names are not), so a reader can load the model the vectors came from and
score a user with factors from the *same* model as the items.

Example::

    art = ModelRegistry.from_settings(settings.model).load()
    publish_movie_vectors(es, art, {1: ("Toy Story", 1995, ["Animation", "Comedy"])},
                          alias="movie-vectors")
    published_vectors(es, "movie-vectors")  # PublishedVectors(index='movie-vectors-2024...', ...)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from recommender.contracts import movie_vectors_mapping
from recommender.errors import RecommenderError
from recommender.indices import index_settings as default_index_settings
from recommender.model.artifacts import ModelArtifacts

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch

    from recommender.model.registry import ModelRegistry
    from recommender.settings import Settings

log = logging.getLogger(__name__)

MovieInfo = tuple[str | None, int | None, list[str]]
BULK_CHUNK = 1000
# Exact kNN: a catalogue of 10k-100k movies is brute-forced in about a millisecond, and the
# API's ranking must equal the model's. Elasticsearch's default for float vectors
# (int8_hnsw) is approximate: it missed movies of a top-100 in the integration test.
VECTOR_INDEX_OPTIONS = {"type": "flat"}


class MovieLike(Protocol):
    """Anything with the catalogue fields, e.g. ``data_loading.readers.Movie``."""

    movie_id: int
    title: str
    year: int | None
    genres: Iterable[str]


@dataclass(frozen=True)
class PublishedVectors:
    """Which concrete index the alias points at and the model version inside it."""

    index: str
    version: str


def index_name(version: str, alias: str) -> str:
    """``<alias>-<version>`` in lowercase: Elasticsearch refuses upper-case index names."""
    return f"{alias}-{version}".lower()


def movie_infos(movies: Mapping[int, MovieInfo] | Iterable[MovieLike]) -> dict[int, MovieInfo]:
    """Accept the predictor's ``{movie_id: (title, year, genres)}`` or ``Movie`` objects."""
    if isinstance(movies, Mapping):
        return {int(m): (t, y, list(g or [])) for m, (t, y, g) in movies.items()}
    return {int(m.movie_id): (m.title, m.year, list(m.genres)) for m in movies}


def publish_movie_vectors(es: Elasticsearch, artifacts: ModelArtifacts,
                          movies: Mapping[int, MovieInfo] | Iterable[MovieLike], *,
                          alias: str, replicas: int = 0,
                          index_settings: Mapping[str, Any] | None = None) -> str:
    """Index ``artifacts``' item factors, switch ``alias`` to them atomically, drop older ones.

    The index gets ``replicas`` replicas (``elasticsearch.number_of_replicas``) unless
    ``index_settings`` replaces its settings.

    Movies missing from ``movies`` are still indexed (title None, no genres): the model can
    recommend them, the catalogue just lacks their details. Rebuilding an existing version's
    index starts from scratch, so a publish interrupted half-way can simply be rerun.
    Returns the new index name.
    """
    from elasticsearch import helpers

    infos = movie_infos(movies)
    index = index_name(artifacts.version, alias)
    if es.indices.exists(index=alias) and not es.indices.exists_alias(name=alias):
        raise RecommenderError(f"{alias!r} is a concrete index, not an alias: delete or rename "
                               "it before publishing movie vectors")
    mappings = {**movie_vectors_mapping(artifacts.ordering_items.shape[1]),
                "_meta": {"model_version": artifacts.version}}
    mappings["properties"]["vector"].setdefault("index_options", VECTOR_INDEX_OPTIONS)
    es.indices.delete(index=index, ignore_unavailable=True)
    es.indices.create(index=index, mappings=mappings,
                      settings={**(index_settings or default_index_settings(replicas)),
                                "refresh_interval": "-1"})
    helpers.bulk(es.options(request_timeout=120), _actions(index, artifacts, infos),
                 chunk_size=BULK_CHUNK)
    es.indices.put_settings(index=index, settings={"refresh_interval": "1s"})
    es.indices.refresh(index=index)
    old = _alias_targets(es, alias)
    actions: list[dict[str, Any]] = [{"remove": {"index": i, "alias": alias}}
                                     for i in old if i != index]
    actions.append({"add": {"index": index, "alias": alias}})
    es.indices.update_aliases(actions=actions)
    stale = [i for i in es.indices.get(index=f"{alias}-*", expand_wildcards="all")
             if i != index]
    if stale:
        es.indices.delete(index=",".join(stale))
    return index


def published_vectors(es: Elasticsearch, alias: str) -> PublishedVectors | None:
    """The index behind ``alias`` and its model version; None before the first publish."""
    targets = _alias_targets(es, alias)
    if not targets:
        return None
    index = sorted(targets)[-1]  # publish keeps exactly one; be deterministic if not
    meta = es.indices.get_mapping(index=index)[index]["mappings"].get("_meta") or {}
    version = meta.get("model_version")
    if not version:
        raise RecommenderError(f"index {index} has no _meta.model_version: republish it with "
                               "`recommender es publish-vectors`")
    return PublishedVectors(index=index, version=str(version))


def load_catalogue(es: Elasticsearch, index: str) -> dict[int, MovieInfo]:
    """``{movie_id: (title, year, genres)}`` of every movie in a vectors index (no vectors)."""
    from elasticsearch import helpers

    out: dict[int, MovieInfo] = {}
    for hit in helpers.scan(es, index=index, query={"query": {"match_all": {}}},
                            _source=["movie_id", "title", "year", "genres"], size=2000):
        src = hit["_source"]
        out[int(src["movie_id"])] = (src.get("title"), src.get("year"),
                                     list(src.get("genres") or []))
    return out


def knn_candidates(es: Elasticsearch, index: str, vector: np.ndarray, k: int, *,
                   exclude: Iterable[int] = (), genre: str | None = None,
                   num_candidates: int | None = None) -> list[dict[str, Any]]:
    """Up to ``k`` hits (``_source`` without the vector) nearest to ``vector`` by inner product.

    Genre and excluded ids go in the kNN ``filter`` so that they are applied while the graph
    is searched: post-filtering would return fewer than ``k`` hits for a narrow genre. On a
    quantized index (ES's int8_hnsw default) ``rescore_vector`` re-scores the oversampled
    candidates with the float vectors; on the flat index ``publish_movie_vectors`` builds it
    is a no-op. Callers wanting the model's exact tie order re-rank with the model's factors.
    """
    filters: dict[str, Any] = {"bool": {}}
    if genre:
        filters["bool"]["filter"] = [{"term": {"genres": genre}}]
    excluded = sorted({int(m) for m in exclude})
    if excluded:
        filters["bool"]["must_not"] = [{"terms": {"movie_id": excluded}}]
    knn: dict[str, Any] = {
        "field": "vector", "query_vector": [float(x) for x in np.asarray(vector).ravel()],
        "k": k, "num_candidates": num_candidates or min(10_000, max(10 * k, 500)),
        "rescore_vector": {"oversample": 3.0},
    }
    if filters["bool"]:
        knn["filter"] = filters
    response = es.search(index=index, knn=knn, size=k, source={"excludes": ["vector"]})
    return list(response["hits"]["hits"])


def _actions(index: str, artifacts: ModelArtifacts,
             infos: Mapping[int, MovieInfo]) -> Iterator[dict[str, Any]]:
    factors = artifacts.ordering_items.astype(np.float32)
    for row, movie_id in enumerate(artifacts.item_ids):
        movie = int(movie_id)
        title, year, genres = infos.get(movie, (None, None, []))
        yield {"_index": index, "_id": str(movie), "_source": {
            "movie_id": movie, "title": title, "year": year, "genres": list(genres),
            "model_version": artifacts.version, "vector": factors[row].tolist()}}


def _alias_targets(es: Elasticsearch, alias: str) -> list[str]:
    if not es.indices.exists_alias(name=alias):
        return []
    return list(es.indices.get_alias(name=alias))


def movies_from_cassandra(session: Any, keyspace: str) -> dict[int, MovieInfo]:
    """The catalogue from ``<keyspace>.movies`` (the system of record the predictor reads)."""
    rows = session.execute(f"SELECT movie_id, title, year, genres FROM {keyspace}.movies")
    return {int(r.movie_id): (r.title, r.year, list(r.genres or [])) for r in rows}


def catalogue(settings: Settings) -> dict[int, MovieInfo]:
    """The catalogue from Cassandra; the dataset files when the table is missing or empty."""
    from cassandra import InvalidRequest

    from recommender.clients import cassandra_session
    from recommender.serve.backends import cassandra_errors

    movies: dict[int, MovieInfo] = {}
    with cassandra_errors(settings):
        session = cassandra_session(settings.cassandra)
        try:
            movies = movies_from_cassandra(session, settings.cassandra.keyspace)
        except InvalidRequest:  # no keyspace or table yet: nothing was ingested
            movies = {}
        finally:
            session.cluster.shutdown()
    if movies:
        return movies
    from data_loading.datasets import locate

    log.warning("no movies in Cassandra %s.movies: titles come from the %s files",
                settings.cassandra.keyspace, settings.data.dataset)
    return movie_infos(locate(settings.data.dataset, settings.data.data_dir).movies())


def publish_version(settings: Settings, version: str | None = None,
                    alias: str | None = None) -> tuple[str, str, int]:
    """Publish ``version`` (default CURRENT) for kNN: every promotion path calls this, so
    the API's kNN ranks with the model that is current. Returns (version, index, movies)."""
    from recommender.clients import elasticsearch_client
    from recommender.errors import ModelError
    from recommender.model.registry import ModelRegistry
    from recommender.serve.backends import es_errors

    registry = ModelRegistry.from_settings(settings.model)
    version = version or registry.current_version()
    if version is None:
        raise ModelError(f"no model is promoted in {registry.root}: run `recommender train` "
                         "or give --version")
    artifacts = registry.load(version)
    with es_errors(settings):
        index = publish_movie_vectors(elasticsearch_client(settings.elasticsearch), artifacts,
                                      catalogue(settings),
                                      alias=alias or settings.elasticsearch.indices.movie_vectors,
                                      replicas=settings.elasticsearch.number_of_replicas)
    return version, index, len(artifacts.item_ids)


def publishing_registry(settings: Settings, say: Callable[[str], None]) -> ModelRegistry:
    """The registry every promotion path of the product uses: after each promotion it
    republishes the movie vectors (``on_promoted``), so the kNN ranks with CURRENT."""
    from recommender.model.registry import ModelRegistry

    registry = ModelRegistry.from_settings(settings.model)
    registry.on_promoted.append(lambda version: publish_after_promotion(settings, version, say))
    return registry


def publish_after_promotion(settings: Settings, version: str,
                            say: Callable[[str], None]) -> None:
    """The API's kNN must rank with the promoted model, so every promotion path republishes
    its movie vectors. A promotion stands even when Elasticsearch is down: ``say`` tells how
    to catch up instead of failing the promotion."""
    from recommender.model.registry import ModelRegistry

    registry = ModelRegistry.from_settings(settings.model)
    try:
        # Under the registry's lock, and always CURRENT's vectors: two promotions racing
        # cannot leave the alias on the version that lost.
        with registry.locked():
            current = registry.current_version() or version
            if current != version:
                say(f"{version} is no longer CURRENT: publishing {current} instead")
            _, index, count = publish_version(settings, current)
        say(f"published {count} movie vectors of {current} as {index}")
    except RecommenderError as exc:
        say(f"warning: {version} is promoted but its movie vectors were not published "
            f"({exc}); run `recommender es publish-vectors` when Elasticsearch is back")
