"""Live recommendations: user vectors from the model, every movie scored in the process.

Strategy, as in the streaming predictor: the models' own user factors (``als``); else vectors
folded in from the user's Cassandra ratings (``fold-in``, also a known user with ratings the
models were not fitted on); else the most-rated movies (``popular``). Movies the user rated
are always excluded. The list is ordered as the predictor orders it
(``ModelArtifacts.ordering_items``); the rating model gives each movie its predicted rating.

The model used is the one whose item vectors the ``movie-vectors`` alias serves, so user and
item factors always come from the same version, also in the seconds between a promotion and
the alias switch. While the model has at most ``api.in_process_max_movies`` movies, the API
scores all of them itself (``foldin.masked_scores``: a matrix-vector product, well under a
millisecond for MovieLens sizes) with titles and genres from the catalogue it keeps in
memory. Larger catalogues go through Elasticsearch kNN, with genre and exclusions inside
the ``filter``; its candidates (a few more than ``k``) are re-ranked with the model's exact
dot products, because the index quantizes vectors. Both paths equal ``foldin.recommend``.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from recommender.contracts import IndexNames, Strategy
from recommender.errors import ModelError, NotFound
from recommender.feed import NO_INFO, Scored, popular_movies
from recommender.model.artifacts import ModelArtifacts
from recommender.model.foldin import (
    UserVectors,
    best_of,
    masked_scores,
    ordering_vector,
    predicted_ratings,
    similar_items,
    user_vectors,
)
from recommender.serve import queries
from recommender.serve.backends import Backends, es_errors
from recommender.serve.histories import Histories, Ratings
from recommender.serve.model_cache import ModelCache
from recommender.vectors import (
    MovieInfo,
    PublishedVectors,
    knn_candidates,
    load_catalogue,
    published_vectors,
)

ALIAS_REFRESH_S = 2.0  # how stale the alias -> index resolution may be


@dataclass(frozen=True)
class Live:
    """What ``for_user`` made and how."""

    strategy: Strategy
    model_version: str
    items: list[Scored]
    ratings: list[float]  # the rating model's predicted rating of each item, same order
    rated: frozenset[int] = frozenset()  # the user's rated movies, all excluded


class Recommender:
    """Serving logic over the backends and the model cache; one per app, thread-safe."""

    def __init__(self, backends: Backends, models: ModelCache, indices: IndexNames,
                 histories: Histories | None = None) -> None:
        self.backends = backends
        self.models = models
        self.indices = indices
        self.histories = histories
        self._lock = threading.Lock()
        self._answers: OrderedDict[tuple[int, int, str | None], tuple[Ratings, Live]] = \
            OrderedDict()
        self._published: tuple[float, PublishedVectors | None] | None = None
        self._catalogues: OrderedDict[str, dict[int, MovieInfo]] = OrderedDict()
        self._genre_masks: dict[tuple[str, str], np.ndarray] = {}

    # --- what is published --------------------------------------------------------------

    def _recently_published(self) -> PublishedVectors | None:
        """The vectors index behind the alias if resolved in the last ``ALIAS_REFRESH_S``
        (``None`` when it must be asked again)."""
        with self._lock:
            cached = self._published
        if cached is not None and time.monotonic() - cached[0] < ALIAS_REFRESH_S:
            return cached[1]
        return None

    def published(self, fresh: bool = False) -> PublishedVectors | None:
        """The vectors index behind the alias, re-resolved at most every ``ALIAS_REFRESH_S``."""
        if not fresh and (recent := self._recently_published()) is not None:
            return recent
        with es_errors(self.backends.settings):
            value = published_vectors(self.backends.es, self.indices.movie_vectors)
        with self._lock:
            self._published = (time.monotonic(), value)
        return value

    def serving(self) -> tuple[PublishedVectors, ModelArtifacts]:
        """The published vectors and the model they came from (503 before the first publish)."""
        published = self.published()
        if published is None:
            raise ModelError(f"no movie vectors are published under {self.indices.movie_vectors!r}"
                             ": run `recommender es publish-vectors`")
        return published, self.models.get(published.version)

    def catalogue(self, index: str) -> dict[int, MovieInfo]:
        """Title, year and genres of every movie in a vectors index, loaded once per index."""
        with self._lock:
            if index in self._catalogues:
                return self._catalogues[index]
        with es_errors(self.backends.settings):
            movies = load_catalogue(self.backends.es, index)
        with self._lock:
            self._catalogues[index] = movies
            while len(self._catalogues) > 2:
                self._catalogues.popitem(last=False)
        return movies

    # --- recommendations ---------------------------------------------------------------

    def user_ratings(self, user_id: int) -> Ratings:
        """The user's ratings: from the histories the ratings topic keeps current, else
        from Cassandra."""
        if self.histories is not None:
            return self.histories.get(user_id)
        return queries.user_ratings(self.backends.cassandra(), self.backends.settings, user_id)

    def for_user(self, user_id: int, k: int, exclude: Iterable[int] = (),
                 genre: str | None = None) -> Live:
        """Top ``k`` for the user, best first, never a movie the user rated. An answer
        without ``exclude`` is kept and given again while the user's ratings and the
        published model stay the same (what it was computed from)."""
        published, _ = self.serving()  # no model or vectors: say so before reading ratings
        ratings = self.user_ratings(user_id)
        excluded = {int(m) for m in exclude}
        key = (user_id, k, genre)
        if not excluded:
            kept = self._kept(key, ratings, published.version)
            if kept is not None:
                return kept
        live = self._retried(user_id, k, ratings, excluded | set(ratings), genre)
        if not excluded:
            self._keep(key, ratings, live)
        return live

    def kept_answer(self, user_id: int, k: int, genre: str | None = None) -> Live | None:
        """``for_user``'s answer when it is kept and still right, found without any I/O
        (the alias resolved recently, the user's ratings held): ``None`` when finding out
        would need Elasticsearch or Cassandra. The API answers most page views from here
        on its event loop, without handing the request to a worker thread."""
        published = self._recently_published()
        ratings = self.histories.held(user_id) if self.histories is not None else None
        if published is None or ratings is None:
            return None
        return self._kept((user_id, k, genre), ratings, published.version)

    def _retried(self, user_id: int, k: int, ratings: Ratings, excluded: set[int],
                 genre: str | None) -> Live:
        try:
            return self._for_user(user_id, k, ratings, excluded, genre)
        except _Republished:  # the alias moved on between resolving and searching: once more
            self.published(fresh=True)
        try:
            return self._for_user(user_id, k, ratings, excluded, genre)
        except _Republished as exc:
            raise ModelError("movie vectors are being republished: retry shortly") from exc

    def _kept(self, key: tuple[int, int, str | None], ratings: Ratings,
              version: str) -> Live | None:
        with self._lock:
            kept = self._answers.get(key)
            if kept is None:
                return None
            self._answers.move_to_end(key)
        from_ratings, live = kept
        same = from_ratings is ratings or from_ratings == ratings
        return live if same and live.model_version == version else None

    def _keep(self, key: tuple[int, int, str | None], ratings: Ratings, live: Live) -> None:
        limit = self.backends.settings.api.history_cache_users
        with self._lock:
            self._answers[key] = (ratings, live)
            while len(self._answers) > limit:
                self._answers.popitem(last=False)

    def _for_user(self, user_id: int, k: int, ratings: dict[int, float], excluded: set[int],
                  genre: str | None) -> Live:
        published, artifacts = self.serving()
        vectors, strategy = user_vectors(artifacts, user_id, ratings)
        if vectors is None:
            items = self.popular(published, artifacts, k, excluded, genre)
        elif len(artifacts.item_ids) <= self.backends.settings.api.in_process_max_movies:
            items = self._in_process(published, artifacts, vectors, k, excluded, genre)
        else:
            items = self._knn(published, artifacts, ordering_vector(artifacts, vectors), k,
                              excluded, genre)
        stars = predicted_ratings(artifacts, vectors, [s.movie_id for s in items])
        return Live(strategy, artifacts.version, items, [float(r) for r in stars],
                    frozenset(ratings))

    def popular(self, published: PublishedVectors, artifacts: ModelArtifacts, k: int,
                excluded: set[int], genre: str | None = None) -> list[Scored]:
        """Most-rated movies in training, optionally only those of ``genre``."""
        return popular_movies(artifacts, self.catalogue(published.index), k, excluded, genre)

    def similar(self, movie_id: int, k: int) -> tuple[str, list[Scored]]:
        """Movies closest by cosine of item factors, with the catalogue's details."""
        published = self.published()
        if published is None:
            artifacts, catalogue = self.models.current(), {}
        else:
            artifacts = self.models.get(published.version)
            catalogue = self.catalogue(published.index)
        if movie_id not in artifacts.item_index:
            raise NotFound(f"movie {movie_id} is not in model {artifacts.version} (unknown movie, "
                           "or it had no ratings when the model was trained)")
        return artifacts.version, [Scored(m, s, catalogue.get(m, NO_INFO))
                                   for m, s in similar_items(artifacts, movie_id, k)]

    def _in_process(self, published: PublishedVectors, artifacts: ModelArtifacts,
                    vectors: UserVectors, k: int, excluded: set[int],
                    genre: str | None) -> list[Scored]:
        """Every movie scored here, the excluded and (with ``genre``) the other genres'
        masked: exactly ``foldin.recommend`` with the catalogue's details."""
        catalogue = self.catalogue(published.index)
        scores = masked_scores(artifacts, vectors, excluded)
        if genre is not None:
            scores[~self._genre_mask(published.index, artifacts, genre)] = -np.inf
        return [Scored(m, s, catalogue.get(m, NO_INFO)) for m, s in best_of(artifacts, scores, k)]

    def _genre_mask(self, index: str, artifacts: ModelArtifacts, genre: str) -> np.ndarray:
        """Which of the model's movies the catalogue files under ``genre``, once per index."""
        key = (index, genre)
        with self._lock:
            mask = self._genre_masks.get(key)
        if mask is None:
            catalogue = self.catalogue(index)
            mask = np.fromiter((genre in catalogue.get(int(m), NO_INFO)[2]
                                for m in artifacts.item_ids), bool, len(artifacts.item_ids))
            with self._lock:
                self._genre_masks = {k: v for k, v in self._genre_masks.items()
                                     if k[0] == index}
                self._genre_masks[key] = mask
        return mask

    def _knn(self, published: PublishedVectors, artifacts: ModelArtifacts, vector: np.ndarray,
             k: int, excluded: set[int], genre: str | None) -> list[Scored]:
        from elasticsearch import NotFoundError

        fetch = min(len(artifacts.item_ids), k + max(10, k // 2))
        vector = np.asarray(vector, dtype=np.float32)
        with es_errors(self.backends.settings):
            try:
                hits = knn_candidates(self.backends.es, published.index, vector, fetch,
                                      exclude=excluded, genre=genre)
            except NotFoundError as exc:
                raise _Republished(published.index) from exc
        rows, infos = [], {}
        for hit in hits:
            src = hit["_source"]
            movie = int(src["movie_id"])
            row = artifacts.item_index.get(movie)
            if row is not None:
                rows.append(row)
                infos[movie] = (src.get("title"), src.get("year"), list(src.get("genres") or []))
        if not rows:
            return []
        index = np.asarray(rows, dtype=np.int64)
        scores = (artifacts.ordering_items[index] @ vector).astype(np.float64)
        order = np.lexsort((index, -scores))[:k]  # as foldin._top_k: score desc, then row
        return [Scored(int(artifacts.item_ids[index[i]]), float(scores[i]),
                       infos[int(artifacts.item_ids[index[i]])]) for i in order]


class _Republished(Exception):
    """The resolved vectors index was deleted by a newer publish."""

