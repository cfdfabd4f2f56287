"""``/users/{user_id}/...``: shipped predictions, live recommendations, profiles."""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Path, Query, Response
from starlette.concurrency import run_in_threadpool

from recommender.contracts import MAX_EXCLUDE
from recommender.serve import queries
from recommender.serve.deps import BackendsDep, ContextDep, RecommenderDep, TopK
from recommender.serve.schemas import (
    INT32_MAX,
    PREDICTION_FIELDS,
    Genre,
    GenreTaste,
    PositiveId,
    Recommendations,
    SimilarUser,
    UserPredictions,
    UserTaste,
)

router = APIRouter(prefix="/users", tags=["users"])
UserId = Annotated[int, Path(gt=0, le=INT32_MAX, description="MovieLens user id.")]


@router.get("/{user_id}/predictions", response_model=UserPredictions)
async def user_predictions(user_id: UserId, k: TopK, ctx: ContextDep) -> Response:
    """The user's top predicted movies as the streaming predictor answered them.

    Reads the ``latest-predictions`` index, which keeps only the newest prediction of each
    movie; movies are ordered by predicted rating, then score. Empty before anything was
    shipped.
    """
    # The website's hot path: the response model's fields of documents the shipper checked
    # are encoded as they come (no model validation and serialisation, a sixth of this
    # route's CPU); the model still documents the schema.
    docs = await queries.user_predictions(ctx.backends.async_es, ctx.settings,
                                        ctx.indices.latest_predictions, user_id, k,
                                        PREDICTION_FIELDS)
    return Response(orjson.dumps({"user_id": user_id, "predictions": docs}),
                    media_type="application/json")


@router.get("/{user_id}/recommendations", response_model=Recommendations)
async def recommendations(
    user_id: UserId, k: TopK, recommender: RecommenderDep,
    exclude: Annotated[list[PositiveId] | None, Query(
        max_length=MAX_EXCLUDE, description="Movie ids not to recommend (repeat the parameter)."
    )] = None,
    genre: Annotated[Genre | None, Query(description="Only movies of this genre, exact "
                                                     "MovieLens spelling, e.g. Sci-Fi.")] = None,
) -> Response:
    """Live top-k from the model whose movie vectors are published, reflecting the user's
    ratings up to the last one Kafka has.

    ``strategy`` says how the user was scored: ``als`` (the models were fitted on all the
    user's ratings), ``fold-in`` (a new user, or ratings the models were not fitted on:
    folded in from the whole history) or ``popular`` (no history). Movies the user rated
    are never recommended.
    """
    # A hot path too: a kept answer is given on the event loop, since handing a request to a
    # worker thread costs more CPU than the answer; anything that reads a backend or scores
    # runs in the thread pool. Encoded as the response model lays it out, without validating
    # what the model produced.
    live = None if exclude else recommender.kept_answer(user_id, k, genre)
    if live is None:
        live = await run_in_threadpool(recommender.for_user, user_id, k, exclude or (), genre)
    items = [{"movie_id": int(s.movie_id), "title": s.info[0], "year": s.info[1],
              "genres": list(s.info[2]), "rank": i, "score": float(s.score),
              "predicted_rating": stars}
             for i, (s, stars) in enumerate(zip(live.items, live.ratings, strict=True), start=1)]
    return Response(orjson.dumps({"user_id": user_id, "strategy": live.strategy,
                                  "model_version": live.model_version, "genre": genre,
                                  "items": items}), media_type="application/json")


@router.get("/{user_id}/similar-users", response_model=SimilarUser)
def similar_users(user_id: UserId, backends: BackendsDep) -> SimilarUser:
    """The user's nearest neighbour by ALS user factors and the movie it suggests
    (Cassandra ``similar_users``, written after training)."""
    row = queries.similar_user(backends.cassandra(), backends.settings, user_id)
    return SimilarUser.model_validate(row)


@router.get("/{user_id}/taste", response_model=UserTaste)
def taste(user_id: UserId, backends: BackendsDep) -> UserTaste:
    """The user's genre profile, strongest genre first (Cassandra ``user_taste``)."""
    rows = queries.user_taste(backends.cassandra(), backends.settings, user_id)
    return UserTaste(user_id=user_id, genres=[GenreTaste.model_validate(r) for r in rows])
