"""Turning validated requests into enriched prediction rows (``contracts.Prediction``'s
fields, in its order), in Spark's Python workers.

The model travels to the executors as a broadcast ``ServingBundle``; this module is pure
numpy/pandas so it is unit-testable without Spark and fast enough for thousands of requests
per second per core.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from recommender.contracts import RATING_MAX, RATING_MIN
from recommender.train.artifacts import ModelArtifacts
from recommender.train.foldin import (
    best_of,
    fold_in,
    masked_scores,
    predict_pair,
    recommend_popular,
)

MovieInfo = tuple[str | None, int | None, list[str]]



@dataclass(frozen=True)
class ServingBundle:
    """Everything a worker needs: the model (or only its popularity counts) and movie info."""

    artifacts: ModelArtifacts
    movies: dict[int, MovieInfo]
    popular_only: bool = False

    @property
    def version(self) -> str:
        return self.artifacts.version


REQUEST_COLUMNS = ("request_id", "user_id", "movie_id", "k", "exclude", "requested_at")


@dataclass(frozen=True)
class Request:
    request_id: str
    movie_id: int | None
    k: int | None
    exclude: list[int]
    requested_at: int | None


def users_needing_history(bundle: ServingBundle, requests: pd.DataFrame) -> list[int]:
    """Users whose rating history changes the answer: a top-k request excludes seen movies,
    and a user the model does not know is folded in from it. A pair request of a known user
    is the dot product of trained vectors, so a batch of those reads nothing from Cassandra."""
    need = requests["k"].notna()
    if not bundle.popular_only:
        need |= ~requests["user_id"].isin(bundle.artifacts.user_ids)
    return sorted(int(u) for u in requests.loc[need, "user_id"].unique())


def predict_rows(bundle: ServingBundle, requests: pd.DataFrame,
                 histories: Mapping[int, Mapping[int, float]]) -> list[dict[str, Any]]:
    """One output row per pair request, ``k`` rows per top-k request (or one explaining why
    there are none).

    ``requests`` has the ``REQUEST_COLUMNS``; ``histories`` maps a user to ``{movie: rating}``
    for the users of ``users_needing_history`` (anyone else counts as having none). Requests
    are taken user by user, so a busy user is folded in, and scored against the whole
    catalogue, once per batch rather than once per request.
    """
    now = int(time.time() * 1000)
    out: list[dict[str, Any]] = []
    user_id: int | None = None
    for row in requests.sort_values("user_id", kind="stable").itertuples(index=False):
        if row.user_id != user_id:
            user_id = int(row.user_id)
            history = histories.get(user_id, {})
            vector, strategy = _user_vector(bundle, user_id, history)
            unseen: np.ndarray | None = None  # the user's scores, seen movies masked: made once
        req = _request(row)
        if req.movie_id is not None:
            out.append(_pair(bundle, user_id, req, vector, strategy, now))
            continue
        if unseen is None and vector is not None:
            unseen = masked_scores(bundle.artifacts, vector, history)
        out.extend(_top_k(bundle, user_id, req, history, unseen, strategy, now))
    return out


def _request(row: Any) -> Request:
    exclude = row.exclude
    return Request(str(row.request_id), _int_or_none(row.movie_id), _int_or_none(row.k),
                   [] if exclude is None else [int(m) for m in exclude],
                   _int_or_none(row.requested_at))


def _base(bundle: ServingBundle, user_id: int, req: Request, movie_id: int | None,
          strategy: str, now: int) -> dict[str, Any]:
    title, year, genres = bundle.movies.get(movie_id, (None, None, [])) if movie_id else (
        None, None, [])
    return {"request_id": req.request_id, "user_id": user_id, "movie_id": movie_id,
            "rank": None, "predicted_rating": None, "score": None, "title": title,
            "year": year, "genres": list(genres), "model_version": bundle.version,
            "strategy": strategy, "requested_at": req.requested_at,
            "predicted_at": now, "answer_size": 1, "reason": None}


def _pair(bundle: ServingBundle, user_id: int, req: Request, vector: Any, strategy: str,
          now: int) -> dict:
    movie_id = int(req.movie_id)  # type: ignore[arg-type]
    row = _base(bundle, user_id, req, movie_id, strategy, now)
    art = bundle.artifacts
    if movie_id not in bundle.movies and movie_id not in art.item_index:
        return {**row, "strategy": "als", "reason": f"unknown movie_id {movie_id}"}
    if vector is None:
        count = art.item_counts[art.item_index[movie_id]] if movie_id in art.item_index else 0
        return {**row, "score": float(count),
                "reason": "user has no history: popularity score (training rating count)"}
    value = predict_pair(art, vector, movie_id)
    if value is None:
        return {**row, "reason": f"movie {movie_id} had no ratings when the model was trained"}
    rating = None if art.implicit else min(max(value, RATING_MIN), RATING_MAX)
    return {**row, "predicted_rating": rating, "score": value}


def _top_k(bundle: ServingBundle, user_id: int, req: Request, history: dict[int, float],
           unseen: np.ndarray | None, strategy: str, now: int) -> list[dict]:
    """``unseen``: the user's scores with seen movies masked, None without a user vector."""
    k = int(req.k)  # type: ignore[arg-type]
    if unseen is None:
        items = recommend_popular(bundle.artifacts, k, set(history) | set(req.exclude))
    else:
        scores = unseen
        if req.exclude:
            scores = unseen.copy()
            scores[bundle.artifacts.item_rows(req.exclude)] = -np.inf
        items = best_of(bundle.artifacts, scores, k)
    if not items:
        return [{**_base(bundle, user_id, req, None, strategy, now),
                 "reason": "no movie left to recommend after exclusions"}]
    explicit = strategy != "popular" and not bundle.artifacts.implicit
    return [
        {**_base(bundle, user_id, req, movie_id, strategy, now), "rank": rank, "score": score,
         "predicted_rating": min(max(score, RATING_MIN), RATING_MAX) if explicit else None,
         "answer_size": len(items)}
        for rank, (movie_id, score) in enumerate(items, start=1)
    ]


def _user_vector(bundle: ServingBundle, user_id: int,
                 history: dict[int, float]) -> tuple[Any, str]:
    if bundle.popular_only:
        return None, "popular"
    vector = bundle.artifacts.user_vector(user_id)
    if vector is not None:
        return vector, "als"
    vector = fold_in(bundle.artifacts, history) if history else None
    return (vector, "fold-in") if vector is not None else (None, "popular")


def _int_or_none(value: Any) -> int | None:
    return None if value is None or pd.isna(value) else int(value)
