"""The real-time predictor: prediction-request topic -> enriched predictions topic.

Each micro-batch (bounded by ``maxOffsetsPerTrigger``):

1. checks the registry's ``CURRENT`` and, if it moved, loads and broadcasts the new model
   (hot reload: no restart, and every prediction names the version that produced it);
2. validates requests; bad ones go to the requests dead-letter topic with the reason;
3. in the same single pass (``answer``), fetches from Cassandra the histories of the users
   who need one (fold-in, excluding seen movies), scores in Python workers (``scoring``) and
   writes predictions, keyed by request id, and dead letters to Kafka;
4. commits the batch's end offsets to the ``predictor_group`` consumer group, so operators
   see the lag with Kafka's own tools and a successor knows where to start (``rollover``).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from recommender.clients import CASSANDRA_FORMAT as CASSANDRA
from recommender.clients import kafka_admin, spark_kafka_sink_options
from recommender.contracts import MAX_EXCLUDE, MAX_REQUEST_ID_BYTES
from recommender.errors import ModelError
from recommender.predict.answer import (
    ANSWER_INPUT,
    ANSWER_SCHEMA,
    BatchTally,
    Destinations,
    TallyParam,
    answer_partitions,
    cassandra_histories,
)
from recommender.predict.scoring import ServingBundle
from recommender.settings import Settings
from recommender.streaming import (
    epoch_ms_out_of_range,
    missing,
    parse_kafka_json,
    read_topic,
    retried_batches,
)

if TYPE_CHECKING:
    from kafka import KafkaAdminClient
    from pyspark import Broadcast
    from pyspark.sql import SparkSession
    from pyspark.sql.streaming import StreamingQuery

log = logging.getLogger(__name__)

REQUEST_SCHEMA = T.StructType([
    T.StructField("request_id", T.StringType()),
    T.StructField("user_id", T.IntegerType()),
    T.StructField("movie_id", T.IntegerType()),
    T.StructField("k", T.IntegerType()),
    T.StructField("exclude", T.ArrayType(T.IntegerType())),
    T.StructField("requested_at", T.LongType()),
])


def request_rules(max_k: int) -> list:
    has_movie, has_k = F.col("movie_id").isNotNull(), F.col("k").isNotNull()
    return [
        *missing("request_id", "user_id"),
        (F.length(F.trim("request_id")) == 0, "request_id must not be empty"),
        # the id becomes part of an Elasticsearch document id, which holds at most 512 bytes
        (F.octet_length("request_id") > MAX_REQUEST_ID_BYTES,
         f"request_id holds at most {MAX_REQUEST_ID_BYTES} bytes"),
        epoch_ms_out_of_range("requested_at"),
        (F.col("user_id") <= 0, "user_id must be a positive integer"),
        (has_movie & has_k, "give either movie_id or k, not both"),
        (~has_movie & ~has_k, "missing field: movie_id or k"),
        (has_movie & (F.col("movie_id") <= 0), "movie_id must be a positive integer"),
        (has_k & ((F.col("k") <= 0) | (F.col("k") > max_k)),
         F.concat(F.lit(f"k must be between 1 and {max_k}, got "), F.col("k").cast("string"))),
        (F.coalesce(F.size("exclude"), F.lit(0)) > MAX_EXCLUDE,
         f"exclude lists at most {MAX_EXCLUDE} movie ids"),
        (F.exists(F.coalesce("exclude", F.array()), lambda m: m.isNull() | (m <= 0)),
         "exclude must hold positive movie ids"),
    ]


def parsed_requests(source: DataFrame, max_k: int) -> DataFrame:
    """The streaming query's own plan: Spark analyses the validation expressions once, when
    the query starts, instead of in every micro-batch."""
    requests = parse_kafka_json(source, REQUEST_SCHEMA, request_rules(max_k), strict=True)
    raw = F.when(F.col("error").isNotNull(), F.col("value")).alias("raw")
    return requests.select(*(raw if c == "raw" else c for c in ANSWER_INPUT))


@dataclass
class InstanceState:
    """What a running predictor publishes about itself under ``<checkpoints>/predict/``."""

    instance: str
    pid: int
    model_version: str | None
    pinned_version: str | None
    offsets: dict[str, int] = field(default_factory=dict)
    batches: int = 0
    predictions: int = 0
    updated_at: float = 0.0

    @staticmethod
    def path(settings: Settings, instance: str) -> Path:
        return settings.spark.checkpoint_dir / "predict" / instance / "instance.json"

    def save(self, settings: Settings) -> None:
        target = self.path(settings, self.instance)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.__dict__))
        os.replace(tmp, target)


class Predictor:
    """One predictor instance: its model, its streaming query, its published state."""

    def __init__(self, spark: SparkSession, settings: Settings, *, instance: str = "main",
                 pinned_version: str | None = None, allow_no_model: bool = False) -> None:
        from recommender.cassandra_schema import wait_for_connector
        from recommender.model.registry import ModelRegistry

        self.spark, self.settings, self.instance = spark, settings, instance
        wait_for_connector(spark, settings.cassandra.keyspace, ("ratings", "movies"))
        self.registry = ModelRegistry(settings.model.models_dir)
        self.allow_no_model = allow_no_model
        self.bundle: Broadcast[ServingBundle] | None = None  # what every worker scores with
        # kept between batches: a new admin client costs a bootstrap
        self.admin: KafkaAdminClient | None = None
        self.state = InstanceState(instance, os.getpid(), None, pinned_version)
        self.tally = spark.sparkContext.accumulator(BatchTally(), TallyParam())
        self.refresh_model()

    # --- model ----------------------------------------------------------------------------

    def wanted_version(self) -> str | None:
        current = self.registry.current_version()
        if self.state.pinned_version and current == self.state.pinned_version:
            self.state.pinned_version = None  # the pin became CURRENT: follow CURRENT from now
        return self.state.pinned_version or current

    def refresh_model(self) -> None:
        """Hot reload: called before every micro-batch, cheap when nothing changed."""
        wanted = self.wanted_version()
        if wanted is not None and wanted == self.state.model_version:
            return
        if wanted is None:
            if self.bundle is not None:
                return
            if not self.allow_no_model:
                raise ModelError(
                    "no model is promoted yet: run `recommender train` first, or start the "
                    "predictor with --allow-no-model to serve only the popularity fallback")
            bundle = self.popularity_bundle()
        else:
            from recommender.model.artifacts import ModelArtifacts

            artifacts = ModelArtifacts.load(self.registry.version_dir(wanted))
            bundle = ServingBundle(artifacts, self.movies())
        old = self.bundle
        self.bundle = self.spark.sparkContext.broadcast(bundle)
        if old is not None:
            old.unpersist()
        log.info("predictor %s: serving model %s", self.instance, bundle.version)
        self.state.model_version = bundle.version

    def movies(self) -> dict[int, tuple[str | None, int | None, list[str]]]:
        rows = (self.spark.read.format(CASSANDRA)
                .options(keyspace=self.settings.cassandra.keyspace, table="movies").load()
                .select("movie_id", "title", "year", "genres").collect())
        return {r.movie_id: (r.title, r.year, list(r.genres or [])) for r in rows}

    def popularity_bundle(self) -> ServingBundle:
        import numpy as np

        from recommender.model.artifacts import ModelArtifacts

        counts = (self.spark.read.format(CASSANDRA)
                  .options(keyspace=self.settings.cassandra.keyspace, table="ratings").load()
                  .groupBy("movie_id").count().collect())
        ids = np.array([r.movie_id for r in counts], dtype=np.int64)
        artifacts = ModelArtifacts.popularity_only(
            ids, np.array([r["count"] for r in counts], dtype=np.int64))
        return ServingBundle(artifacts, self.movies(), popular_only=True)

    # --- one micro-batch ------------------------------------------------------------------

    def process(self, requests: DataFrame, batch_id: int) -> None:
        """One Spark stage per batch (``answer``): score, write both topics. The requests
        arrive parsed (``parsed_requests``)."""
        started = time.monotonic()
        self.refresh_model()
        self.tally.value = BatchTally()
        kafka = self.settings.kafka
        to = Destinations(kafka.predictions_topic, kafka.requests_dlq_topic)
        answer = answer_partitions(self.bundle, cassandra_histories(self.settings.cassandra),
                                   to, self.tally)
        # one task per core: each task carries a fixed cost (Python runner, Kafka producer
        # flush) that matters more than spreading a small batch over every partition
        (requests.coalesce(self.spark.sparkContext.defaultParallelism)
         .mapInPandas(answer, ANSWER_SCHEMA)
         .write.format("kafka").options(**spark_kafka_sink_options(kafka)).save())
        tally: BatchTally = self.tally.value
        self.commit(tally.ends)
        self.state.batches += 1
        self.state.predictions += tally.requests
        self.state.offsets.update(tally.ends)
        self.state.updated_at = time.time()
        self.state.save(self.settings)
        log.info("batch %d: %d requests (%d dead-lettered) in %.2fs with model %s", batch_id,
                 tally.requests, tally.dead, time.monotonic() - started,
                 self.state.model_version)

    def commit(self, ends: dict[str, int]) -> None:
        """Commit finished offsets to the predictor's consumer group, where lag tooling and a
        rollover's successor read them. The checkpoint stays the source of truth, so a failed
        commit is logged rather than fatal: the next batch's commit supersedes it, and a
        successor starting from an older offset only re-answers requests that Elasticsearch
        then overwrites by id."""
        if not ends:
            return
        from kafka import TopicPartition
        from kafka.errors import KafkaError, NoError
        from kafka.structs import OffsetAndMetadata

        topic = self.settings.kafka.requests_topic
        offsets = {TopicPartition(topic, int(p)): OffsetAndMetadata(end, self.instance, -1)
                   for p, end in ends.items()}
        try:
            if self.admin is None:
                self.admin = kafka_admin(self.settings.kafka)
            result = self.admin.alter_group_offsets(self.settings.kafka.predictor_group, offsets)
            failed = {tp.partition: err.__name__ for tp, err in result.items()
                      if err is not NoError}
        except KafkaError as exc:  # a broken connection: the next batch starts a fresh client
            self.close()
            failed = {"all partitions": repr(exc)}
        if failed:
            log.warning("predictor %s: offsets not committed to group %s: %s", self.instance,
                        self.settings.kafka.predictor_group, failed)

    def close(self) -> None:
        if self.admin is not None:
            self.admin.close()
            self.admin = None

    # --- the query ------------------------------------------------------------------------

    def start(self, starting_offsets: dict[int, int] | None = None) -> StreamingQuery:
        source = read_topic(self.spark, self.settings, self.settings.kafka.requests_topic,
                            self.settings.spark.max_offsets_per_trigger, starting_offsets)
        checkpoint = self.settings.spark.checkpoint_dir / "predict" / self.instance / "checkpoint"
        self.state.save(self.settings)
        requests = parsed_requests(source, self.settings.api.max_k)
        return (requests.writeStream.queryName(f"predict-{self.instance}")
                .option("checkpointLocation", str(checkpoint))
                .trigger(processingTime=self.settings.spark.trigger_interval)
                .foreachBatch(retried_batches(self.process, "predictor")).start())
