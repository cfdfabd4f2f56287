"""``simulate ab`` on ml-latest-small against the real stack: the CURRENT model is judged on
held-out ratings it never saw, and beats random with non-overlapping 95% intervals.

The model here is implicit (Hu-Koren-Volinsky ALS, trained by the pipeline like `recommender
train --mode implicit`): the session reward counts movies users actually watched, which is
what an implicit model ranks for. The session fixture's explicit model ranks by predicted
rating, surfaces rarely watched movies and does not beat random on this reward (its
metadata says the same: precision@10 below random's); ``test_the_cli_...`` reports it.
"""

from __future__ import annotations

import json

import pytest

from recommender.cli.simulate import show
from recommender.model import snapshot
from recommender.model.registry import ModelRegistry
from recommender.settings import Settings
from recommender.simulate import ab
from recommender.simulate import data as simdata
from recommender.train import pipeline
from tests.support.cli import run_cli


@pytest.fixture(scope="module")
def implicit(spark, ml_small, tmp_path_factory) -> Settings:
    """An implicit model trained on the ingested ratings, CURRENT in a registry of its own."""
    models = ml_small.settings.model.model_copy(
        update={"models_dir": tmp_path_factory.mktemp("simulate-models")})
    settings = ml_small.settings.model_copy(update={"model": models})
    ks = settings.cassandra.keyspace
    result = pipeline.run(snapshot.read_cassandra(spark, ks), settings,
                          pipeline.TrainOptions(mode="implicit"), source=f"cassandra:{ks}.ratings")
    assert result.decision.accepted, result.decision
    return settings


@pytest.fixture(scope="module")
def report(spark, implicit: Settings) -> ab.AbReport:
    return ab.run(spark, implicit, ab.Options())


def test_the_model_beats_random_with_non_overlapping_intervals(report: ab.AbReport):
    by_name = {p.name: p for p in report.policies}
    assert list(by_name) == ["model", "popularity", "random"]
    model, reference = by_name["model"], by_name["random"]
    show(report)  # the numbers, in the test log
    assert report.users >= 590  # ml-latest-small's 610 users, less those with nothing held out
    assert model.beats_random
    assert model.metrics[ab.REWARD].low > reference.metrics[ab.REWARD].high
    assert model.uplift[ab.REWARD].low > 0
    assert model.metrics["hit_rate"].low > reference.metrics["hit_rate"].high
    assert model.metrics["length"].mean > reference.metrics["length"].mean


def test_responses_come_only_from_ratings_the_model_never_saw(spark, implicit: Settings):
    """The re-cut split is the training split: per movie, the ratings on the known side are
    exactly the model's training counts; and no known rating is also a response."""
    art = ModelRegistry.from_settings(implicit.model).load()
    spec = simdata.SplitSpec.of(art.metadata)
    ratings, _ = simdata.read_source(spark, implicit, spec.source)
    train, held_out = simdata.held_out_split(ratings, spec)
    counts = train.groupBy("movie_id").count().toPandas()
    assert dict(zip(counts["movie_id"].tolist(), counts["count"].tolist(), strict=True)) == \
        dict(zip(art.item_ids.tolist(), art.item_counts.tolist(), strict=True))
    users = simdata.collect_users(train, held_out, max_users=10_000, seed=1)
    assert len(users) >= 590 and all(u.held_out for u in users)
    assert all(not set(u.seen) & set(u.held_out) for u in users)


def test_the_cli_prints_json_writes_a_chart_and_names_a_version(
        implicit: Settings, trained: Settings, tmp_path, monkeypatch):
    version = ModelRegistry.from_settings(implicit.model).current_version()
    chart = tmp_path / "ab.svg"
    result = run_cli(implicit, ["simulate", "ab", "-p", "model", "-p", f"model:{version}",
                                "--resamples", "200", "--chart", str(chart), "--json"],
                     monkeypatch)
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    policies = {p["name"]: p for p in body["policies"]}
    assert list(policies) == ["model", f"model:{version}", "random"]
    # the same model under two names: the same sessions, to the last digit
    assert policies["model"]["metrics"] == policies[f"model:{version}"]["metrics"]
    assert body["current_version"] == version and body["reward"] == ab.REWARD
    assert chart.read_text().startswith("<svg") and ">model<" in chart.read_text()
    explicit = run_cli(trained, ["simulate", "ab", "--resamples", "200", "--json"], monkeypatch)
    assert explicit.exit_code == 0, explicit.output
    for p in json.loads(explicit.stdout)["policies"]:  # the explicit model, for the record
        print(f"explicit CURRENT, {p['name']}: {ab.REWARD} {p['metrics'][ab.REWARD]}")


def test_an_unknown_policy_is_a_usage_error(implicit: Settings, monkeypatch):
    result = run_cli(implicit, ["simulate", "ab", "-p", "best"], monkeypatch)
    assert result.exit_code == 2 and "unknown policy" in result.output
