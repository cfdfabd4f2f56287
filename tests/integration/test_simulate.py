"""``simulate ab`` on ml-latest-small against the real stack, with the version the product's
default ``recommender train`` makes as CURRENT: the model is judged on held-out ratings it
never saw, and beats popularity and random with non-overlapping 95% intervals (its lists come
from the ranking model, which ranks what people actually watch).
"""

from __future__ import annotations

import json

import pytest

from recommender.cli.simulate import show
from recommender.model.registry import ModelRegistry
from recommender.settings import Settings
from recommender.simulate import ab, simulated_users
from tests.support.cli import run_cli


@pytest.fixture(scope="module")
def report(spark, trained: Settings) -> ab.AbReport:
    return ab.run(spark, trained, ab.Options())


def test_the_model_beats_popularity_and_random_with_non_overlapping_intervals(
        report: ab.AbReport):
    by_name = {p.name: p for p in report.policies}
    assert list(by_name) == ["model", "popularity", "random"]
    model, reference = by_name["model"], by_name["random"]
    popular = by_name["popularity"]
    show(report)  # the numbers, in the test log
    assert report.users >= 590  # ml-latest-small's 610 users, less those with nothing held out
    assert model.beats_random
    assert model.metrics[ab.REWARD].low > reference.metrics[ab.REWARD].high
    assert model.uplift[ab.REWARD].low > 0
    assert model.metrics["hit_rate"].low > reference.metrics["hit_rate"].high
    assert model.metrics["length"].mean > reference.metrics["length"].mean
    assert model.metrics[ab.REWARD].above(popular.metrics[ab.REWARD]), (
        model.metrics[ab.REWARD], popular.metrics[ab.REWARD])


def test_responses_come_only_from_ratings_the_model_never_saw(spark, trained: Settings):
    """The re-cut split is the training split: per movie, the ratings on the known side are
    exactly the model's training counts; and no known rating is also a response."""
    artifacts = ModelRegistry.from_settings(trained.model).load()
    spec = simulated_users.SplitSpec.of(artifacts.metadata)
    ratings, _ = simulated_users.read_source(spark, trained, spec.source)
    train, held_out = simulated_users.held_out_split(ratings, spec)
    counts = train.groupBy("movie_id").count().toPandas()
    assert dict(zip(counts["movie_id"].tolist(), counts["count"].tolist(), strict=True)) == \
        dict(zip(artifacts.item_ids.tolist(), artifacts.item_counts.tolist(), strict=True))
    users = simulated_users.collect_users(train, held_out, max_users=10_000, seed=1)
    assert len(users) >= 590 and all(u.held_out for u in users)
    assert all(not set(u.seen) & set(u.held_out) for u in users)


def test_the_cli_prints_json_writes_a_chart_and_names_a_version(
        trained: Settings, tmp_path, monkeypatch):
    version = ModelRegistry.from_settings(trained.model).current_version()
    chart = tmp_path / "ab.svg"
    result = run_cli(trained, ["simulate", "ab", "-p", "model", "-p", f"model:{version}",
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


def test_an_unknown_policy_is_a_usage_error(trained: Settings, monkeypatch):
    result = run_cli(trained, ["simulate", "ab", "-p", "best"], monkeypatch)
    assert result.exit_code == 2 and "unknown policy" in result.output
