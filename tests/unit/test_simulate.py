"""The A/B simulation's pure pieces: the shared feed rule, the simulated user, policies,
bootstrap intervals, the summary, the user grouping and the chart."""

from __future__ import annotations

import random
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from recommender.errors import InvalidRequest, ModelError, NotFound
from recommender.feed import TOP_N, FeedState, Scored, next_movie, popular_movies
from recommender.model.artifacts import ModelArtifacts
from recommender.model.foldin import recommend_for_user
from recommender.model.registry import ModelRegistry
from recommender.simulate import ab, confidence
from recommender.simulate.chart import render
from recommender.simulate.policies import Policy, build, parse
from recommender.simulate.session import Rules, SimUser, play
from recommender.simulate.simulated_users import (
    SplitSpec,
    group_users,
    ratings_by_user,
    sample_ids,
)
from tests.support.models import random_artifacts

N_ITEMS = 120
GENRES = ("Comedy", "Drama", "Horror")


ART: ModelArtifacts = random_artifacts(N_ITEMS, 2, 4, seed=3, first_item=1)
# movie m has genre GENRES[m % 3]; the most popular movie is 1, then 2, ...
CATALOGUE = {m: (None, None, [GENRES[m % 3]]) for m in range(1, N_ITEMS + 1)}


def _popular(k: int, excluded: set[int], genre: str | None) -> list[Scored]:
    return popular_movies(ART, CATALOGUE, k, excluded, genre)


def _scored(*movies: int) -> list[Scored]:
    return [Scored(m, 0.0, CATALOGUE[m]) for m in movies]


# --- the feed rule (shared with /sessions/{id}/next) ------------------------------------------


def test_feed_serves_the_top_list_then_the_last_genre_then_anything_never_twice():
    state = FeedState(top=_scored(10, 11, 12), seen={1, 3})
    picks = [next_movie(state, random.Random(0), _popular) for _ in range(N_ITEMS - 2)]
    movies = [m.movie_id for m, _ in picks]
    assert sorted(movies[:3]) == [10, 11, 12] and {s for _, s in picks[:3]} == {"top"}
    assert len(set(movies)) == len(movies) and not {1, 3} & set(movies)
    genre = CATALOGUE[movies[2]][2][0]
    assert state.genre == genre
    in_genre = [m for m in range(1, N_ITEMS + 1) if genre in CATALOGUE[m][2]]
    fallback = [(m.movie_id, s) for m, s in picks[3:]]
    n_genre = len(set(in_genre) - set(movies[:3]) - {1, 3})
    assert all(s == "genre-fallback" and m in in_genre for m, s in fallback[:n_genre])
    assert [m for m, _ in fallback[:n_genre]] == sorted(m for m, _ in fallback[:n_genre])
    assert all(s == "popular-fallback" for _, s in fallback[n_genre:])
    with pytest.raises(NotFound):
        next_movie(state, random.Random(0), _popular)


def test_feed_fallback_ranks_by_training_count():
    assert [s.movie_id for s in popular_movies(ART, CATALOGUE, 3, {1})] == [2, 3, 4]
    assert [s.movie_id for s in popular_movies(ART, CATALOGUE, 2, set(), "Drama")] == [1, 4]


# --- the simulated user ----------------------------------------------------------------------


def test_a_user_consumes_held_out_movies_and_leaves_after_patience_misses():
    user = SimUser(7, seen={50: 4.0}, held_out={10: 5.0, 11: 2.0})
    outcome = play(user, _scored(10, 11), Rules(patience=2, max_length=50), random.Random(1),
                   _popular)
    # 10 (liked) and 11 (consumed, not liked) in some order, then misses until patience runs out
    assert outcome.consumed == 2 and outcome.liked == 1 and outcome.rating_sum == 7.0
    assert outcome.mean_rating == 3.5
    assert outcome.length in (3, 4)  # 11 first: miss, 10 resets, then 2 misses; else 10, 11, miss
    assert outcome.hit_rate == 2 / outcome.length


def test_a_session_stops_at_max_length_and_when_the_feed_runs_dry():
    likes_all = SimUser(1, seen={}, held_out={m: 5.0 for m in range(1, N_ITEMS + 1)})
    capped = play(likes_all, _scored(5), Rules(patience=1, max_length=7), random.Random(0),
                  _popular)
    assert capped.length == 7 and capped.liked == 7
    dry = play(likes_all, [], Rules(patience=1, max_length=10_000), random.Random(0), _popular)
    assert dry.length == N_ITEMS and dry.liked == N_ITEMS


def test_a_user_who_consumes_nothing_has_no_mean_rating():
    outcome = play(SimUser(1, {}, {}), _scored(3), Rules(patience=3), random.Random(0),
                   _popular)
    assert (outcome.length, outcome.consumed, outcome.mean_rating) == (3, 0, None)


