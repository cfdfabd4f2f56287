"""Training on real ratings in Cassandra (ml-latest-small): quality, gate, rollback, fold-in."""

from __future__ import annotations

import numpy as np
import pytest
from pyspark.sql import functions as F

from recommender.model import snapshot
from recommender.model.artifacts import ModelArtifacts
from recommender.model.foldin import fold_in, recommend, recommend_popular
from recommender.model.registry import ModelRegistry
from recommender.settings import Settings
from recommender.train import pipeline

HELD_OUT_USERS = 30


def test_explicit_model_predicts_ratings_within_0_90_rmse(trained: Settings):
    registry = ModelRegistry(trained.model.models_dir)
    meta = registry.metadata(registry.current_version())
    assert meta["mode"] == "explicit"
    assert meta["evaluation"]["split"] == "random" and meta["evaluation"]["test_fraction"] == 0.2
    assert meta["metrics"]["rmse"] <= 0.90, meta["metrics"]
    assert meta["metrics"]["rmse"] < meta["baseline_metrics"]["popularity"]["rmse"]
    assert meta["data"]["rows"] == 100_836


@pytest.fixture(scope="module")
def implicit(spark, trained: Settings, tmp_path_factory):
    """An implicit model trained without ``HELD_OUT_USERS`` users, in a registry of its own;
    returns (settings, version, held-out users' ratings)."""
    models = trained.model.model_copy(update={"models_dir": tmp_path_factory.mktemp("implicit")})
    settings = trained.model_copy(update={"model": models})
    ratings = snapshot.read_cassandra(spark, settings.cassandra.keyspace)
    active = (ratings.groupBy("user_id").count().where("count >= 50").orderBy("user_id")
              .limit(HELD_OUT_USERS).collect())
    held_out = [r.user_id for r in active]
    result = pipeline.run(ratings.where(~F.col("user_id").isin(held_out)), settings,
                          pipeline.TrainOptions(mode="implicit"), source="cassandra")
    assert result.decision.accepted, result.decision
    their_ratings = (ratings.where(F.col("user_id").isin(held_out))
                     .select("user_id", "movie_id", "rating", "event_time").toPandas())
    return settings, result.version, their_ratings


def test_implicit_model_beats_popularity_on_ndcg(implicit):
    settings, version, _ = implicit
    meta = ModelRegistry(settings.model.models_dir).metadata(version)
    assert meta["mode"] == "implicit"
    model, popular = meta["metrics"], meta["baseline_metrics"]["popularity"]
    assert model["ndcg_at_10"] > popular["ndcg_at_10"], (model, popular)
    assert model["ndcg_at_10"] > meta["baseline_metrics"]["random"]["ndcg_at_10"]


def test_fold_in_ranks_a_new_users_later_movies_better_than_popularity(implicit):
    """Users the model never saw: fold in their first half (by time) and rank the catalogue;
    their later well-rated movies must come up more often than with the popularity list."""
    settings, version, ratings = implicit
    art = ModelArtifacts.load(ModelRegistry(settings.model.models_dir).version_dir(version))
    assert not set(ratings["user_id"]) & {int(u) for u in art.user_ids}
    fold_hits = popular_hits = 0
    for _, rows in ratings.sort_values("event_time").groupby("user_id"):
        half = len(rows) // 2
        known = dict(zip(rows.movie_id[:half], rows.rating[:half], strict=True))
        later = set(rows.movie_id[half:][rows.rating[half:] >= 4.0])
        vector = fold_in(art, known)
        assert vector is not None
        fold_hits += len(later & {m for m, _ in recommend(art, vector, 50, known)})
        popular_hits += len(later & {m for m, _ in recommend_popular(art, 50, known)})
    assert fold_hits > popular_hits, (fold_hits, popular_hits)


def test_gate_refuses_a_deliberately_bad_model_and_rollback_restores(spark, implicit):
    settings, good, _ = implicit
    registry = ModelRegistry(settings.model.models_dir)
    ratings = snapshot.read_cassandra(spark, settings.cassandra.keyspace)
    bad = pipeline.run(ratings, settings, pipeline.TrainOptions(
        mode="implicit", params={"rank": 1, "max_iter": 1, "reg_param": 50.0}),
        source="cassandra")
    assert not bad.decision.accepted, bad.decision
    assert registry.current_version() == good
    assert np.isfinite(bad.metadata["metrics"]["ndcg_at_10"])
    registry.promote(bad.version, force=True)
    assert registry.current_version() == bad.version
    assert registry.rollback() == good
    assert registry.current_version() == good
