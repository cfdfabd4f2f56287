"""Serving path against the real stack: website request -> API -> Kafka -> predictor ->
shipper -> Elasticsearch -> API; re-deliveries, rejected documents, an Elasticsearch outage."""

from __future__ import annotations

import json
import time
import uuid

import pytest
from fastapi.testclient import TestClient

from recommender.clients import elasticsearch_client, kafka_consumer, kafka_producer
from recommender.contracts import PREDICTIONS_MAPPING
from recommender.indices import delete_older_than, delete_predicted_before, predictions_index
from recommender.runtime import wait_for
from recommender.serve.main import create_app
from tests.support.elastic import documents
from tests.support.names import private
from tests.support.servers import down
from tests.support.serving import ShipperThread, serving


def prediction(request_id: str, **fields) -> bytes:
    now = int(time.time() * 1000)
    return json.dumps({"request_id": request_id, "user_id": 1, "movie_id": 1, "rank": None,
                       "predicted_rating": 4.0, "score": 4.0, "title": "Toy Story",
                       "year": 1995, "genres": ["Animation"], "model_version": "v",
                       "strategy": "als", "requested_at": now - 5, "predicted_at": now,
                       "answer_size": 1, "reason": None, **fields}).encode()


def test_request_through_api_predictor_shipper_and_back(spark, trained):
    settings = private(trained, "roundtrip")
    with serving(spark, settings), TestClient(create_app(settings)) as api:
        answer = api.post("/prediction-requests", json={"user_id": 1, "movie_id": 1})
        assert answer.status_code == 202, answer.text
        [request_id] = answer.json()["request_ids"]
        assert api.get(f"/prediction-requests/{request_id}").status_code in (404, 200)
        wait_for(lambda: api.get(f"/prediction-requests/{request_id}").status_code == 200,
                 "the prediction to reach Elasticsearch")
        body = api.get(f"/prediction-requests/{request_id}").json()
        [doc] = body["predictions"]
        assert (doc["user_id"], doc["movie_id"], doc["title"]) == (1, 1, "Toy Story")
        # a fifth of user 1's ratings were held out of fitting: the speed layer folds them in
        assert doc["strategy"] == "fold-in" and 0.5 <= doc["predicted_rating"] <= 5


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
        with down(settings.stack, "elasticsearch"):
            send(ids[2000:])
            time.sleep(30)  # the outage itself: the shipper must wait, not drop or crash
            assert shipper.stats.indexed == 2000
            assert shipper.stats.es_retries > 0
        wait_for(lambda: shipper.stats.indexed >= 4000, "the shipper to catch up")
    producer.close()
    assert documents(settings, ids) == dict.fromkeys(ids, 1)


def test_latest_index_keeps_the_newest_prediction_per_movie_and_retention_ages_out(trained):
    """Out-of-order delivery (an older prediction after a newer one) never replaces the newer
    one; `es retention` drops the old daily index and the old latest documents."""
    settings = private(trained, "latest")
    user = 1_000_000_000 + uuid.uuid4().int % 1_000_000_000
    now = int(time.time() * 1000)
    old = now - 40 * 86_400_000
    deliveries = [(1, now, 4.0), (1, now - 1000, 2.0), (2, old, 3.0)]
    producer = kafka_producer(settings.kafka)
    for movie, predicted_at, rating in deliveries:
        producer.send(settings.kafka.predictions_topic, value=prediction(
            f"l-{uuid.uuid4().hex}", user_id=user, movie_id=movie, predicted_rating=rating,
            predicted_at=predicted_at))
    producer.flush()
    with ShipperThread(settings) as shipper:
        wait_for(lambda: shipper.stats.indexed >= len(deliveries), "the shipper to index all")
    es = elasticsearch_client(settings.elasticsearch)
    names = settings.elasticsearch.indices

    def latest() -> dict[int, float]:
        es.indices.refresh(index=names.latest_predictions)
        hits = es.search(index=names.latest_predictions, query={"term": {"user_id": user}},
                         size=10)["hits"]["hits"]
        return {int(h["_source"]["movie_id"]): h["_source"]["predicted_rating"] for h in hits}

    assert latest() == {1: 4.0, 2: 3.0}
    old_index, today = predictions_index(names, old), predictions_index(names, now)
    assert es.indices.exists(index=old_index) and es.indices.exists(index=today)
    assert old_index in delete_older_than(es, names.predictions_prefix, 30)
    assert delete_predicted_before(es, names.latest_predictions, 30) >= 1
    assert latest() == {1: 4.0}
    assert not es.indices.exists(index=old_index) and es.indices.exists(index=today)


def test_an_index_created_by_an_older_release_takes_the_new_fields(trained):
    """Today's daily index was created before ``answer_size`` existed (its mapping is strict)
    and with ``reason`` mapped differently: the shipper adds the missing field when it starts,
    leaves the other one alone (Elasticsearch cannot change it), and nothing is refused."""
    settings = private(trained, "upgrade")
    es = elasticsearch_client(settings.elasticsearch)
    predicted_at = 631_152_000_000 + uuid.uuid4().int % 86_400_000  # some time on 1990-01-01
    index = predictions_index(settings.elasticsearch.indices, predicted_at)
    old = {**PREDICTIONS_MAPPING, "properties": {
        **{k: v for k, v in PREDICTIONS_MAPPING["properties"].items() if k != "answer_size"},
        "reason": {"type": "keyword"}}}
    template = f"old-release-{uuid.uuid4().hex}"  # outranks the current template, for `index`
    es.indices.put_index_template(name=template, index_patterns=[index], priority=1000,
                                  template={"mappings": old})
    try:
        es.indices.delete(index=index, ignore_unavailable=True)
        es.indices.create(index=index)
    finally:
        es.indices.delete_index_template(name=template)
    assert "answer_size" not in es.indices.get_mapping(index=index)[index]["mappings"][
        "properties"]
    request_id = f"u-{uuid.uuid4().hex}"
    producer = kafka_producer(settings.kafka)
    producer.send(settings.kafka.predictions_topic, key=request_id.encode(),
                  value=prediction(request_id, predicted_at=predicted_at, answer_size=1))
    producer.flush()
    with ShipperThread(settings) as shipper:
        wait_for(lambda: shipper.stats.indexed + shipper.stats.dead_letters >= 1,
                 "the shipper to handle the prediction")
    assert shipper.stats.dead_letters == 0
    es.indices.refresh(index=index)
    [hit] = es.search(index=index, query={"term": {"request_id": request_id}})["hits"]["hits"]
    assert hit["_source"]["answer_size"] == 1
    fields = es.indices.get_mapping(index=index)[index]["mappings"]["properties"]
    assert fields["answer_size"] == {"type": "integer"} and fields["reason"]["type"] == "keyword"
