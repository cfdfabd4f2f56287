"""``recommender stats``'s pure pieces: distributions, top lists, coverage, uniqueness."""

from __future__ import annotations

import numpy as np
import pytest

from recommender.model.foldin import recommend_for_user
from recommender.serving_stats import (
    Distribution,
    ListProfile,
    coverage,
    list_profile,
    share_of,
    top_lists,
    unique_top1_share,
)
from tests.support.models import random_artifacts


def test_distribution_summarises_and_handles_empty():
    d = Distribution.of([20, 10, 40, 30, 1000])
    assert (d.count, d.min, d.p50, d.max, d.mean) == (5, 10.0, 30.0, 1000.0, 220.0)
    assert d.p90 == pytest.approx(np.quantile([10, 20, 30, 40, 1000], 0.9))
    assert Distribution.of([]) == Distribution(0, None, None, None, None, None)


def test_coverage_counts_distinct_movies_over_the_catalogue():
    assert coverage([[1, 2, 3], [3, 4], []], catalogue=8) == 0.5
    assert coverage([], catalogue=0) == 0.0


def test_unique_top1_share_counts_first_slots_nobody_else_has():
    lists = [[1, 2], [1, 3], [2, 1], [5], []]
    assert unique_top1_share(lists) == pytest.approx(2 / 5)  # [2, 1] and [5]
    assert unique_top1_share([]) == 0.0


def test_share_of_is_over_the_population_only():
    assert share_of([1, 2, 3, 4], [2, 4, 99]) == 0.5
    assert share_of([], [1]) == 0.0


def test_top_lists_are_what_serving_answers_and_never_hold_rated_movies():
    artifacts = random_artifacts(30, 1, 3, seed=2, first_item=10)
    ratings = [{10: 5.0, 11: 1.0}, {12: 4.0}, {}]  # a known user, a fold-in, a cold start
    lists = top_lists(artifacts, [1, 2, 3], ratings, 5)
    for user, rated, movies in zip([1, 2, 3], ratings, lists, strict=True):
        assert movies == [m for m, _ in recommend_for_user(artifacts, user, 5, ratings=rated).items]
        assert len(movies) == 5 and not set(movies) & set(rated)
    assert lists[2] == list(range(10, 15))  # cold start: the most-rated movies


def test_list_profile_compares_recommended_movies_with_the_catalogue():
    counts = {1: 100, 2: 50, 3: 2, 4: 1, 5: 1}
    means = {1: 4.0, 2: 3.0, 3: 5.0, 4: 1.0, 5: 2.0}
    profile = list_profile([[1, 2], [1, 3]], counts, means, catalogue=[1, 2, 3, 4, 5])
    # recommended slots: 1, 2, 1, 3 -> counts 100, 50, 100, 2 (median 75); catalogue median 2
    assert profile == ListProfile(rec_median_count=75.0, catalogue_median_count=2.0,
                                  rec_mean_rating=pytest.approx((4 + 3 + 4 + 5) / 4))
    empty = list_profile([[], []], counts, means, catalogue=[1, 2])
    assert empty.rec_median_count is None and empty.catalogue_median_count == 75.0
