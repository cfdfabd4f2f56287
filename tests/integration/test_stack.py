"""The foundation: each real server answers, and Spark reaches Kafka and Cassandra."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid

import pytest

from recommender.clients import (
    cassandra_session,
    elasticsearch_client,
    kafka_admin,
    kafka_consumer,
    kafka_producer,
    spark_kafka_options,
)
from recommender.errors import StackError
from recommender.settings import Settings, StackSettings
from recommender.stack import manager


def test_status_json_reports_pinned_major_versions(stack):
    out = subprocess.run([sys.executable, "-m", "recommender", "stack", "status", "--json"],
                         capture_output=True, text=True, check=True).stdout
    services = {s["name"]: s for s in json.loads(out)}
    assert set(services) == {"kafka", "cassandra", "elasticsearch"}
    for s in services.values():
        assert s["up"] is True, s
        assert s["pid"] and s["port"] and s["data_dir"] and s["log_file"]
    assert services["kafka"]["version"].startswith("4.")
    assert services["cassandra"]["version"].startswith("5.0.")
    assert services["elasticsearch"]["version"].startswith("8.")


def test_kafka_produce_consume_round_trip(stack, settings: Settings):
    topic = f"it-roundtrip-{uuid.uuid4().hex[:6]}"
    producer = kafka_producer(settings.kafka)
    for i in range(10):
        producer.send(topic, key=b"k", value=f"message-{i}".encode())
    producer.flush()
    producer.close()
    consumer = kafka_consumer(settings.kafka, topic, group_id=None, consumer_timeout_ms=10000)
    received = [m.value.decode() for m in consumer]
    consumer.close()
    assert received == [f"message-{i}" for i in range(10)]
    kafka_admin(settings.kafka).delete_topics([topic])


def test_cassandra_create_insert_select(stack, settings: Settings):
    session = cassandra_session(settings.cassandra)
    try:
        session.execute("CREATE KEYSPACE IF NOT EXISTS it_scratch WITH replication = "
                        "{'class': 'SimpleStrategy', 'replication_factor': 1}")
        session.execute("CREATE TABLE IF NOT EXISTS it_scratch.kv (k int PRIMARY KEY, v text)")
        session.execute("INSERT INTO it_scratch.kv (k, v) VALUES (%s, %s)", (1, "one"))
        row = session.execute("SELECT v FROM it_scratch.kv WHERE k = %s", (1,)).one()
        assert row.v == "one"
    finally:
        session.execute("DROP KEYSPACE IF EXISTS it_scratch")
        session.cluster.shutdown()


def test_elasticsearch_index_and_search(stack, settings: Settings):
    es = elasticsearch_client(settings.elasticsearch)
    index = f"it-scratch-{uuid.uuid4().hex[:6]}"
    es.indices.create(index=index, mappings={"properties": {"title": {"type": "text"}}})
    es.index(index=index, id="1", document={"title": "Toy Story"}, refresh=True)
    hits = es.search(index=index, query={"match": {"title": "toy"}})["hits"]["hits"]
    es.indices.delete(index=index)
    assert [h["_id"] for h in hits] == ["1"]


def test_spark_reads_kafka_and_round_trips_cassandra(spark, settings: Settings):
    topic = f"it-spark-{uuid.uuid4().hex[:6]}"
    producer = kafka_producer(settings.kafka)
    for i in range(5):
        producer.send(topic, key=str(i).encode(), value=f"v{i}".encode())
    producer.flush()
    producer.close()
    df = (spark.read.format("kafka").options(**spark_kafka_options(settings.kafka))
          .option("subscribe", topic).load()
          .selectExpr("CAST(CAST(key AS STRING) AS INT) AS k", "CAST(value AS STRING) AS v"))
    session = cassandra_session(settings.cassandra)
    session.execute("CREATE KEYSPACE IF NOT EXISTS it_spark WITH replication = "
                    "{'class': 'SimpleStrategy', 'replication_factor': 1}")
    session.execute("CREATE TABLE IF NOT EXISTS it_spark.kv (k int PRIMARY KEY, v text)")
    try:
        wait_until_spark_sees(spark, "it_spark", "kv")
        (df.write.format("org.apache.spark.sql.cassandra").mode("append")
         .options(keyspace="it_spark", table="kv").save())
        back = (spark.read.format("org.apache.spark.sql.cassandra")
                .options(keyspace="it_spark", table="kv").load().collect())
        assert sorted((r.k, r.v) for r in back) == [(i, f"v{i}") for i in range(5)]
    finally:
        session.execute("DROP KEYSPACE IF EXISTS it_spark")
        session.cluster.shutdown()
        kafka_admin(settings.kafka).delete_topics([topic])


def wait_until_spark_sees(spark, keyspace: str, table: str, timeout_s: float = 60) -> None:
    """The connector learns about new schema from Cassandra's events: poll, don't sleep."""
    from pyspark.errors import AnalysisException

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return spark.read.format("org.apache.spark.sql.cassandra").options(
                keyspace=keyspace, table=table).load().printSchema()
        except AnalysisException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_up_refuses_a_busy_port_and_starts_nothing(stack, tmp_path):
    """A port held by a stranger: a clear error naming service and port, no process left."""
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        busy = StackSettings(state_dir=tmp_path / "stack", kafka_port=port,
                             kafka_controller_port=port + 1 if port < 65535 else port - 1)
        with pytest.raises(StackError, match=rf"kafka.*port {port}"):
            manager.up(busy)
    assert not any(s.pid for s in manager.status(busy))


def test_down_when_nothing_runs_says_so(tmp_path):
    env_state = str(tmp_path / "empty-stack")
    result = subprocess.run([sys.executable, "-m", "recommender", "stack", "down"],
                            capture_output=True, text=True,
                            env={**os.environ,
                                 "RECOMMENDER_STACK__STATE_DIR": env_state})
    assert result.returncode == 0
    assert "nothing is running" in result.stderr