def test_rules_reject_nonsense():
    with pytest.raises(ValueError):
        Rules(patience=0)


# --- policies --------------------------------------------------------------------------------


def test_policy_names_are_parsed_and_random_is_always_the_reference():
    assert parse(["model", "popularity"]) == [("model", None), ("popularity", None),
                                              ("random", None)]
    assert parse(["model:v2", "random", "model"]) == [("model", "v2"), ("random", None),
                                                      ("model", None)]
    assert parse(["model:"]) == [("model", None), ("random", None)]
    for bad in ("best", "popularity:v1"):
        with pytest.raises(InvalidRequest, match="unknown policy"):
            parse([bad])


def test_rankers_exclude_known_ratings_and_the_model_ranks_as_serving_does():
    user = SimUser(1, seen={1: 4.0, 2: 3.0, 99: 5.0}, held_out={})
    rng = random.Random(0)
    model = build("model", "model", ART, CATALOGUE).rank(user, rng)
    assert [s.movie_id for s in model] == [
        m for m, _ in recommend_for_user(ART, 1, TOP_N, ratings=user.seen).items]
    popular = build("popularity", "popularity", ART, CATALOGUE).rank(user, rng)
    assert [s.movie_id for s in popular][:3] == [3, 4, 5]
    drawn = build("random", "random", ART, CATALOGUE).rank(user, rng)
    ids = [s.movie_id for s in drawn]
    assert len(ids) == TOP_N == len(set(ids)) and not set(ids) & set(user.seen)
    assert all(s.info == CATALOGUE[s.movie_id] for s in drawn)


# --- intervals -------------------------------------------------------------------------------


def test_bootstrap_interval_brackets_the_mean_and_shrinks_with_more_users():
    rng = np.random.default_rng(0)
    small, large = rng.normal(1.0, 1.0, (1, 50)), rng.normal(1.0, 1.0, (1, 5000))
    widths = []
    for values in (small, large):
        est = confidence.estimate(values[0], confidence.bootstrap_means(values, 1000, 1)[0])
        assert est.low < est.mean < est.high
        widths.append(est.high - est.low)
    assert widths[1] < widths[0] / 5
    # the normal approximation's width for n=5000 is 2 * 1.96 / sqrt(5000) = 0.055
    assert widths[1] == pytest.approx(0.055, rel=0.15)


def test_paired_difference_of_identical_policies_is_exactly_zero():
    values = np.random.default_rng(1).random((1, 200))
    both = np.vstack([values, values])
    samples = confidence.bootstrap_means(both, 500, 2)
    diff = confidence.difference(both[0], both[1], samples[0], samples[1])
    assert (diff.mean, diff.low, diff.high) == (0.0, 0.0, 0.0)


def test_undefined_values_are_skipped_and_all_undefined_is_none():
    values = np.array([[1.0, np.nan, 3.0], [np.nan, np.nan, np.nan]])
    samples = confidence.bootstrap_means(values, 200, 0)
    est = confidence.estimate(values[0], samples[0])
    assert est.mean == 2.0 and est.users == 2 and 1.0 <= est.low <= est.high <= 3.0
    assert confidence.estimate(values[1], samples[1]) == confidence.Estimate(None, None, None, 0)


def test_above_means_no_overlap():
    high, low = confidence.Estimate(2.0, 1.5, 2.5, 9), confidence.Estimate(1.0, 0.5, 1.49, 9)
    assert high.above(low) and not low.above(high)
    assert not high.above(confidence.Estimate(1.0, 0.5, 1.6, 9))
    assert not high.above(confidence.Estimate(None, None, None, 0))


# --- the whole comparison on a toy world -----------------------------------------------------


def _world(n_users: int = 300) -> list[SimUser]:
    """Users whose held-out favourites are movies 100..119, the popularity tail."""
    rng = np.random.default_rng(5)
    return [SimUser(u, seen={int(m): 3.0 for m in rng.choice(50, 5, replace=False) + 1},
                    held_out={int(m): float(rng.choice([3.0, 4.5, 5.0]))
                              for m in rng.choice(20, 8, replace=False) + 100})
            for u in range(1, n_users + 1)]


def _oracle() -> Policy:
    """Knows each user's held-out movies: the best any ranking can do."""
    def rank(user: SimUser, _rng: random.Random) -> list[Scored]:
        return _scored(*sorted(user.held_out, key=lambda m: -user.held_out[m]))
    return Policy("oracle", "truth", rank, _popular)


