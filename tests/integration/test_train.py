"""Training on real ratings in Cassandra (ml-latest-small): one run, two models (ranking and
rating), their quality, the gate on either, rollback, fold-in."""

from __future__ import annotations

import pytest
from pyspark.sql import functions as F

from recommender.errors import TrainingRefused
from recommender.model import snapshot
from recommender.model.artifacts import ModelArtifacts
from recommender.model.foldin import fold_in, recommend, recommend_popular
from recommender.model.registry import ModelRegistry
from recommender.settings import Settings
from recommender.train import pipeline

HELD_OUT_USERS = 30


def test_one_train_run_produces_both_models(trained: Settings):
    registry = ModelRegistry(trained.model.models_dir)
    version = registry.current_version()
    folder = registry.version_dir(version)
    for kind in ("ranking", "rating"):
        for side in ("item", "user"):
            assert (folder / f"{kind}_{side}_factors.npy").is_file()
        assert (folder / f"{kind}_als" / "metadata").is_dir()  # the Spark ALSModel too
    meta = registry.metadata(version)
    assert set(meta["params"]) == {"ranking", "rating"}
    assert meta["params"]["ranking"]["implicit_prefs"]
    assert not meta["params"]["rating"]["implicit_prefs"]
    assert meta["evaluation"]["split"] == "random" and meta["evaluation"]["test_fraction"] == 0.2
    assert meta["data"]["rows"] == 100_836
    artifacts = registry.load(version)
    assert artifacts.ranking.rank == trained.model.ranking.rank
    assert artifacts.rating.rank == trained.model.rating.rank


def test_the_rating_model_predicts_every_held_out_pair_within_0_90_rmse(trained: Settings):
    meta = ModelRegistry(trained.model.models_dir).metadata(
        ModelRegistry(trained.model.models_dir).current_version())
    metrics, popular = meta["metrics"], meta["baseline_metrics"]["popularity"]
    assert metrics["rmse"] <= 0.90, metrics
    assert metrics["rmse"] < popular["rmse"]
    # every held-out pair is answered (with the biases where the model has no factor)
    assert metrics["rated_pairs"] == meta["evaluation"]["rated_pairs"] > metrics["scorable_pairs"]


def test_the_ranking_model_beats_popularity_and_recommends_watched_movies(trained: Settings):
    meta = ModelRegistry(trained.model.models_dir).metadata(
        ModelRegistry(trained.model.models_dir).current_version())
    model, popular = meta["metrics"], meta["baseline_metrics"]["popularity"]
    assert model["ndcg_at_10"] > 1.2 * popular["ndcg_at_10"], (model, popular)
    assert model["ndcg_at_10"] > meta["baseline_metrics"]["random"]["ndcg_at_10"]
    # what the lists hold: movies many people rated, not the obscure tail
    assert model["rec_median_count"] > 10 * model["catalogue_median_count"], model


@pytest.fixture(scope="module")
def without_some_users(spark, trained: Settings, tmp_path_factory):
    """A version trained without ``HELD_OUT_USERS`` users, in a registry of its own;
    returns (settings, version, held-out users' ratings)."""
    models = trained.model.model_copy(update={"models_dir": tmp_path_factory.mktemp("partial")})
    settings = trained.model_copy(update={"model": models})
    ratings = snapshot.read_cassandra(spark, settings.cassandra.keyspace)
    active = (ratings.groupBy("user_id").count().where("count >= 50").orderBy("user_id")
              .limit(HELD_OUT_USERS).collect())
    held_out = [r.user_id for r in active]
    result = pipeline.run(ratings.where(~F.col("user_id").isin(held_out)), settings,
                          pipeline.TrainOptions(), source="cassandra")
    assert result.decision.accepted, result.decision
    their_ratings = (ratings.where(F.col("user_id").isin(held_out))
                     .select("user_id", "movie_id", "rating", "event_time").toPandas())
    return settings, result.version, their_ratings


def test_fold_in_ranks_a_new_users_later_movies_better_than_popularity(without_some_users):
    """Users the model never saw: fold in their first half (by time) and rank the catalogue;
    their later well-rated movies must come up more often than with the popularity list."""
    settings, version, ratings = without_some_users
    artifacts = ModelArtifacts.load(ModelRegistry(settings.model.models_dir).version_dir(version))
    assert not set(ratings["user_id"]) & {int(u) for u in artifacts.user_ids}
    fold_hits = popular_hits = 0
    for _, rows in ratings.sort_values("event_time").groupby("user_id"):
        half = len(rows) // 2
        known = dict(zip(rows.movie_id[:half], rows.rating[:half], strict=True))
        later = set(rows.movie_id[half:][rows.rating[half:] >= 4.0])
        vector = fold_in(artifacts, known)
        assert vector is not None
        fold_hits += len(later & {m for m, _ in recommend(artifacts, vector, 50, known)})
        popular_hits += len(later & {m for m, _ in recommend_popular(artifacts, 50, known)})
    assert fold_hits > popular_hits, (fold_hits, popular_hits)


@pytest.mark.parametrize(("kind", "crippled"), [
    ("ranking", {"rank": 1, "max_iter": 1, "reg_param": 50.0}),
    ("rating", {"rank": 1, "max_iter": 1, "reg_param": 50.0, "item_bias_reg": 1e6,
                "user_bias_reg": 1e6}),
])
def test_gate_refuses_a_regression_of_either_model_and_rollback_restores(
        spark, without_some_users, kind, crippled):
    settings, good, _ = without_some_users
    registry = ModelRegistry(settings.model.models_dir)
    ratings = snapshot.read_cassandra(spark, settings.cassandra.keyspace)
    ratings = ratings.where(~F.col("user_id").isin(
        [int(u) for u in without_some_users[2]["user_id"].unique()]))
    bad = pipeline.run(ratings, settings, pipeline.TrainOptions(**{kind: crippled}),
                       source="cassandra")
    assert not bad.decision.accepted, bad.decision
    assert f"{kind} model regressed" in bad.decision.reason, bad.decision.reason
    if kind == "ranking":  # predicted ratings do not depend on the ranking model; lists are
        # ordered with the rating model's prediction mixed in, so a crippled rating model
        # may lower the ranking NDCG too, and the reason then names both
        assert "rating model regressed" not in bad.decision.reason, bad.decision.reason
    assert registry.current_version() == good
    registry.promote(bad.version, force=True)
    assert registry.current_version() == bad.version
    assert registry.rollback() == good
    assert registry.current_version() == good


def test_too_little_data_is_refused_before_anything_is_written(spark, trained, tmp_path):
    settings = trained.model_copy(update={"model": trained.model.model_copy(
        update={"models_dir": tmp_path / "models"})})
    ratings = snapshot.read_cassandra(spark, settings.cassandra.keyspace).limit(50)
    with pytest.raises(TrainingRefused, match="50 ratings"):
        pipeline.run(ratings, settings, pipeline.TrainOptions(), source="cassandra")
    assert not (tmp_path / "models").exists() or not [
        p for p in (tmp_path / "models").iterdir() if not p.name.startswith(".")]
