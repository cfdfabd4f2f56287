"""Serving path against the real stack: website request -> API -> Kafka -> predictor ->
shipper -> Elasticsearch -> API; re-deliveries, rejected documents, an Elasticsearch outage."""

from __future__ import annotations

import json
import threading
import time
import uuid

import pytest
from fastapi.testclient import TestClient

from recommender.clients import elasticsearch_client, kafka_consumer, kafka_producer
from recommender.predict.job import Predictor
from recommender.serve.main import create_app
from recommender.settings import Settings
from recommender.ship import Shipper
from recommender.stack.base import find_java
from recommender.stack.elasticsearch import ElasticsearchService
from recommender.topics import ensure_topics


def private(settings: Settings, name: str) -> Settings:
    suffix = f"{name}-{uuid.uuid4().hex[:6]}"
    kafka = settings.kafka.model_copy(update={
        "requests_topic": f"it-{suffix}-requests", "requests_dlq_topic": f"it-{suffix}-rdlq",
        "predictions_topic": f"it-{suffix}-predictions",
        "predictions_dlq_topic": f"it-{suffix}-pdlq",
        "predictor_group": f"it-{suffix}-predictor", "shipper_group": f"it-{suffix}-shipper"})
    spark = settings.spark.model_copy(update={
        "checkpoint_dir": settings.spark.checkpoint_dir / suffix})
    own = settings.model_copy(update={"kafka": kafka, "spark": spark})
    ensure_topics(own, *(getattr(kafka, f) for f in (
        "requests_topic", "requests_dlq_topic", "predictions_topic", "predictions_dlq_topic")))
    return own


class ShipperThread:
    """A shipper running beside the test, stopped on exit."""

    def __init__(self, settings: Settings) -> None:
        self.stop = threading.Event()
        self.shipper = Shipper(settings)
        self.thread = threading.Thread(target=self.shipper.run, args=(self.stop.is_set,))

    def __enter__(self) -> Shipper:
        self.thread.start()
        return self.shipper

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(timeout=120)


def documents(settings: Settings, request_ids: list[str]) -> dict[str, int]:
    """How many prediction documents each request has in Elasticsearch."""
    es = elasticsearch_client(settings.elasticsearch)
    es.indices.refresh(index="predictions")
    counts: dict[str, int] = {}
    for start in range(0, len(request_ids), 1000):
        body = es.search(index="predictions", size=0, query={"terms": {
            "request_id": request_ids[start:start + 1000]}}, aggs={"ids": {"terms": {
                "field": "request_id", "size": 1000}}})
        counts.update({b["key"]: b["doc_count"] for b in body["aggregations"]["ids"]["buckets"]})
    return counts


def wait_for(condition, what: str, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(1)


def prediction(request_id: str, **fields) -> bytes:
    now = int(time.time() * 1000)
    return json.dumps({"request_id": request_id, "user_id": 1, "movie_id": 1, "rank": None,
                       "predicted_rating": 4.0, "score": 4.0, "title": "Toy Story",
                       "year": 1995, "genres": ["Animation"], "model_version": "v",
                       "strategy": "als", "requested_at": now - 5, "predicted_at": now,
                       "reason": None, **fields}).encode()


def test_request_through_api_predictor_shipper_and_back(spark, trained):
    settings = private(trained, "roundtrip")
    query = Predictor(spark, settings).start()
    try:
        with ShipperThread(settings), TestClient(create_app(settings)) as api:
            answer = api.post("/prediction-requests", json={"user_id": 1, "movie_id": 1})
            assert answer.status_code == 202, answer.text
            [request_id] = answer.json()["request_ids"]
            assert api.get(f"/prediction-requests/{request_id}").status_code in (404, 200)
            wait_for(lambda: api.get(f"/prediction-requests/{request_id}").status_code == 200,
                     "the prediction to reach Elasticsearch")
            body = api.get(f"/prediction-requests/{request_id}").json()
            [doc] = body["predictions"]
            assert (doc["user_id"], doc["movie_id"], doc["title"]) == (1, 1, "Toy Story")
            assert doc["strategy"] == "als" and 0.5 <= doc["predicted_rating"] <= 5
    finally:
        query.stop()


def test_redelivered_predictions_overwrite_and_rejected_ones_go_to_the_dead_letters(trained):
    settings = private(trained, "dedupe")
    ids = [f"d-{uuid.uuid4().hex}" for _ in range(50)]
    producer = kafka_producer(settings.kafka)
    for _ in range(3):  # every prediction delivered three times
        for request_id in ids:
            producer.send(settings.kafka.predictions_topic, key=request_id.encode(),
                          value=prediction(request_id))
    rejected = f"r-{uuid.uuid4().hex}"
    producer.send(settings.kafka.predictions_topic, value=prediction(rejected, unexpected=1))
    producer.send(settings.kafka.predictions_topic, value=b"{broken")
    producer.flush()
    with ShipperThread(settings) as shipper:
        wait_for(lambda: shipper.stats.indexed + shipper.stats.dead_letters >= 3 * 50 + 2,
                 "the shipper to consume everything")
    assert documents(settings, ids) == dict.fromkeys(ids, 1)
    consumer = kafka_consumer(settings.kafka, settings.kafka.predictions_dlq_topic,
                              group_id=None, consumer_timeout_ms=5000)
    letters = {json.loads(m.value)["raw"][:40]: json.loads(m.value)["reason"] for m in consumer}
    consumer.close()
    assert len(letters) == 2
    assert any("strict_dynamic_mapping" in r for r in letters.values()), letters
    assert any("malformed JSON" in r for r in letters.values()), letters


@pytest.mark.slow
def test_elasticsearch_down_for_30s_loses_nothing_and_duplicates_nothing(trained):
    settings = private(trained, "outage")
    es_service = ElasticsearchService(settings.stack)
    ids = [f"o-{uuid.uuid4().hex}" for _ in range(4000)]
    producer = kafka_producer(settings.kafka)

    def send(batch: list[str]) -> None:
        for request_id in batch:
            producer.send(settings.kafka.predictions_topic, key=request_id.encode(),
                          value=prediction(request_id))
        producer.flush()

    with ShipperThread(settings) as shipper:
        send(ids[:2000])
        wait_for(lambda: shipper.stats.indexed >= 2000, "the first half to be shipped")
        assert es_service.stop(), "the stack's Elasticsearch was not running"
        try:
            send(ids[2000:])
            time.sleep(30)  # the outage itself: the shipper must wait, not drop or crash
            assert shipper.stats.indexed == 2000
            assert shipper.stats.es_retries > 0
        finally:
            es_service.start(find_java(settings.stack))
            es_service.wait_ready(time.monotonic() + settings.stack.startup_timeout_s)
        wait_for(lambda: shipper.stats.indexed >= 4000, "the shipper to catch up")
    producer.close()
    assert documents(settings, ids) == dict.fromkeys(ids, 1)
