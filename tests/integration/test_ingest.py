"""Ingestion against the real stack: replay -> Kafka -> Spark -> Cassandra and Elasticsearch."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid

from data_loading.datasets import locate
from data_loading.replay import replay
from recommender.cassandra_schema import ensure_schema, wait_for_connector
from recommender.clients import CASSANDRA_FORMAT as CASSANDRA
from recommender.clients import (
    cassandra_session,
    elasticsearch_client,
    kafka_consumer,
    kafka_producer,
)
from recommender.ingest_job import start_ingest
from recommender.settings import Settings, as_env
from recommender.topics import ensure_topics
from tests.support.names import private

ML_SMALL_RATINGS = 100_836


def prepare(spark, settings: Settings) -> None:
    """Topics and tables, and the tables visible to this session's Cassandra connector (its
    schema metadata may lag the driver's DDL by seconds)."""
    ensure_topics(settings, settings.kafka.ratings_topic, settings.kafka.ratings_dlq_topic)
    session = cassandra_session(settings.cassandra)
    ensure_schema(session, settings)
    session.cluster.shutdown()
    wait_for_connector(spark, settings.cassandra.keyspace, ("ratings",))


def cassandra_count(spark, settings: Settings, table: str = "ratings") -> int:
    return (spark.read.format(CASSANDRA)
            .options(keyspace=settings.cassandra.keyspace, table=table).load().count())


def drain(spark, settings: Settings) -> None:
    start_ingest(spark, settings, available_now=True,
                 query_name=f"ingest-{uuid.uuid4().hex[:6]}").awaitTermination()


def test_ml_latest_small_lands_exactly_once_in_cassandra_and_elasticsearch(
        spark, ml_small, data_dir):
    settings = ml_small.settings
    assert ml_small.replayed == ML_SMALL_RATINGS
    assert cassandra_count(spark, settings) == ML_SMALL_RATINGS
    [row] = (spark.read.format(CASSANDRA)
             .options(keyspace=settings.cassandra.keyspace, table="ratings").load()
             .where("user_id = 1 AND movie_id = 3").collect())
    assert (row.rating, int(row.event_time.timestamp())) == (4.0, 964981247)
    assert row.event_id == "ml-latest-small:1:3:964981247000"
    es = elasticsearch_client(settings.elasticsearch)
    ratings = f"{settings.elasticsearch.indices.ratings_prefix}*"
    es.indices.refresh(index=ratings)
    indexed = es.count(index=ratings, query={"bool": {"filter": [
        {"term": {"source": "ml-latest-small"}},
        {"range": {"ingested_at": {"gte": ml_small.started_ms}}}]}})["count"]
    assert indexed == ML_SMALL_RATINGS
    # Replaying the same events again changes nothing downstream.
    replay(settings, locate("ml-latest-small", data_dir).ratings(), resume=False, limit=1000)
    drain(spark, settings)
    assert cassandra_count(spark, settings) == ML_SMALL_RATINGS


BAD_EVENTS = {
    b"{not json": "malformed JSON",
    b'{"user_id": 1, "movie_id": 2, "rating": 7.0, "event_time": 1}': "rating out of range",
    b'{"user_id": 1, "movie_id": 2, "event_time": 1}': "missing field: rating",
    b'{"movie_id": 2, "rating": 3.0, "event_time": 1}': "missing field: user_id",
    b'{"user_id": "abc", "movie_id": 2, "rating": 3.0, "event_time": 1}': "wrong type",
    b'{"user_id": 1, "movie_id": 2, "rating": 3.0, "event_time": 1, "event_type": "like"}':
        "unknown event_type",
    b'{"user_id": 1, "movie_id": 2, "event_time": 1, "event_type": "tag"}': "missing field: tag",
    b'{"user_id": -4, "movie_id": 2, "rating": 3.0, "event_time": 1}': "positive",
    b"[1, 2, 3]": "malformed JSON",
    b"": "empty message",
}


def test_bad_events_go_to_the_dead_letter_topic_with_reason_and_offset(spark, settings, stack):
    own = private(settings, "dlq", own_keyspace=True)
    prepare(spark, own)
    producer = kafka_producer(own.kafka)
    good = [{"event_id": f"g{i}", "user_id": 7, "movie_id": 100 + i, "rating": 4.0,
             "event_time": 1_000_000 + i, "event_type": "rating", "source": "it"}
            for i in range(3)]
    sent = {}
    for value in [*BAD_EVENTS, *(json.dumps(g).encode() for g in good)]:
        meta = producer.send(own.kafka.ratings_topic, key=b"7", value=value).get(timeout=10)
        sent[(meta.partition, meta.offset)] = value
    producer.close()
    drain(spark, own)
    assert cassandra_count(spark, own) == 3
    consumer = kafka_consumer(own.kafka, own.kafka.ratings_dlq_topic, group_id=None,
                              consumer_timeout_ms=5000)
    letters = [json.loads(m.value) for m in consumer]
    consumer.close()
    assert len(letters) == len(BAD_EVENTS)
    for letter in letters:
        raw = sent[(letter["partition"], letter["offset"])]
        assert letter["source_topic"] == own.kafka.ratings_topic
        assert letter["raw"].encode() == raw
        assert BAD_EVENTS[raw] in letter["reason"], (raw, letter["reason"])


def test_ingest_killed_mid_stream_and_restarted_loses_and_duplicates_nothing(
        spark, settings, data_dir, stack, tmp_path):
    own = private(settings, "kill", own_keyspace=True, ingest_max_offsets_per_trigger=5000)
    prepare(spark, own)
    dataset = locate("ml-latest-small", data_dir)
    replay(own, dataset.ratings(), resume=False, limit=60_000)
    env = as_env(own)
    log = tmp_path / "ingest.log"

    def start() -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "recommender", "ingest"], env=env,
                                stdout=open(log, "ab"), stderr=subprocess.STDOUT)

    job = start()
    deadline = time.monotonic() + 300
    while cassandra_count(spark, own) == 0:
        assert job.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, "ingest wrote nothing in 300 s"
        time.sleep(2)
    job.send_signal(signal.SIGKILL)
    job.wait()
    landed_at_kill = cassandra_count(spark, own)
    assert landed_at_kill < 60_000, "the job finished before it was killed; nothing was tested"
    replay(own, dataset.ratings(), limit=20_000)  # more arrive while it is down
    job = start()
    try:
        while cassandra_count(spark, own) < 80_000:
            assert job.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline + 300, "ingest did not catch up after restart"
            time.sleep(2)
    finally:
        job.send_signal(signal.SIGTERM)
        job.wait(timeout=60)
    assert cassandra_count(spark, own) == 80_000
