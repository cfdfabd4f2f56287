"""Data and models several benchmarks need, made once per run and shared through
``Workspace.shared``: ml-latest-small in a private keyspace, a 1M-rating synthetic keyspace, a
trained model. A benchmark run alone makes whichever it needs; a run of all of them reuses the
ingest benchmark's keyspace and the train benchmark's model."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from itertools import islice
from typing import TYPE_CHECKING, Any

import pandas as pd

from bench.common import Workspace, log
from recommender.settings import Settings

if TYPE_CHECKING:
    from data_loading.datasets import Dataset

ML_SMALL = "ml-latest-small"
SYNTHETIC_SEED = 7


def ml_small(settings: Settings) -> Dataset:
    from data_loading.datasets import locate

    return locate(ML_SMALL, settings.data.data_dir)


def prepare_keyspace(settings: Settings, dataset: Dataset) -> None:
    """Keyspace, tables and the movie catalogue (ingest enriches from it, the predictor names
    its answers from it)."""
    from data_loading.metadata import write_cassandra
    from recommender.cassandra_schema import ensure_schema
    from recommender.clients import cassandra_session

    session = cassandra_session(settings.cassandra)
    try:
        ensure_schema(session, settings)
    finally:
        session.cluster.shutdown()
    write_cassandra(settings, dataset.movies(), [])


def synthetic_events(dataset: Dataset, n: int) -> Iterator[Any]:
    """The first ``n`` events of a seeded synthetic stream over the dataset's catalogue."""
    from data_loading.synthetic import Catalogue, generate

    catalogue = Catalogue.from_dataset(dataset)
    return islice(generate(catalogue, users=10 * n, seed=SYNTHETIC_SEED), n)


def write_ratings(bench_run: Workspace, settings: Settings, frame: pd.DataFrame,
                  source: str) -> int:
    """Bulk-load a ratings frame (user_id, movie_id, rating, event_time ms) into the keyspace
    through the Spark Cassandra connector: the fast path for fixtures, not what is measured."""
    from pyspark.sql import functions as F

    spark = bench_run.spark()
    df = spark.createDataFrame(frame[["user_id", "movie_id", "rating", "event_time"]])
    (df.select(F.col("user_id").cast("int"), F.col("movie_id").cast("int"),
               F.col("rating").cast("float"),
               F.timestamp_millis(F.col("event_time").cast("long")).alias("event_time"),
               F.concat_ws(":", F.lit(source), "user_id", "movie_id", "event_time")
               .alias("event_id"),
               F.current_timestamp().alias("ingested_at"))
     .write.format("org.apache.spark.sql.cassandra").mode("append")
     .options(keyspace=settings.cassandra.keyspace, table="ratings").save())
    return len(frame)


def ml_small_keyspace(bench_run: Workspace) -> Settings:
    """Settings whose keyspace holds ml-latest-small's ratings and movies."""
    if "ml_small" in bench_run.shared:
        return bench_run.shared["ml_small"]
    settings = bench_run.settings("data")
    dataset = ml_small(settings)
    log(f"fixture: loading {ML_SMALL} into {settings.cassandra.keyspace}")
    prepare_keyspace(settings, dataset)
    write_ratings(bench_run, settings, dataset.ratings_frame, ML_SMALL)
    bench_run.shared["ml_small"] = settings
    return settings


def synthetic_keyspace(bench_run: Workspace, n: int) -> Settings:
    """Settings whose keyspace holds ``n`` synthetic ratings (the ingest benchmark's full run
    leaves exactly this behind)."""
    key = f"synthetic_{n}"
    if key in bench_run.shared:
        return bench_run.shared[key]
    settings = bench_run.settings("synthetic")
    dataset = ml_small(settings)
    log(f"fixture: generating {n:,} synthetic ratings into {settings.cassandra.keyspace}")
    prepare_keyspace(settings, dataset)
    events = synthetic_events(dataset, n)
    frame = pd.DataFrame([(e.user_id, e.movie_id, e.rating, e.event_time) for e in events],
                         columns=["user_id", "movie_id", "rating", "event_time"])
    write_ratings(bench_run, settings, frame, "synthetic")
    bench_run.shared[key] = settings
    return settings


def trained_model(bench_run: Workspace) -> tuple[Settings, str]:
    """(settings of the registry, version) of a version trained on ml-latest-small with the
    product's defaults."""
    if "model" in bench_run.shared:
        return bench_run.shared["model"]
    from recommender.model import snapshot
    from recommender.model.registry import ModelRegistry
    from recommender.train import pipeline

    source = ml_small_keyspace(bench_run)
    settings = bench_run.settings("model", cassandra={"keyspace": source.cassandra.keyspace})
    log("fixture: training a model on ml-latest-small")
    ratings = snapshot.read_cassandra(bench_run.spark(), settings.cassandra.keyspace)
    result = pipeline.run(ratings, settings, pipeline.TrainOptions(),
                          source="cassandra", registry=ModelRegistry.from_settings(settings.model))
    bench_run.shared["model"] = (settings, result.version)
    return bench_run.shared["model"]


def serving_ml_small(bench_run: Workspace, name: str,
                     **sections: dict[str, Any]) -> tuple[Settings, tuple[Settings, str], str]:
    """What the serving benchmarks measure against: settings ``name`` on the ml-latest-small
    keyspace, the model trained on it, and that model's version copied into the settings'
    own registry as CURRENT."""
    data = ml_small_keyspace(bench_run)
    model = trained_model(bench_run)
    private = bench_run.settings(name, cassandra={"keyspace": data.cassandra.keyspace}, **sections)
    return private, model, copy_model(model, private)


def copy_model(model: tuple[Settings, str], settings: Settings, new_name: bool = False) -> str:
    """Copy a version into ``settings``' registry and make it CURRENT; with ``new_name`` the
    copy gets a fresh version name (a "new" model with the same factors, for rollover)."""
    from recommender.model.registry import ModelRegistry

    source_settings, version = model
    source = ModelRegistry(source_settings.model.models_dir)
    target = ModelRegistry.from_settings(settings.model)
    target.root.mkdir(parents=True, exist_ok=True)
    name = target.new_version() if new_name else version
    while new_name and name == version:  # same second as the source: take the next name
        time.sleep(1)
        name = target.new_version()
    shutil.copytree(source.version_dir(version), target.path(name))
    if name != version:
        meta_path = target.path(name) / "metadata.json"
        meta_path.write_text(json.dumps({**json.loads(meta_path.read_text()), "version": name}))
    if not new_name:
        target.promote(name, force=True)
    return name


def install_index_templates(settings: Settings) -> None:
    """The index templates and fixed indices under the settings' private ``index_prefix``
    (``Workspace.settings``), as ``recommender es setup`` installs them: jobs started in this
    process skip the setup their CLI does, and a bulk request that creates an index before
    its template exists gets dynamic mappings."""
    from recommender.clients import elasticsearch_client
    from recommender.indices import setup

    es = elasticsearch_client(settings.elasticsearch)
    try:
        setup(es, settings.elasticsearch.indices,
              replicas=settings.elasticsearch.number_of_replicas)
    finally:
        es.close()
