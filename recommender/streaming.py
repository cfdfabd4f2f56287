"""Machinery shared by the Structured Streaming jobs (ingest, predict).

Bad records are data, not crashes: ``parse_kafka_json`` turns Kafka rows into typed columns
plus an ``error`` column; the good rows go on, the others go to a dead-letter topic with the
original bytes, their source offset and the reason (``write_dead_letters``).
"""

from __future__ import annotations

import json
import logging
import operator
import time
from collections.abc import Callable
from functools import reduce
from typing import TYPE_CHECKING

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from recommender.clients import spark_kafka_options, spark_kafka_sink_options
from recommender.errors import ExitStatus, RecommenderError
from recommender.settings import CassandraSettings, KafkaSettings, Settings

if TYPE_CHECKING:
    from pyspark.sql import SparkSession
    from pyspark.sql.streaming import StreamingQuery

log = logging.getLogger(__name__)
CORRUPT = "_corrupt_record"
Rule = tuple[Column, Column | str]
KEEP_NULLS = {"ignoreNullFields": "false"}  # a contract field is present even when null
NO_NAN = {"allowNonNumericNumbers": "false"}  # RFC 8259 JSON, as every other consumer reads it


_TRIGGER_UNITS = {"ms": 0.001, "millisecond": 0.001, "milliseconds": 0.001, "s": 1.0,
                  "second": 1.0, "seconds": 1.0, "minute": 60.0, "minutes": 60.0}


def trigger_seconds(interval: str) -> float:
    """Seconds in a Spark trigger interval such as ``"2 seconds"`` or ``"500 milliseconds"``
    (``spark.trigger_interval``), for code that paces itself on the streaming jobs."""
    number, _, unit = interval.strip().partition(" ")
    try:
        return float(number) * _TRIGGER_UNITS[unit.strip().lower() or "seconds"]
    except (ValueError, KeyError):
        raise ValueError(f"trigger interval {interval!r}: use e.g. '2 seconds' or "
                         "'500 milliseconds'") from None


def read_topic(spark: SparkSession, settings: Settings, topic: str, max_offsets_per_trigger: int,
               starting_offsets: dict[int, int] | None = None) -> DataFrame:
    """A Kafka source bounded per micro-batch by ``maxOffsetsPerTrigger``.

    ``starting_offsets`` (partition -> offset) applies only to a new checkpoint; partitions
    it does not name start from the earliest offset.
    """
    start = "earliest"
    if starting_offsets:  # Spark wants every partition named: -2 is "earliest"
        from recommender.topics import partition_count

        partitions = range(partition_count(settings, topic))
        start = json.dumps({topic: {str(p): starting_offsets.get(p, -2) for p in partitions}})
    return (
        spark.readStream.format("kafka")
        .options(**spark_kafka_options(settings.kafka))
        .option("subscribe", topic)
        .option("startingOffsets", start)
        .option("failOnDataLoss", "false")
        .option("maxOffsetsPerTrigger", str(max_offsets_per_trigger))
        .load()
    )


