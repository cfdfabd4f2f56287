"""Secure mode end to end: a slice of ml-latest-small replayed, ingested, trained on,
predicted, shipped and read back through the API, each component a separate process that
authenticates as its own least-privilege account, configured by its environment alone."""

from __future__ import annotations

import time

import httpx
import pytest
from pydantic import SecretStr

from recommender.settings import Settings
from recommender.stack.connect import admin_settings
from tests.secure.conftest import Components, stop

SLICE = 20_000  # the first ratings of ml-latest-small by time: enough users to train on
USER = 1  # rated in the first days of the dataset, so part of the slice


@pytest.fixture(scope="session")
def ingest_started_ms() -> int:
    """When this session's ingest began: its documents are the ones indexed since (the
    secure stack's default indices outlive sessions, which index the same ids again)."""
    return int(time.time() * 1000)


@pytest.fixture(scope="session")
def ingested(components: Components, ingest_started_ms: int) -> Components:
    components.run("loader", "load", "metadata")
    components.run("loader", "load", "ratings", "--limit", str(SLICE), "--no-resume")
    components.run("ingest", "ingest", "--once")
    return components


@pytest.fixture(scope="session")
def trained(ingested: Components) -> Components:
    ingested.run("trainer", "train")
    return ingested


def admin(settings: Settings) -> Settings:
    return admin_settings(settings.stack, names=settings)


def test_replayed_ratings_reach_cassandra_and_elasticsearch(ingested: Components,
                                                            ingest_started_ms: int):
    from recommender.clients import cassandra_session, elasticsearch_client

    settings = admin(ingested.settings)
    session = cassandra_session(settings.cassandra)
    try:
        rows = session.execute(f"SELECT COUNT(*) FROM {settings.cassandra.keyspace}.ratings",
                               timeout=60).one()[0]
    finally:
        session.cluster.shutdown()
    assert rows == SLICE
    es = elasticsearch_client(settings.elasticsearch)
    try:
        ratings = f"{settings.elasticsearch.indices.ratings_prefix}*"
        es.indices.refresh(index=ratings)
        assert es.count(index=ratings, query={"range": {"ingested_at": {
            "gte": ingest_started_ms}}})["count"] == SLICE
    finally:
        es.close()


def test_a_request_is_predicted_shipped_and_read_back(trained: Components, api: str,
                                                      api_key: SecretStr):
    accepted = httpx.post(f"{api}/prediction-requests", json={"user_id": USER, "k": 5},
                          headers={"X-API-Key": api_key.get_secret_value()}, timeout=30)
    assert accepted.status_code == 202, accepted.text
    request_id = accepted.json()["request_ids"][0]
    predictor = trained.start("predictor", "predict")
    shipper = trained.start("shipper", "ship")
    try:
        answer = wait_for_answer(f"{api}/prediction-requests/{request_id}", predictor, shipper)
    finally:
        stop(predictor)
        stop(shipper)
    predictions = answer["predictions"]
    assert len(predictions) == 5
    assert {p["user_id"] for p in predictions} == {USER}
    assert all(p["model_version"] and p["title"] for p in predictions)


def test_the_api_reads_recommendations_and_similar_movies(trained: Components, api: str):
    health = httpx.get(f"{api}/health", timeout=30)
    assert health.status_code == 200, health.text  # Kafka, Cassandra and ES as the api account
    live = httpx.get(f"{api}/users/{USER}/recommendations", params={"k": 3}, timeout=30)
    assert live.status_code == 200, live.text
    assert len(live.json()["items"]) == 3
    similar = httpx.get(f"{api}/movies/1/similar", params={"k": 3}, timeout=30)
    assert similar.status_code == 200, similar.text


def wait_for_answer(url: str, *jobs, timeout_s: float = 420) -> dict:
    """Poll the API until the request's predictions are indexed; fail early if a job died."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        response = httpx.get(url, timeout=30)
        if response.status_code == 200:
            return response.json()
        assert response.status_code == 404, response.text
        dead = [job.args for job in jobs if job.poll() is not None]
        assert not dead, f"exited before answering: {dead}"
        time.sleep(2)
    pytest.fail(f"no prediction at {url} after {timeout_s:.0f}s")
