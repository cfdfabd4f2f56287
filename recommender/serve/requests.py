"""``/prediction-requests``: ask the streaming predictor, then poll for its answer.

The API does not score these itself: a request goes to the request topic (key ``user_id``,
so one user's requests stay in order), the predictor answers on the predictions topic, the
shipper indexes the answer, and ``GET /prediction-requests/{id}`` finds it there.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated

from fastapi import APIRouter, Body, Path, status
from fastapi.exceptions import RequestValidationError

from recommender.contracts import PredictionRequest
from recommender.serve import queries
from recommender.serve.backends import kafka_errors
from recommender.serve.deps import ApiKeyDep, BackendsDep, EsDep, IndicesDep, SettingsDep
from recommender.serve.schemas import (
    PredictionOut,
    PredictionRequestBody,
    PredictionRequestIn,
    RequestId,
    RequestPredictions,
    RequestsAccepted,
)
from recommender.settings import Settings

router = APIRouter(prefix="/prediction-requests", tags=["prediction requests"])


@router.post("", response_model=RequestsAccepted, status_code=status.HTTP_202_ACCEPTED,
             dependencies=[ApiKeyDep],
             responses={401: {"description": "X-API-Key missing or wrong"}})
def submit(body: Annotated[PredictionRequestBody, Body()],
           backends: BackendsDep) -> RequestsAccepted:
    """Publish one request (an object) or many (an array) to the request topic.

    Each gets ``requested_at`` = now and a uuid4-hex ``request_id`` unless one is given
    (give one to make retries idempotent: the predictions overwrite each other). Returns
    once Kafka acknowledged every request (acks=all).
    """
    items = body if isinstance(body, list) else [body]
    settings = backends.settings
    _check_k(items, settings, batch=isinstance(body, list))
    now = int(time.time() * 1000)
    requests = [PredictionRequest(request_id=item.request_id or uuid.uuid4().hex,
                                  user_id=item.user_id, movie_id=item.movie_id, k=item.k,
                                  exclude=list(item.exclude), requested_at=now)
                for item in items]
    topic = settings.kafka.requests_topic
    producer = backends.producer()
    with kafka_errors(settings):
        futures = [producer.send(topic, key=r.key(), value=r.to_json()) for r in requests]
        for future in futures:
            future.get(timeout=backends.timeout_s * 2)
    return RequestsAccepted(request_ids=[r.request_id for r in requests], topic=topic)


@router.get("/{request_id}", response_model=RequestPredictions,
            responses={404: {"description": "Not answered (or not shipped) yet"}})
async def result(request_id: Annotated[RequestId, Path()], es: EsDep, settings: SettingsDep,
                 indices: IndicesDep) -> RequestPredictions:
    """The request's prediction(s) once the shipper indexed them, ranked; 404 until then."""
    docs = await queries.request_predictions(es, settings, indices.predictions_alias, request_id)
    return RequestPredictions(request_id=request_id,
                              predictions=[PredictionOut.model_validate(d) for d in docs])


def _check_k(items: list[PredictionRequestIn], settings: Settings, batch: bool) -> None:
    """``k`` against ``api.max_k``, reported like any other validation error (422)."""
    limit = settings.api.max_k
    errors = [{"loc": ("body", i, "k") if batch else ("body", "k"), "type": "less_than_equal",
               "msg": f"Input should be less than or equal to {limit} (api.max_k)",
               "input": item.k}
              for i, item in enumerate(items) if item.k is not None and item.k > limit]
    if errors:
        raise RequestValidationError(errors)