def parse_kafka_json(df: DataFrame, schema: T.StructType, rules: list[Rule],
                     strict: bool = False) -> DataFrame:
    """Typed fields of the JSON ``value`` plus ``error``: null for a good record, else why not.

    ``rules`` are ``(is_bad, reason)`` pairs checked in order after the JSON itself parsed.
    ``strict`` also refuses fields the schema does not know (a misspelt ``movieId`` must not
    silently turn a pair request into something else).
    """
    with_corrupt = T.StructType([*schema.fields, T.StructField(CORRUPT, T.StringType())])
    text = F.col("value").cast("string")
    parsed = df.withColumn(
        "_p", F.from_json(text, with_corrupt, {"mode": "PERMISSIVE",
                                               "columnNameOfCorruptRecord": CORRUPT, **NO_NAN}))
    # Each parse costs as much as the typed one. A good record pays for two (typed, trailing
    # characters): an object the typed parse read whole always reads as a map too, so the
    # maps are parsed only to explain a failure (and, when ``strict``, to name unknown fields).
    read_whole = (F.col("_p").isNotNull() & F.col(f"_p.{CORRUPT}").isNull()
                  & text.rlike(OBJECT_START))
    as_map = F.from_json(text, T.MapType(T.StringType(), T.StringType()), NO_NAN)
    lenient_map = F.from_json(text, T.MapType(T.StringType(), T.StringType()))
    wrong_types = F.concat_ws(", ", *[
        F.when(as_map[f.name].isNotNull() & F.col(f"_p.{f.name}").isNull(), F.lit(f.name))
        for f in schema.fields
    ])
    not_strings = non_string_fields(text, schema)
    error = (
        F.when(F.col("value").isNull() | (F.length(text) == 0), F.lit("empty message"))
        .when(F.encode(text, "UTF-8") != F.col("value"), F.lit("malformed: not valid UTF-8"))
        .when(~read_whole & as_map.isNull(),
              F.when(lenient_map.isNull(), F.lit("malformed JSON: not a JSON object"))
              .otherwise(F.lit("malformed JSON: NaN and Infinity are not JSON numbers")))
        .when(~is_single_json_value(text),
              F.lit("malformed JSON: characters after the object"))
        .when(F.col(f"_p.{CORRUPT}").isNotNull(),
              F.concat(F.lit("wrong type for field(s): "), wrong_types))
        .when(not_strings != "",
              F.concat(F.lit("wrong type for field(s): "), not_strings, F.lit(" (not a string)")))
    )
    if strict:
        unknown = F.array_except(F.map_keys(as_map), F.array(*[F.lit(f.name) for f in schema]))
        error = error.when(F.size(unknown) > 0, F.concat(F.lit("unknown field(s): "),
                                                         F.array_join(unknown, ", ")))
    for is_bad, reason in rules:
        error = error.when(is_bad, reason if isinstance(reason, Column) else F.lit(reason))
    return parsed.select(
        "topic", "partition", "offset", "timestamp", "value",
        *[F.col(f"_p.{f.name}").alias(f.name) for f in schema.fields],
        error.alias("error"),
    )


END_OF_MESSAGE = "__end_of_message__"
MAX_ARRAY = 2**31 - 1
OBJECT_START = r"^[ \t\n\r]*\{"  # JSON's own whitespace, then an object


def is_single_json_value(text: Column) -> Column:
    """True when nothing but whitespace follows the first JSON value.

    Spark's JSON reader stops after the first value and ignores the rest, so
    ``{...}\\n{...}`` would silently lose its second object. Read as the first element of
    an array closed by a sentinel, anything after the value either breaks the array or
    shows up as an extra element before the sentinel.
    """
    elements = F.from_json(F.concat(F.lit("["), text, F.lit(f',"{END_OF_MESSAGE}"]')),
                           T.ArrayType(T.StringType()))
    # ``elements`` used once: Spark would parse it again for each use
    return F.coalesce(F.slice(elements, 2, MAX_ARRAY) == F.array(F.lit(END_OF_MESSAGE)),
                      F.lit(False))


NOT_A_STRING = (T.DoubleType(), T.BooleanType(), T.MapType(T.StringType(), T.StringType()),
                T.ArrayType(T.StringType()))
# How Spark's reader (Jackson) renders a non-string JSON value it reads into a string field:
# a number's text (digits, sign, point, exponent; an overflowing one as Infinity, maybe
# quoted), true/false, or an object's or array's JSON.
RENDERED_NON_STRING = r'^("?-?(Infinity|NaN)"?|-?[0-9][0-9.eE+-]*|true|false)$|^[{\[]'


def non_string_fields(text: Column, schema: T.StructType) -> Column:
    """Names of the schema's string fields whose JSON value is not a string, comma-separated.

    Spark's reader hands such a value over as its JSON text: ``"request_id": 1e-308`` would
    come back as the id ``1.0E-308``, which the sender never wrote. Each witness parse below
    reads one kind of non-string value (number, boolean, object, array) and nothing else
    (without ``NO_NAN`` the number witness would also read the strings "NaN" and "Infinity").
    A witness throws an exception inside Spark for every field it cannot read, so the
    witnesses run only for a field whose text could be such a rendering (``42``, ``true``,
    ``{...}``): an id like ``"u7-a1"`` cannot be, and costs one regular expression.
    """
    names = [f.name for f in schema.fields if isinstance(f.dataType, T.StringType)]
    witnesses = [F.from_json(text, T.StructType([T.StructField(n, kind) for n in names]),
                             NO_NAN) for kind in NOT_A_STRING]
    # coalesce: for an absent field the gate is null, and ``null AND x`` evaluates ``x``
    return F.concat_ws(", ", *[
        F.when(F.coalesce(F.col(f"_p.{n}").rlike(RENDERED_NON_STRING), F.lit(False))
               & reduce(operator.or_, [w[n].isNotNull() for w in witnesses]), F.lit(n))
        for n in names
    ])