def test_an_oracle_beats_random_and_random_never_beats_itself():
    users = _world()
    policies = [_oracle(), build("popularity", "popularity", ART, CATALOGUE),
                build("random", "random", ART, CATALOGUE)]
    values = ab.simulate(policies, users, Rules(), seed=42)
    assert values.shape == (3, len(users), len(ab.METRICS))
    oracle, popularity, reference = ab.summarise(policies, values, 500, 42)
    assert oracle.beats_random and not reference.beats_random
    assert not popularity.beats_random  # the favourites are in the popularity tail
    liked = oracle.metrics[ab.REWARD]
    assert liked.mean == pytest.approx(np.mean(values[0, :, 0]))
    assert oracle.uplift[ab.REWARD].low > 0 and oracle.relative_uplift > 1
    assert reference.uplift[ab.REWARD].mean == 0.0
    assert oracle.metrics["hit_rate"].mean > reference.metrics["hit_rate"].mean


def test_simulation_is_reproducible_and_policies_share_each_users_random_stream():
    users = _world(40)
    policies = [build("random", "random", ART, CATALOGUE)] * 2
    first = ab.simulate(policies, users, Rules(), seed=7)
    assert np.array_equal(first[0], first[1], equal_nan=True)
    assert np.array_equal(first, ab.simulate(policies, users, Rules(), seed=7), equal_nan=True)


def test_the_chart_is_one_well_formed_svg_with_a_panel_per_metric():
    users = _world(50)
    policies = [_oracle(), build("random", "random", ART, CATALOGUE)]
    results = ab.summarise(policies, ab.simulate(policies, users, Rules(), 1), 200, 1)
    report = ab.AbReport("v1", len(users), {"method": "random"}, Rules(), TOP_N, 200,
                         ab.REWARD, ab.CI_METHOD, results)
    svg = render(report)
    root = ET.fromstring(svg)
    assert root.tag.endswith("svg")
    assert all(ab.LABELS[m] in svg for m in ab.METRICS)
    assert svg.count(">oracle<") == len(ab.METRICS) and "<script" not in svg
    assert svg.count('class="whisker"') == 2 * len(ab.METRICS)


# --- data plumbing ---------------------------------------------------------------------------


def test_users_are_grouped_from_both_sides_of_the_split():
    seen = (np.array([2, 1, 2]), np.array([10, 11, 12]), np.array([1.0, 2.0, 3.0]))
    held = (np.array([2, 3]), np.array([20, 21]), np.array([4.0, 5.0]))
    users = group_users(np.array([1, 2, 3]), seen, held)
    assert users == [SimUser(1, {11: 2.0}, {}), SimUser(2, {10: 1.0, 12: 3.0}, {20: 4.0}),
                     SimUser(3, {}, {21: 5.0})]
    assert ratings_by_user(np.array([9]), seen) == [{}]


def test_user_samples_are_seeded_and_sorted():
    ids = np.arange(100, 0, -1)
    assert sample_ids(ids, 200, 1).tolist() == list(range(1, 101))
    sample = sample_ids(ids, 10, 1)
    assert len(set(sample.tolist())) == 10 and sample.tolist() == sorted(sample.tolist())
    assert np.array_equal(sample, sample_ids(ids, 10, 1))


def _meta(split: str = "random", seed: int = 42, rows: int = 1000) -> dict:
    return {"version": "v", "evaluation": {"split": split, "test_fraction": 0.2, "seed": seed},
            "data": {"rows_total": rows, "source": "cassandra", "window": {"last_n": None,
                                                                      "days": None}}}


def _register(reg: ModelRegistry, seed: int) -> str:
    version = reg.new_version()
    with reg.staging(version) as tmp:
        ART.save(tmp, _meta(seed=seed))
    return version


def test_a_version_cut_by_another_split_cannot_join_the_comparison(tmp_path):
    reg = ModelRegistry(tmp_path)
    reg.publish(_register(reg, seed=42))
    same, other = _register(reg, seed=42), _register(reg, seed=7)
    current = reg.load()
    spec = SplitSpec.of(current.metadata)
    models = ab._models(reg, current, spec, parse(["model", f"model:{same}"]))
    assert set(models) == {current.version, same}
    with pytest.raises(InvalidRequest, match="different train/held-out split"):
        ab._models(reg, current, spec, parse([f"model:{other}"]))


def test_versions_share_held_out_rows_only_with_the_same_split():
    base = SplitSpec.of(_meta())
    assert base.same_held_out(SplitSpec.of(_meta(rows=5000)))  # a hash split survives growth
    assert not base.same_held_out(SplitSpec.of(_meta(seed=1)))
    time = SplitSpec.of(_meta("time"))
    assert time.same_held_out(SplitSpec.of(_meta("time")))
    assert not time.same_held_out(SplitSpec.of(_meta("time", rows=5000)))
    with pytest.raises(ModelError, match="records no train/held-out split"):
        SplitSpec.of({"version": "old", "data": {}})
