"""Streaming ingest: the ratings topic into Cassandra (system of record) and Elasticsearch (BI).

Exactly-once downstream comes from idempotent writes plus the checkpoint: a micro-batch that
is replayed after a crash upserts the same Cassandra rows (primary key user, movie) and the
same Elasticsearch documents (``_id`` = user:movie), so nothing is lost or doubled.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from recommender import contracts
from recommender.clients import CASSANDRA_FORMAT as CASSANDRA
from recommender.contracts import MAX_EVENT_ID_CHARS
from recommender.settings import ElasticsearchSettings, Settings
from recommender.streaming import (
    epoch_ms_out_of_range,
    missing,
    parse_kafka_json,
    read_topic,
    reconnect_cassandra,
    retried_batches,
    run_query,
    with_retries,
    write_dead_letters,
)

if TYPE_CHECKING:
    from pyspark.sql import SparkSession
    from pyspark.sql.streaming import StreamingQuery

log = logging.getLogger(__name__)
MOVIES_TTL_S = 60.0

RATING_EVENT_SCHEMA = T.StructType([
    T.StructField("event_id", T.StringType()),
    T.StructField("user_id", T.IntegerType()),
    T.StructField("movie_id", T.IntegerType()),
    T.StructField("rating", T.DoubleType()),
    T.StructField("event_time", T.LongType()),
    T.StructField("event_type", T.StringType()),
    T.StructField("tag", T.StringType()),
    T.StructField("source", T.StringType()),
])


def validation_rules() -> list:
    kind = F.coalesce(F.col("event_type"), F.lit("rating"))
    return [
        *missing("user_id", "movie_id", "event_time"),
        ((F.col("user_id") <= 0) | (F.col("movie_id") <= 0),
         "user_id and movie_id must be positive integers"),
        # Elasticsearch refuses keyword terms over 32,766 bytes, which would fail the batch
        ((F.length("event_id") > MAX_EVENT_ID_CHARS) | (F.length("source") > MAX_EVENT_ID_CHARS),
         f"event_id and source hold at most {MAX_EVENT_ID_CHARS} characters"),
        epoch_ms_out_of_range("event_time"),
        (~kind.isin("rating", "tag"),
         F.concat(F.lit("unknown event_type: "), F.col("event_type"))),
        ((kind == "rating") & F.col("rating").isNull(), "missing field: rating"),
        ((kind == "rating") & ~F.col("rating").between(contracts.RATING_MIN, contracts.RATING_MAX),
         F.concat(F.lit("rating out of range 0.5-5: "), F.col("rating").cast("string"))),
        ((kind == "tag") & (F.coalesce(F.length(F.trim("tag")), F.lit(0)) == 0),
         "missing field: tag"),
    ]


def parse_events(kafka_rows: DataFrame) -> DataFrame:
    """Typed rating/tag events with ``error`` set for every record that must be dead-lettered."""
    parsed = parse_kafka_json(kafka_rows, RATING_EVENT_SCHEMA, validation_rules())
    return parsed.withColumn("event_type", F.coalesce("event_type", F.lit("rating")))


class MoviesCache:
    """Movie titles and genres for enriching ES documents, re-read from Cassandra at most
    once a minute so that ``load metadata`` run later is picked up without a restart."""

    def __init__(self, spark: SparkSession, keyspace: str) -> None:
        self.spark, self.keyspace = spark, keyspace
        self.frame: DataFrame | None = None
        self.loaded_at = 0.0

    def get(self) -> DataFrame:
        if self.frame is None or time.monotonic() - self.loaded_at > MOVIES_TTL_S:
            if self.frame is not None:
                self.frame.unpersist()
            self.frame = F.broadcast(
                self.spark.read.format(CASSANDRA)
                .options(keyspace=self.keyspace, table="movies").load()
                .select("movie_id", "title", "year", "genres").persist()
            )
            self.loaded_at = time.monotonic()
        return self.frame


BULK_BYTES = 8 * 1024 * 1024


def index_arrow_batches(es_settings: ElasticsearchSettings) -> Callable[[Iterable[Any]], Any]:
    """A ``mapInArrow`` function that bulk-indexes pre-rendered NDJSON lines from executors.

    The JVM renders each action + document line (``to_json``), and Arrow hands them over in
    columnar batches, so the Python worker only joins bytes and posts them: no per-row
    objects or JSON encoding in Python. It yields how many documents it indexed, which the
    driver checks against the batch's rating count.
    """

    def index_partition(batches: Iterable[Any]) -> Any:
        import pyarrow as pa

        from recommender.clients import elasticsearch_client
        from recommender.indices import bulk_index

        es = elasticsearch_client(es_settings)

        def post(lines: list[bytes]) -> None:
            body = b"".join(lines)
            rejected: list[tuple[int, str]] = []

            def send() -> None:
                rejected[:] = bulk_index(es, body)

            with_retries(send, "Elasticsearch bulk index of ratings")
            if rejected:
                raise ValueError(f"Elasticsearch rejected {len(rejected)} rating documents, "
                                 f"first: {rejected[0][1]}")

        try:
            pending: list[bytes] = []
            size = indexed = 0
            for batch in batches:
                for line in batch.column(0).to_pylist():
                    pending.append(line)
                    size += len(line)
                    if size >= BULK_BYTES:
                        post(pending)
                        indexed, pending, size = indexed + len(pending), [], 0
            if pending:
                post(pending)
                indexed += len(pending)
            yield pa.RecordBatch.from_pydict({"indexed": [indexed]})
        finally:
            es.close()

    return index_partition


def rating_documents(ratings: DataFrame, movies: DataFrame, index_prefix: str) -> DataFrame:
    """One NDJSON bulk line pair (action, source) per rating, rendered in the JVM, into the
    yearly index ``<index_prefix><event year>``."""
    event_ts = F.timestamp_millis("event_time")
    index = F.concat(F.lit(index_prefix), F.year(event_ts).cast("string"))
    doc_id = F.concat_ws(":", "user_id", "movie_id")
    action = F.to_json(F.struct(F.struct(index.alias("_index"), doc_id.alias("_id"))
                                .alias("index")))
    source = F.to_json(F.struct(
        "event_id", F.col("user_id").cast("string").alias("user_id"),
        F.col("movie_id").cast("string").alias("movie_id"), "rating", "event_time",
        F.unix_millis(F.current_timestamp()).alias("ingested_at"),
        "title", "year", "genres", "source",
    ))
    line = F.concat(action, F.lit("\n"), source, F.lit("\n")).cast("binary")
    return ratings.join(movies, "movie_id", "left").select(line.alias("line"))


def index_ratings(documents: DataFrame, es_settings: ElasticsearchSettings) -> int:
    """Bulk-index the documents from the executors; the number Elasticsearch accepted."""
    indexed = documents.mapInArrow(index_arrow_batches(es_settings), "indexed long")
    return int(indexed.agg(F.sum("indexed")).first()[0] or 0)


def write_batch(batch: DataFrame, batch_id: int, settings: Settings, movies: MoviesCache) -> None:
    """One micro-batch: Cassandra first (the record), then Elasticsearch, then dead letters."""
    started = time.monotonic()
    events = parse_events(batch).persist()
    try:
        # One pass counts every kind, so empty sinks cost no Spark job at all.
        kind = F.when(F.col("error").isNotNull(), "bad").otherwise(F.col("event_type"))
        counts = {r["kind"]: r["count"] for r in
                  events.groupBy(kind.alias("kind")).count().collect()}
        good = events.where(F.col("error").isNull())
        keyspace = settings.cassandra.keyspace
        if counts.get("rating"):
            ratings = good.where(F.col("event_type") == "rating")
            (ratings.select("user_id", "movie_id", F.col("rating").cast("float").alias("rating"),
                            F.timestamp_millis("event_time").alias("event_time"), "event_id",
                            F.current_timestamp().alias("ingested_at"))
             # a user's ratings side by side: the connector batches them into one mutation
             .sortWithinPartitions("user_id", "event_time")
             .write.format(CASSANDRA).mode("append").options(keyspace=keyspace, table="ratings")
             .save())
            prefix = settings.elasticsearch.indices.ratings_prefix
            indexed = index_ratings(rating_documents(ratings, movies.get(), prefix),
                                    settings.elasticsearch)
            if indexed != counts["rating"]:
                raise RuntimeError(f"batch {batch_id}: {counts['rating']} ratings but "
                                   f"{indexed} indexed into Elasticsearch")
        if counts.get("tag"):
            (good.where(F.col("event_type") == "tag")
             .select("user_id", "movie_id", F.trim("tag").alias("tag"),
                     F.timestamp_millis("event_time").alias("event_time"))
             .write.format(CASSANDRA).mode("append").options(keyspace=keyspace, table="tags")
             .save())
        if counts.get("bad"):
            write_dead_letters(events.where(F.col("error").isNotNull()), settings.kafka,
                               settings.kafka.ratings_dlq_topic)
        elapsed = time.monotonic() - started
        n_ratings = counts.get("rating", 0)
        log.info("batch %d: %d ratings, %d tags, %d dead letters in %.2fs (%.0f rows/s)",
                 batch_id, n_ratings, counts.get("tag", 0), counts.get("bad", 0), elapsed,
                 n_ratings / elapsed if elapsed else 0.0)
    finally:
        events.unpersist()


def start_ingest(spark: SparkSession, settings: Settings, *, available_now: bool = False,
                 query_name: str = "ingest") -> StreamingQuery:
    """Start the streaming query; ``available_now`` drains what is in the topic and stops."""
    from recommender.cassandra_schema import wait_for_connector

    wait_for_connector(spark, settings.cassandra.keyspace, ("ratings", "tags", "movies"))
    movies = MoviesCache(spark, settings.cassandra.keyspace)
    writer = (
        read_topic(spark, settings, settings.kafka.ratings_topic,
                   settings.spark.ingest_max_offsets_per_trigger)
        .writeStream.queryName(query_name)
        .option("checkpointLocation", str(settings.spark.checkpoint_dir / query_name))
        .foreachBatch(retried_batches(
            lambda df, batch_id: write_batch(df, batch_id, settings, movies), "ingest",
            before_retry=lambda: reconnect_cassandra(spark, settings.cassandra)))
    )
    writer = (writer.trigger(availableNow=True) if available_now
              else writer.trigger(processingTime=settings.spark.trigger_interval))
    return writer.start()


def run_ingest(settings: Settings, *, available_now: bool = False,
               stop_when: Callable[[], bool] | None = None) -> None:
    """``recommender ingest``: prepare schema and topics, then run until stopped."""
    from recommender.cassandra_schema import ensure_schema
    from recommender.clients import cassandra_session, elasticsearch_client, spark_session
    from recommender.indices import RATINGS_TEMPLATES
    from recommender.indices import setup as setup_indices
    from recommender.topics import ensure_topics

    ensure_topics(settings, settings.kafka.ratings_topic, settings.kafka.ratings_dlq_topic)
    session = cassandra_session(settings.cassandra, wait_s=settings.cassandra.connect_wait_s)
    try:
        ensure_schema(session, settings)
    finally:
        session.cluster.shutdown()
    setup_indices(elasticsearch_client(settings.elasticsearch), settings.elasticsearch.indices,
                  upgrade=RATINGS_TEMPLATES,
                  replicas=settings.elasticsearch.number_of_replicas)
    spark = spark_session(settings, app_name="recommender-ingest")
    run_query(start_ingest(spark, settings, available_now=available_now), stop_when=stop_when)
