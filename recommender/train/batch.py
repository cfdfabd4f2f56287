"""The batch layer's entry point: read the ratings, run one training, write the profiles.

``recommender train`` only parses its flags and calls ``train_once`` (once, or on a
schedule), as ``ingest`` and ``predict`` have ``run_ingest`` and ``predict.service``. What
happens after a promotion (publishing the movie vectors) is the registry's ``on_promoted``
hooks, so the caller decides it: the CLI registers it, benchmarks and tests do not.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from recommender.model import snapshot
from recommender.model.registry import ModelRegistry
from recommender.settings import Settings
from recommender.train import pipeline
from recommender.train import profiles as prof

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession


def spark(settings: Settings) -> SparkSession:
    from recommender.clients import spark_session

    return spark_session(settings, app_name="recommender-train")


def read(session: SparkSession, settings: Settings,
         ratings_csv: Path | None) -> tuple[DataFrame, str]:
    """The ratings to train on (Cassandra, or a MovieLens CSV) and a name for the source."""
    if ratings_csv is not None:
        return snapshot.read_csv(session, ratings_csv), f"csv:{ratings_csv}"
    keyspace = settings.cassandra.keyspace
    return snapshot.read_cassandra(session, keyspace), f"cassandra:{keyspace}.ratings"


def train_once(session: SparkSession, settings: Settings, opts: pipeline.TrainOptions,
               registry: ModelRegistry, ratings_csv: Path | None, write_profiles: bool,
               say: Callable[[str], None]) -> pipeline.TrainResult:
    """One training run; after a promotion, the user profiles when ``write_profiles``."""
    ratings, source = read(session, settings, ratings_csv)
    ratings = ratings.persist()  # read once: training and then the profiles use it
    try:
        result = pipeline.run(ratings, settings, opts, source=source, registry=registry,
                              on_event=say)
        if result.decision.accepted and write_profiles:
            if ratings_csv is not None:
                movies = snapshot.read_movies_csv(session, ratings_csv.parent / "movies.csv")
            else:
                movies = snapshot.read_movies_cassandra(session, settings.cassandra.keyspace)
            started = time.perf_counter()
            stats = prof.build(ratings, movies, registry.load(result.version), settings)
            say(f"profiles: {stats.taste_rows} user_taste rows, {stats.similar_rows} "
                f"similar_users rows in {settings.cassandra.keyspace}, "
                f"{stats.taste_documents} {settings.elasticsearch.indices.user_taste} "
                f"documents ({time.perf_counter() - started:.1f}s)")
        return result
    finally:
        ratings.unpersist()
