"""Turning validated requests into enriched prediction rows (``contracts.Prediction``'s
fields, in its order), in Spark's Python workers.

The model travels to the executors as a broadcast ``ServingBundle``; this module is pure
numpy/pandas so it is unit-testable without Spark and fast enough for thousands of requests
per second per core.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import pandas as pd

from recommender.contracts import Prediction, PredictionRequest, Strategy
from recommender.model.artifacts import ModelArtifacts
from recommender.model.foldin import (
    UserVectors,
    best_of,
    masked_scores,
    predict_pair,
    predicted_ratings,
    recommend_popular,
    user_vectors,
)

MovieInfo = tuple[str | None, int | None, list[str]]


@dataclass(frozen=True)
class ServingBundle:
    """Everything a worker needs: the model (or only its popularity counts) and movie info.

    ``popular_only``: no model is trained yet, so lists are the most-rated movies and no
    rating is predicted."""

    artifacts: ModelArtifacts
    movies: dict[int, MovieInfo]
    popular_only: bool = False

    @property
    def version(self) -> str:
        return self.artifacts.version


REQUEST_COLUMNS = tuple(f.name for f in fields(PredictionRequest))  # the topic's payload


@dataclass(frozen=True)
class Request:
    request_id: str
    movie_id: int | None
    k: int | None
    exclude: list[int]
    requested_at: int | None


def users_needing_history(bundle: ServingBundle, requests: pd.DataFrame) -> list[int]:
    """Users whose rating history changes the answer: a top-k request excludes seen movies,
    and every user is answered with vectors reflecting all their current ratings (the
    speed layer folds in a user with ratings the models were not fitted on). Only pair
    requests served by popularity (no model yet) need none."""
    need = requests["k"].notna() | (not bundle.popular_only)
    return sorted(int(u) for u in requests.loc[need, "user_id"].unique())


def predict_rows(bundle: ServingBundle, requests: pd.DataFrame,
                 histories: Mapping[int, Mapping[int, float]]) -> list[Prediction]:
    """One output row per pair request, ``k`` rows per top-k request (or one explaining why
    there are none).

    ``requests`` has the ``REQUEST_COLUMNS``; ``histories`` maps a user to ``{movie: rating}``
    for the users of ``users_needing_history`` (anyone else counts as having none). Requests
    are taken user by user, so a busy user is folded in, and scored against the whole
    catalogue, once per batch rather than once per request.
    """
    now = int(time.time() * 1000)
    out: list[Prediction] = []
    user_id: int | None = None
    for row in requests.sort_values("user_id", kind="stable").itertuples(index=False):
        if row.user_id != user_id:
            user_id = int(row.user_id)
            history = histories.get(user_id, {})
            vectors, strategy = _user_vectors(bundle, user_id, history)
            unseen: np.ndarray | None = None  # the user's scores, seen movies masked: made once
        req = _request(row)
        if req.movie_id is not None:
            out.append(_pair(bundle, user_id, req, vectors, strategy, now))
            continue
        if unseen is None and vectors is not None:
            unseen = masked_scores(bundle.artifacts, vectors, history)
        out.extend(_top_k(bundle, user_id, req, history, vectors, unseen, strategy, now))
    return out


def _request(row: Any) -> Request:
    exclude = row.exclude
    return Request(str(row.request_id), _int_or_none(row.movie_id), _int_or_none(row.k),
                   [] if exclude is None else [int(m) for m in exclude],
                   _int_or_none(row.requested_at))


def _prediction(bundle: ServingBundle, user_id: int, req: Request, movie_id: int | None,
                now: int, **fields: Any) -> Prediction:
    """One output row, enriched with the movie's metadata; ``fields`` are the row's own
    (``strategy`` always; ``rank``, ``score``, ``predicted_rating``, ``answer_size`` and
    ``reason`` when they are not the defaults of a row that predicts nothing)."""
    title, year, genres = bundle.movies.get(movie_id, (None, None, [])) if movie_id else (
        None, None, [])
    return Prediction(request_id=req.request_id, user_id=user_id, movie_id=movie_id,
                      title=title, year=year, genres=list(genres),
                      model_version=bundle.version, requested_at=req.requested_at,
                      predicted_at=now, **{**NOTHING_PREDICTED, **fields})


NOTHING_PREDICTED: dict[str, Any] = {"rank": None, "predicted_rating": None, "score": None,
                                     "answer_size": 1, "reason": None}


def _pair(bundle: ServingBundle, user_id: int, req: Request, vectors: UserVectors | None,
          strategy: Strategy, now: int) -> Prediction:
    """The rating model's prediction; a user without vectors gets the movie's bias
    (``mu + b_i``), a movie it never saw the user's (``mu + b_u``), as evaluation assumes."""
    movie_id = int(req.movie_id)  # type: ignore[arg-type]
    art = bundle.artifacts
    if movie_id not in bundle.movies and movie_id not in art.item_index:
        return _prediction(bundle, user_id, req, movie_id, now, strategy="als",
                           reason=f"unknown movie_id {movie_id}")
    if bundle.popular_only:
        count = art.item_counts[art.item_index[movie_id]] if movie_id in art.item_index else 0
        return _prediction(bundle, user_id, req, movie_id, now, strategy=strategy,
                           score=float(count), reason="no model trained yet: popularity "
                                                      "score (training rating count)")
    value = predict_pair(art, vectors, movie_id)
    reason = None
    if vectors is None:
        reason = "user has no history: the movie's mean rating, regularised"
    elif movie_id not in art.item_index:
        reason = (f"movie {movie_id} had no ratings when the model was trained: the user's "
                  "mean rating, regularised")
    return _prediction(bundle, user_id, req, movie_id, now, strategy=strategy,
                       predicted_rating=value, score=value, reason=reason)


def _top_k(bundle: ServingBundle, user_id: int, req: Request, history: dict[int, float],
           vectors: UserVectors | None, unseen: np.ndarray | None, strategy: Strategy,
           now: int) -> list[Prediction]:
    """The ranking model orders (``unseen``: the user's ranking scores with seen movies
    masked, None without vectors); the rating model gives each its ``predicted_rating``."""
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
        return [_prediction(bundle, user_id, req, None, now, strategy=strategy,
                            reason="no movie left to recommend after exclusions")]
    stars = ([None] * len(items) if bundle.popular_only else
             predicted_ratings(bundle.artifacts, vectors, [m for m, _ in items]).tolist())
    return [
        _prediction(bundle, user_id, req, movie_id, now, strategy=strategy, rank=rank,
                    score=score, predicted_rating=rating, answer_size=len(items))
        for rank, ((movie_id, score), rating)
        in enumerate(zip(items, stars, strict=True), start=1)
    ]


def _user_vectors(bundle: ServingBundle, user_id: int,
                  history: dict[int, float]) -> tuple[UserVectors | None, Strategy]:
    if bundle.popular_only:
        return None, "popular"
    return user_vectors(bundle.artifacts, user_id, history)


def _int_or_none(value: Any) -> int | None:
    return None if value is None or pd.isna(value) else int(value)
