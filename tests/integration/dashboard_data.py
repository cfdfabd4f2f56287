"""Realistic dashboard data in the real indices, until the whole pipeline runs in tests.

Ratings come from ml-latest-small with the movie titles and genres the ingest job adds;
predictions look like ``contracts.Prediction`` records as the shipper indexes them (with
``latency_ms`` and ``indexed_at``) over the last 50 minutes, from two model versions with a
rollover in the middle and all three strategies; user-taste documents are per-(user, genre)
taste scores with each user's most similar neighbour.

The data views target ``ratings-*`` and ``predictions-*``, so the documents go to the real
``ratings-<year>`` and ``predictions-<day>`` indices. Every document id starts with this
run's prefix; cleanup deletes exactly those documents by id (the embedded Elasticsearch has
no delete-by-query), then the indices this run created if they are empty again.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from elasticsearch import Elasticsearch, helpers

from data_loading.readers import read_movies, read_ratings
from recommender import contracts, indices

ROLLOVER_AGO_MS = 20 * 60_000
SPAN_MS = 50 * 60_000
OLD, NEW = "20250101T000000Z", "20250301T000000Z"


@dataclass
class Written:
    """What a run wrote: documents per index, and which indices it created."""

    prefix: str
    docs: dict[str, list[str]] = field(default_factory=dict)
    created: set[str] = field(default_factory=set)

    def add(self, index: str, doc_id: str) -> None:
        self.docs.setdefault(index, []).append(doc_id)


def load(es: Elasticsearch, data_dir: Path, run_id: str, now_ms: int,
         users_every: int = 3) -> Written:
    """Index ratings (of every ``users_every``-th user: the embedded single node indexes
    ~1k documents/s on a busy 2-core machine), predictions and user-taste documents; refresh
    so they are searchable."""
    indices.setup(es)
    written = Written(prefix=f"it-{run_id}")
    ratings = read_ratings(data_dir / "ml-latest-small", "csv")
    ratings = ratings[ratings["user_id"] % users_every == 0].reset_index(drop=True)
    movies = {m.movie_id: m for m in read_movies(data_dir / "ml-latest-small", "csv")}
    rng = np.random.default_rng(7)
    actions = [*_ratings(ratings, movies, written, now_ms, rng),
               *_predictions(ratings, movies, written, now_ms, rng),
               *_taste(ratings, movies, written)]
    targets = {a["_index"] for a in actions}
    existing = {name for name in targets if es.indices.exists(index=name)}
    written.created = targets - existing
    for ok, item in helpers.streaming_bulk(es.options(request_timeout=120), actions,
                                           chunk_size=5000, raise_on_error=True):
        assert ok, item
    es.indices.refresh(index=",".join(sorted(targets)))
    return written


def cleanup(es: Elasticsearch, written: Written) -> None:
    """Delete this run's documents; then the indices it created, if nothing else wrote
    into them meanwhile (a pipeline running beside the tests writes to the same names)."""
    deletes = [{"_op_type": "delete", "_index": index, "_id": doc_id}
               for index, ids in written.docs.items() for doc_id in ids]
    helpers.bulk(es, deletes, raise_on_error=False, chunk_size=5000, refresh=True)
    for index in sorted(written.created):
        if es.indices.exists(index=index) and es.count(index=index)["count"] == 0:
            es.indices.delete(index=index, ignore_unavailable=True)


def _ratings(ratings: pd.DataFrame, movies: dict, written: Written, now_ms: int,
             rng: np.random.Generator) -> Iterator[dict[str, Any]]:
    ingested = now_ms - rng.integers(0, SPAN_MS, len(ratings))
    for row, ingested_at in zip(ratings.itertuples(index=False), ingested, strict=True):
        movie = movies.get(int(row.movie_id))
        event_id = f"{written.prefix}:{row.user_id}:{row.movie_id}:{row.event_time}"
        index = indices.ratings_index(int(row.event_time))
        written.add(index, event_id)
        yield {"_index": index, "_id": event_id, "_source": {
            "event_id": event_id, "user_id": str(row.user_id), "movie_id": str(row.movie_id),
            "rating": float(row.rating), "event_time": int(row.event_time),
            "ingested_at": int(ingested_at), "title": movie.title if movie else None,
            "year": movie.year if movie else None,
            "genres": list(movie.genres) if movie else [], "source": written.prefix}}


def _predictions(ratings: pd.DataFrame, movies: dict, written: Written, now_ms: int,
                 rng: np.random.Generator) -> Iterator[dict[str, Any]]:
    counts = ratings["movie_id"].value_counts()
    popular = counts.index[:300].to_numpy()
    weights = counts.iloc[:300].to_numpy(dtype=float)
    weights /= weights.sum()
    users = ratings["user_id"].unique()
    for n in range(1200):
        predicted_at = now_ms - int(rng.integers(0, SPAN_MS))
        age = now_ms - predicted_at
        overlap = abs(age - ROLLOVER_AGO_MS) < 2 * 60_000
        version = (OLD if rng.random() < 0.5 else NEW) if overlap else (
            OLD if age > ROLLOVER_AGO_MS else NEW)
        strategy = str(rng.choice(["als", "fold-in", "popular"], p=[0.75, 0.15, 0.1]))
        latency = int(rng.lognormal(np.log(120), 0.6))
        request_id = f"{written.prefix}-req-{n}"
        k = 5 if rng.random() < 0.7 else None
        picks = rng.choice(popular, size=k or 1, replace=False, p=weights)
        for rank, movie_id in enumerate(picks, start=1):
            movie = movies[int(movie_id)]
            doc = contracts.Prediction(
                request_id=request_id, user_id=int(rng.choice(users)), movie_id=int(movie_id),
                rank=rank if k else None, predicted_rating=round(float(rng.uniform(3, 5)), 3),
                score=round(float(rng.uniform(0.5, 2)), 4), title=movie.title,
                year=movie.year, genres=list(movie.genres), model_version=version,
                strategy=strategy, requested_at=predicted_at - latency,
                predicted_at=predicted_at)
            source = {**asdict(doc), "user_id": str(doc.user_id),
                      "movie_id": str(doc.movie_id), "latency_ms": latency + 5,
                      "indexed_at": predicted_at + 40}
            index = indices.predictions_index(predicted_at)
            doc_id = f"{written.prefix}:{doc.doc_id()}"
            written.add(index, doc_id)
            yield {"_index": index, "_id": doc_id, "_source": source}


def _taste(ratings: pd.DataFrame, movies: dict, written: Written) -> Iterator[dict[str, Any]]:
    """Score = the user's share of ratings in a genre, weighted by how much they liked them;
    the neighbour is the most similar user by cosine of those score vectors."""
    genres = sorted({g for m in movies.values() for g in m.genres})
    col = {g: i for i, g in enumerate(genres)}
    users = np.sort(ratings["user_id"].unique())
    row = {u: i for i, u in enumerate(users)}
    scores = np.zeros((len(users), len(genres)))
    counts = np.zeros_like(scores)
    for r in ratings.itertuples(index=False):
        movie = movies.get(int(r.movie_id))
        for g in movie.genres if movie else ():
            scores[row[r.user_id], col[g]] += r.rating / 5.0
            counts[row[r.user_id], col[g]] += 1
    scores /= np.maximum(counts.sum(axis=1, keepdims=True), 1)
    unit = scores / np.maximum(np.linalg.norm(scores, axis=1, keepdims=True), 1e-9)
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -1)
    neighbours = similarity.argmax(axis=1)
    percentiles = scores.argsort(axis=0).argsort(axis=0) / max(len(users) - 1, 1) * 100
    for u, i in row.items():
        j = neighbours[i]
        shared = [genres[g] for g in np.argsort(-(scores[i] * scores[j]))[:3] if scores[i, g]]
        for g, c in col.items():
            if not counts[i, c]:
                continue
            doc_id = f"{written.prefix}:{u}:{g}"
            written.add(contracts.USER_TASTE_INDEX, doc_id)
            yield {"_index": contracts.USER_TASTE_INDEX, "_id": doc_id, "_source": {
                "user_id": str(u), "genre": g, "score": round(float(scores[i, c]), 4),
                "percentile": round(float(percentiles[i, c]), 2), "ratings": int(counts[i, c]),
                "neighbour_id": str(users[j]), "neighbour_genres": shared}}
