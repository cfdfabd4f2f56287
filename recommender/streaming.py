"""Machinery shared by the Structured Streaming jobs (ingest, predict).

Bad records are data, not crashes: ``parse_kafka_json`` turns Kafka rows into typed columns
plus an ``error`` column; the good rows go on, the others go to a dead-letter topic with the
original bytes, their source offset and the reason (``write_dead_letters``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from recommender.clients import spark_kafka_options
from recommender.settings import KafkaSettings, Settings

if TYPE_CHECKING:
    from pyspark.sql import SparkSession
    from pyspark.sql.streaming import StreamingQuery

log = logging.getLogger(__name__)
CORRUPT = "_corrupt_record"
Rule = tuple[Column, Column | str]
KEEP_NULLS = {"ignoreNullFields": "false"}  # a contract field is present even when null


def read_topic(spark: SparkSession, settings: Settings, topic: str,
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
        .option("maxOffsetsPerTrigger", str(settings.spark.max_offsets_per_trigger))
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
                                               "columnNameOfCorruptRecord": CORRUPT}))
    as_map = F.from_json(text, T.MapType(T.StringType(), T.StringType()))
    wrong_types = F.concat_ws(", ", *[
        F.when(as_map[f.name].isNotNull() & F.col(f"_p.{f.name}").isNull(), F.lit(f.name))
        for f in schema.fields
    ])
    error = (
        F.when(F.col("value").isNull() | (F.length(text) == 0), F.lit("empty message"))
        .when(as_map.isNull(), F.lit("malformed JSON: not a JSON object"))
        # the JSON reader stops after the object and ignores what follows it
        .when(~text.rlike(r"\}\s*$"), F.lit("malformed JSON: characters after the object"))
        .when(F.col(f"_p.{CORRUPT}").isNotNull(),
              F.concat(F.lit("wrong type for field(s): "), wrong_types))
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


def missing(*fields: str) -> list[Rule]:
    return [(F.col(f).isNull(), f"missing field: {f}") for f in fields]


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
     .write.format("kafka").options(**spark_kafka_options(kafka)).option("topic", topic).save())


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


def with_retries(action: Callable[[], None], what: str, attempts: int = 30,
                 first_delay_s: float = 1.0, max_delay_s: float = 15.0) -> None:
    """Retry ``action`` with capped exponential backoff: a sink that is briefly down (an ES
    restart) delays the micro-batch instead of failing the job."""
    delay = first_delay_s
    for attempt in range(1, attempts + 1):
        try:
            action()
            return
        except Exception as exc:  # any sink failure is retried, then re-raised
            if attempt == attempts:
                raise
            log.warning("%s failed (attempt %d/%d): %s; retrying in %.0fs",
                        what, attempt, attempts, exc, delay)
            time.sleep(delay)
            delay = min(delay * 2, max_delay_s)
