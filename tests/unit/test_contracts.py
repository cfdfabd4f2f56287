"""Each topic payload is defined once (``contracts``); the Spark schemas that parse it and the
API models that accept or return it must name the same fields, so adding a field to only one
of them fails here."""

from __future__ import annotations

from dataclasses import fields

from recommender.contracts import Prediction, PredictionRequest, RatingEvent
from recommender.ingest_job import RATING_EVENT_SCHEMA
from recommender.predict.job import REQUEST_SCHEMA
from recommender.predict.scoring import REQUEST_COLUMNS
from recommender.serve.schemas import PredictionOut, PredictionRequestIn, RatingIn


def names(payload: type) -> list[str]:
    return [f.name for f in fields(payload)]


def test_a_rating_event_is_what_ingest_parses_and_what_post_ratings_sends():
    assert RATING_EVENT_SCHEMA.fieldNames() == names(RatingEvent)
    assert set(RatingIn.model_fields) <= set(names(RatingEvent))  # the API fills in the rest


def test_a_prediction_request_is_what_the_predictor_parses_and_the_api_accepts():
    assert REQUEST_SCHEMA.fieldNames() == names(PredictionRequest)
    assert list(REQUEST_COLUMNS) == names(PredictionRequest)
    # the API stamps requested_at itself; everything else is the caller's
    assert [*PredictionRequestIn.model_fields, "requested_at"] == names(PredictionRequest)


def test_a_prediction_is_what_the_api_returns():
    assert list(PredictionOut.model_fields) == names(Prediction)
