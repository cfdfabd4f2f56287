"""Answering a micro-batch in one pass, inside Spark's Python workers.

Each Kafka partition of the batch flows through ``answer_partitions`` and straight into the
Kafka sink: predictions to the predictions topic, bad requests to the dead-letter topic,
chosen per record by the sink's ``topic`` column. No shuffle, no second job: a micro-batch is
one Spark stage, so its fixed cost stays well under the trigger interval.

Two things a shuffle-free stage has to do itself:

- it reads the rating histories it needs from Cassandra (``fetch_histories``), with one
  session per worker process, reused from batch to batch;
- it reports what it read through an accumulator (``BatchTally``): the end offset per
  partition that the driver commits to the consumer group, and the counts it logs.
"""

from __future__ import annotations

import functools
import pickle
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
import pandas as pd
from pyspark.accumulators import AccumulatorParam
from pyspark.sql import types as T

from recommender.contracts import DeadLetter
from recommender.predict.scoring import (
    REQUEST_COLUMNS,
    ServingBundle,
    predict_rows,
    users_needing_history,
)
from recommender.settings import CassandraSettings

if TYPE_CHECKING:
    from cassandra.cluster import Session
    from cassandra.query import PreparedStatement
    from pyspark import Broadcast

# What the job hands to the workers: the request, where it came from, and for a bad one the
# reason and its original bytes (``raw`` is null for a good request: no need to ship it).
ANSWER_INPUT = ("topic", "partition", "offset", "error", "raw", *REQUEST_COLUMNS)
ANSWER_SCHEMA = T.StructType([
    T.StructField("topic", T.StringType()),
    T.StructField("key", T.StringType()),
    T.StructField("value", T.BinaryType()),
])


@dataclass
class BatchTally:
    """What the workers read, merged across tasks on the driver (a Spark accumulator)."""

    ends: dict[str, int] = field(default_factory=dict)  # partition -> next offset to read
    requests: int = 0
    dead: int = 0

    @classmethod
    def of(cls, frame: pd.DataFrame) -> BatchTally:
        ends = frame.groupby("partition")["offset"].max() + 1
        return cls({str(p): int(end) for p, end in ends.items()}, len(frame),
                   int(frame["error"].notna().sum()))


class TallyParam(AccumulatorParam):
    """Offsets merge by maximum, so a retried task cannot move them; counts add up (a
    retried task counts twice in the log, never in what is committed)."""

    def zero(self, value: BatchTally) -> BatchTally:
        return BatchTally()

    def addInPlace(self, total: BatchTally, part: BatchTally) -> BatchTally:
        for partition, end in part.ends.items():
            total.ends[partition] = max(total.ends.get(partition, end), end)
        total.requests += part.requests
        total.dead += part.dead
        return total


@dataclass(frozen=True)
class Destinations:
    predictions_topic: str
    dead_letter_topic: str


Histories = Callable[[list[int]], Mapping[int, Mapping[int, float]]]


def answer_partitions(broadcast: Broadcast[ServingBundle], histories: Histories, to: Destinations,
                      tally: Any) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    """A ``mapInPandas`` function from ``ANSWER_INPUT`` rows to Kafka records
    (``ANSWER_SCHEMA``); ``broadcast`` holds the model, ``histories`` reads users'
    ratings (``cassandra_histories``: it travels to the executors, so it must pickle),
    ``tally`` an accumulator of ``BatchTally``."""

    def run(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        bundle = broadcast.value
        for frame in frames:
            tally.add(BatchTally.of(frame))
            bad = frame["error"].notna()
            records = [*dead_letters(frame[bad], to.dead_letter_topic),
                       *predictions(bundle, frame[~bad], histories, to.predictions_topic)]
            yield pd.DataFrame(records, columns=ANSWER_SCHEMA.fieldNames())

    return run


def predictions(bundle: ServingBundle, requests: pd.DataFrame, histories: Histories,
                topic: str) -> Iterator[tuple[str, str, bytes]]:
    """Prediction records keyed by request id, so a request's answers share a partition."""
    if requests.empty:
        return
    for row in predict_rows(bundle, requests, histories(users_needing_history(bundle, requests))):
        yield topic, row.request_id, orjson.dumps(row, option=orjson.OPT_SERIALIZE_NUMPY)


def dead_letters(bad: pd.DataFrame, topic: str) -> Iterator[tuple[str, str, bytes]]:
    """Keyed by source coordinates, so a re-run batch's dead letters are recognisable."""
    failed_at = int(time.time() * 1000)
    for row in bad.itertuples(index=False):
        letter = DeadLetter.of(row.raw, source_topic=row.topic, partition=int(row.partition),
                               offset=int(row.offset), reason=row.error, failed_at=failed_at)
        yield topic, f"{row.topic}:{row.partition}:{row.offset}", letter.to_json()


def cassandra_histories(cassandra: CassandraSettings) -> Histories:
    """The predictor's ``histories``: ``fetch_histories`` from ``cassandra``'s ratings."""
    return functools.partial(fetch_histories, cassandra)


def fetch_histories(cassandra: CassandraSettings,
                    user_ids: Iterable[int]) -> dict[int, dict[int, float]]:
    """``{user: {movie: rating}}`` from the ``ratings`` table, one partition-key query per user,
    many in flight."""
    from cassandra.concurrent import execute_concurrent_with_args

    users = list(user_ids)
    if not users:
        return {}
    session, select = _history_query(cassandra)
    results = execute_concurrent_with_args(session, select, [(u,) for u in users],
                                           concurrency=64, raise_on_first_error=True)
    return {user: dict(result.result_or_exc) for user, result in zip(users, results, strict=True)}


_QUERIES: dict[bytes, tuple[Session, PreparedStatement]] = {}


def _history_query(cassandra: CassandraSettings) -> tuple[Session, PreparedStatement]:
    """One session per worker process, which Spark reuses from batch to batch. Keyed by the
    pickled settings: each task unpickles its own copy, and settings objects do not hash."""
    key = pickle.dumps(cassandra)
    if key not in _QUERIES:
        from recommender.clients import cassandra_session

        session = cassandra_session(cassandra, cassandra.keyspace,
                                    wait_s=cassandra.connect_wait_s)
        _QUERIES[key] = session, session.prepare(
            "SELECT movie_id, rating FROM ratings WHERE user_id = ?")
    return _QUERIES[key]
