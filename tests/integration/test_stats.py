"""``recommender stats`` against the real stack: ml-latest-small's ratings in a keyspace of
their own (other suites add users to the session's), the session's trained model, and the
profile tables training writes; every number checked against the dataset itself."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import asdict

import pandas as pd
import pytest

from recommender.cassandra_schema import ensure_schema
from recommender.clients import CASSANDRA_FORMAT, cassandra_session
from recommender.contracts import PROFILE_TABLES
from recommender.model import snapshot
from recommender.model.registry import ModelRegistry
from recommender.runtime import wait_for
from recommender.serving_stats import Distribution, list_profile, top_lists, unique_top1_share
from recommender.settings import Settings
from recommender.train import profiles
from tests.support.cli import run_cli


@pytest.fixture(scope="module")
def profiled(spark, trained: Settings, data_dir) -> Iterator[Settings]:
    """ml-latest-small's ratings in a private keyspace, with the ``user_taste`` and
    ``similar_users`` rows `recommender train` writes after promoting the trained model."""
    own = trained.model_copy(update={"cassandra": trained.cassandra.model_copy(
        update={"keyspace": f"it_stats_{uuid.uuid4().hex[:6]}"})})
    ks = own.cassandra.keyspace
    session = cassandra_session(own.cassandra)
    ensure_schema(session, own, ("ratings", *PROFILE_TABLES))
    wait_for(lambda: _connector_sees(spark, ks), f"the Spark connector to see keyspace {ks}")
    folder = data_dir / "ml-latest-small"
    ratings = snapshot.read_csv(spark, folder / "ratings.csv").persist()
    profiles.write(ratings, ks, "ratings")
    artifacts = ModelRegistry.from_settings(own.model).load()
    movies = snapshot.read_movies_csv(spark, folder / "movies.csv")
    profiles.write(profiles.taste_profiles(ratings, movies), ks, "user_taste")
    profiles.write(profiles.similar_users(ratings, artifacts), ks, "similar_users")
    ratings.unpersist()
    yield own
    session.execute(f"DROP KEYSPACE IF EXISTS {ks}")
    session.cluster.shutdown()


def _connector_sees(spark, keyspace: str) -> bool:
    """The connector's schema metadata follows DDL events, which a busy node can delay."""
    from pyspark.errors import AnalysisException

    try:
        spark.read.format(CASSANDRA_FORMAT).options(keyspace=keyspace, table="ratings").load()
    except AnalysisException:
        return False
    return True


def test_stats_agree_with_the_dataset(profiled: Settings, data_dir, monkeypatch):
    result = run_cli(profiled, ["stats", "--json"], monkeypatch)
    assert result.exit_code == 0, result.output
    s = json.loads(result.stdout)
    frame = pd.read_csv(data_dir / "ml-latest-small" / "ratings.csv")
    per_user = frame.groupby("userId").size()
    assert s["users"] == frame.userId.nunique() == 610
    assert s["ratings"] == len(frame) == 100_836
    assert s["ratings_per_user"] == pytest.approx(asdict(Distribution.of(per_user)))
    assert s["ratings_per_user"]["min"] == 20 and s["ratings_per_user"]["max"] == 2698
    assert s["users_with_factors"] == 610 and s["list_users"] == 610 and s["k"] == 10
    artifacts = ModelRegistry.from_settings(profiled.model).load()
    assert s["catalogue"] == len(artifacts.item_ids) and s["model_version"] == artifacts.version
    # the top lists as serving computes them, from the dataset itself
    users = sorted(per_user.index.tolist())
    rated = [dict(zip(g.movieId.tolist(), g.rating.tolist(), strict=True))
             for _, g in frame.sort_values("userId").groupby("userId")]
    lists = top_lists(artifacts, users, rated, 10)
    assert s["coverage_at_k"] == pytest.approx(len({m for ms in lists for m in ms})
                                               / len(artifacts.item_ids))
    assert s["unique_top1_share"] == pytest.approx(unique_top1_share(lists))
    by_movie = frame.groupby("movieId").rating.agg(["count", "mean"])
    profile = list_profile(lists, by_movie["count"].to_dict(), by_movie["mean"].to_dict(),
                           artifacts.item_ids.tolist())
    assert s["lists"] == pytest.approx(asdict(profile))
    # the ranking model recommends movies many people watched, not the obscure tail
    assert s["lists"]["rec_median_count"] > 10 * s["lists"]["catalogue_median_count"]
    assert s["neighbour_share"] == 1.0  # every user has factors, hence a nearest neighbour
    assert s["taste_users"] == 610
    genres = {g["genre"]: g["scores"] for g in s["genre_taste"]}
    assert len(genres) >= 18 and "(no genres listed)" not in genres
    # each user's taste scores sum to 1, so the scores of all genres add up to the users
    total = sum(g["mean"] * g["count"] for g in genres.values())
    assert total == pytest.approx(610, rel=1e-4)
    assert all(0 < g["min"] <= g["p50"] <= g["p90"] <= g["max"] <= 1 for g in genres.values())
    top = s["top_genre_score"]
    assert top["count"] == 610 and 1 / len(genres) <= top["min"] <= top["max"] <= 1
    print(json.dumps({k: v for k, v in s.items() if k != "genre_taste"}, indent=1))


def test_the_table_names_every_statistic(profiled: Settings, monkeypatch):
    result = run_cli(profiled, ["stats", "--k", "5"], monkeypatch)
    assert result.exit_code == 0, result.output
    for words in ("Cassandra", "coverage", "top-5", "unique", "neighbour", "ratings per user",
                  "Drama", "median ratings of a top-5 movie", "mean rating of the top-5 movies"):
        assert words in result.output
