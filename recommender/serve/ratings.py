"""``POST /ratings``: a user rates a movie, and the pipeline learns it like any other rating.

The API does not write Cassandra itself: the rating goes to the ratings topic as the
``RatingEvent`` replay sends (key ``user_id``), ingest stores it, and the speed layer folds
the user in from it on their next request (``docs/speed-layer.md``). One path for every
rating, so the dead-letter rules, the Elasticsearch copy and the training data all hold.
"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Body, status
from fastapi.exceptions import RequestValidationError

from recommender.contracts import RatingEvent
from recommender.serve import queries
from recommender.serve.backends import kafka_errors
from recommender.serve.deps import ApiKeyDep, BackendsDep
from recommender.serve.schemas import RatingAccepted, RatingIn

router = APIRouter(prefix="/ratings", tags=["ratings"])
SOURCE = "api"  # event ids read api:<user>:<movie>:<event_time>


@router.post("", response_model=RatingAccepted, status_code=status.HTTP_202_ACCEPTED,
             dependencies=[ApiKeyDep],
             responses={401: {"description": "X-API-Key missing or wrong"},
                        422: {"description": "Unknown movie, or a rating off the half-star "
                                             "scale"}})
def rate(body: Annotated[RatingIn, Body()], backends: BackendsDep) -> RatingAccepted:
    """Publish the rating to the ratings topic; returns once Kafka acknowledged it (acks=all).

    The movie must be in the catalogue (``movies``); the rating reaches Cassandra with
    ingest's next micro-batch, and the user's recommendations follow it from then on.
    """
    settings = backends.settings
    if not queries.movie_exists(backends.cassandra(), settings, body.movie_id):
        raise RequestValidationError([{
            "loc": ("body", "movie_id"), "type": "unknown_movie", "input": body.movie_id,
            "msg": f"movie {body.movie_id} is not in the catalogue"}])
    now = int(time.time() * 1000)
    event = RatingEvent(event_id=f"{SOURCE}:{body.user_id}:{body.movie_id}:{now}",
                        user_id=body.user_id, movie_id=body.movie_id, rating=body.rating,
                        event_time=now, source=SOURCE)
    topic = settings.kafka.ratings_topic
    producer = backends.producer()
    with kafka_errors(settings):
        producer.send(topic, key=event.key(), value=event.to_json()).get(
            timeout=backends.timeout_s * 2)
    return RatingAccepted(event_id=event.event_id, topic=topic, event_time=now)