def missing(*fields: str) -> list[Rule]:
    return [(F.col(f).isNull(), f"missing field: {f}") for f in fields]


MAX_EPOCH_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z


def epoch_ms_out_of_range(field: str) -> Rule:
    """Beyond year 9999 (or before 1970) a timestamp overflows Cassandra's and Python's date
    conversions and would fail the whole batch; a null passes (``missing`` decides that)."""
    return (~F.col(field).between(0, MAX_EPOCH_MS),
            F.concat(F.lit(f"{field} out of range (epoch ms, years 1970-9999): "),
                     F.col(field).cast("string")))


def write_dead_letters(bad: DataFrame, kafka: KafkaSettings, topic: str) -> None:
    """Dead letters keyed by their source coordinates, so a re-run batch is recognisable."""
    record = F.struct(
        F.col("topic").alias("source_topic"), "partition", "offset",
        F.col("error").alias("reason"),
        F.coalesce(F.col("value").cast("string"), F.lit("")).alias("raw"),
        F.coalesce(F.base64("value"), F.lit("")).alias("raw_base64"),
        F.unix_millis(F.current_timestamp()).alias("failed_at"),
    )
    (bad.select(F.concat_ws(":", "topic", "partition", "offset").alias("key"),
                F.to_json(record, KEEP_NULLS).alias("value"))
     .write.format("kafka").options(**spark_kafka_sink_options(kafka)).option("topic", topic)
     .save())


def run_query(query: StreamingQuery, *, stop_when: Callable[[], bool] | None = None,
              poll_s: float = 1.0) -> None:
    """Block until the query ends, fails, or ``stop_when()`` says so (then stop it cleanly)."""
    while query.isActive:
        if stop_when is not None and stop_when():
            query.stop()
            break
        query.awaitTermination(poll_s)
    if query.exception() is not None:
        raise query.exception()


def retried_batches(process: Callable[[DataFrame, int], None], what: str,
                    before_retry: Callable[[], None] | None = None,
                    ) -> Callable[[DataFrame, int], None]:
    """A ``foreachBatch`` function that reruns a failed micro-batch with backoff instead of
    failing the query: a server restarting (a Cassandra node, a Kafka broker) delays the
    job, never kills it. Every sink is idempotent by id, so a rerun writes nothing twice
    that a reader sees; the rerun is at-least-once delivery, counted where it shows."""
    def process_with_retries(batch: DataFrame, batch_id: int) -> None:
        with_retries(lambda: process(batch, batch_id), f"{what} micro-batch {batch_id}",
                     before_retry=before_retry)
    return process_with_retries


def transient(exc: Exception) -> bool:
    """Worth retrying: anything but the project's own errors, which say what to do (no model
    promoted, a refused dataset), except those that mean a server is down."""
    return not isinstance(exc, RecommenderError) or exc.exit_status == ExitStatus.UNAVAILABLE


def reconnect_cassandra(spark: SparkSession, cassandra: CassandraSettings) -> None:
    """Before rerunning a batch that failed on Cassandra: wait until a node answers again
    (``cassandra.connect_wait_s``), then drop the connector's cached sessions. A session that
    lived through the node's restart can block for good in its next schema refresh (seen
    with connector 3.5.1 after a restart); a fresh one connects to the node as it is now."""
    from recommender.clients import cassandra_session

    cassandra_session(cassandra, wait_s=cassandra.connect_wait_s).cluster.shutdown()
    spark._jvm.com.datastax.spark.connector.cql.CassandraConnector.evictCache()


def with_retries(action: Callable[[], None], what: str, attempts: int = 30,
                 first_delay_s: float = 1.0, max_delay_s: float = 15.0,
                 before_retry: Callable[[], None] | None = None) -> None:
    """Retry ``action`` with capped exponential backoff: a sink that is briefly down (an ES
    restart) delays the micro-batch instead of failing the job. ``before_retry`` runs after
    the pause (to wait for a server and drop connections it broke)."""
    delay = first_delay_s
    for attempt in range(1, attempts + 1):
        try:
            action()
            return
        except Exception as exc:  # a sink failure is retried, then re-raised
            if attempt == attempts or not transient(exc):
                raise
            log.warning("%s failed (attempt %d/%d): %s; retrying in %.0fs",
                        what, attempt, attempts, exc, delay)
            time.sleep(delay)
            delay = min(delay * 2, max_delay_s)
            if before_retry is not None:
                before_retry()
