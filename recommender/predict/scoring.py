"""Turning validated requests into enriched prediction rows, in Spark's Python workers.

The model travels to the executors as a broadcast ``ServingBundle``; this module is pure
numpy/pandas so it is unit-testable without Spark and fast enough for thousands of requests
per second per core.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, fields
from typing import Any

import pandas as pd
from pyspark.sql import types as T

from recommender.contracts import RATING_MAX, RATING_MIN, Prediction
from recommender.train.artifacts import ModelArtifacts
from recommender.train.foldin import predict_pair, recommend_for_user, recommend_popular

MovieInfo = tuple[str | None, int | None, list[str]]

PREDICTION_SCHEMA = T.StructType([
    T.StructField("request_id", T.StringType()),
    T.StructField("user_id", T.IntegerType()),
    T.StructField("movie_id", T.IntegerType()),
    T.StructField("rank", T.IntegerType()),
    T.StructField("predicted_rating", T.DoubleType()),
    T.StructField("score", T.DoubleType()),
    T.StructField("title", T.StringType()),
    T.StructField("year", T.IntegerType()),
    T.StructField("genres", T.ArrayType(T.StringType())),
    T.StructField("model_version", T.StringType()),
    T.StructField("strategy", T.StringType()),
    T.StructField("requested_at", T.LongType()),
    T.StructField("predicted_at", T.LongType()),
    T.StructField("reason", T.StringType()),
])
assert [f.name for f in PREDICTION_SCHEMA] == [f.name for f in fields(Prediction)]


@dataclass(frozen=True)
class ServingBundle:
    """Everything a worker needs: the model (or only its popularity counts) and movie info."""

    artifacts: ModelArtifacts
    movies: dict[int, MovieInfo]
    popular_only: bool = False

    @property
    def version(self) -> str:
        return self.artifacts.version


def predict_rows(bundle: ServingBundle, requests: pd.DataFrame) -> list[dict[str, Any]]:
    """One output row per pair request, ``k`` rows per top-k request (or one explaining why
    there are none)."""
    now = int(time.time() * 1000)
    out: list[dict[str, Any]] = []
    for req in requests.itertuples(index=False):
        history = dict(req.history) if req.history is not None else {}
        if req.movie_id is not None and not pd.isna(req.movie_id):
            out.append(_pair(bundle, req, history, now))
        else:
            out.extend(_top_k(bundle, req, history, now))
    return out


def score_partitions(bundle_ref: Any) -> Any:
    """A ``mapInPandas`` function over request batches; ``bundle_ref`` is a Spark broadcast."""

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        bundle: ServingBundle = bundle_ref.value
        for requests in batches:
            rows = predict_rows(bundle, requests)
            yield pd.DataFrame(rows, columns=[f.name for f in PREDICTION_SCHEMA])

    return run


def _base(bundle: ServingBundle, req: Any, movie_id: int | None, now: int) -> dict[str, Any]:
    title, year, genres = bundle.movies.get(movie_id, (None, None, [])) if movie_id else (
        None, None, [])
    return {"request_id": req.request_id, "user_id": int(req.user_id), "movie_id": movie_id,
            "rank": None, "predicted_rating": None, "score": None, "title": title,
            "year": year, "genres": list(genres), "model_version": bundle.version,
            "strategy": "als", "requested_at": _int_or_none(req.requested_at),
            "predicted_at": now, "reason": None}


def _pair(bundle: ServingBundle, req: Any, history: dict[int, float], now: int) -> dict:
    movie_id = int(req.movie_id)
    row = _base(bundle, req, movie_id, now)
    art = bundle.artifacts
    if movie_id not in bundle.movies and movie_id not in art.item_index:
        return {**row, "reason": f"unknown movie_id {movie_id}"}
    vector, strategy = _user_vector(bundle, int(req.user_id), history)
    row["strategy"] = strategy
    if vector is None:
        count = art.item_counts[art.item_index[movie_id]] if movie_id in art.item_index else 0
        return {**row, "score": float(count),
                "reason": "user has no history: popularity score (training rating count)"}
    value = predict_pair(art, vector, movie_id)
    if value is None:
        return {**row, "reason": f"movie {movie_id} had no ratings when the model was trained"}
    rating = None if art.implicit else min(max(value, RATING_MIN), RATING_MAX)
    return {**row, "predicted_rating": rating, "score": value}


def _top_k(bundle: ServingBundle, req: Any, history: dict[int, float], now: int) -> list[dict]:
    exclude = [int(m) for m in req.exclude] if req.exclude is not None else []
    k = int(req.k)
    if bundle.popular_only:
        strategy, items = "popular", recommend_popular(bundle.artifacts, k, set(history) | set(
            exclude))
    else:
        recs = recommend_for_user(bundle.artifacts, int(req.user_id), k, ratings=history,
                                  exclude=exclude)
        strategy, items = recs.strategy, recs.items
    if not items:
        return [{**_base(bundle, req, None, now), "strategy": strategy,
                 "reason": "no movie left to recommend after exclusions"}]
    explicit = strategy != "popular" and not bundle.artifacts.implicit
    return [
        {**_base(bundle, req, movie_id, now), "rank": rank, "score": score,
         "strategy": strategy,
         "predicted_rating": min(max(score, RATING_MIN), RATING_MAX) if explicit else None}
        for rank, (movie_id, score) in enumerate(items, start=1)
    ]


def _user_vector(bundle: ServingBundle, user_id: int,
                 history: dict[int, float]) -> tuple[Any, str]:
    from recommender.train.foldin import fold_in

    if bundle.popular_only:
        return None, "popular"
    vector = bundle.artifacts.user_vector(user_id)
    if vector is not None:
        return vector, "als"
    vector = fold_in(bundle.artifacts, history) if history else None
    return (vector, "fold-in") if vector is not None else (None, "popular")


def _int_or_none(value: Any) -> int | None:
    return None if value is None or pd.isna(value) else int(value)
