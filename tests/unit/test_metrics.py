"""Ranking and rating metrics, top-k selection and the numpy evaluation harness."""

from __future__ import annotations

import math

import numpy as np
import pytest

from recommender.train.evaluate import (
    Factors,
    HoldOut,
    evaluate,
    mae,
    ranking_metrics,
    rmse,
    top_k_rows,
)


def test_rmse_and_mae() -> None:
    assert rmse(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 5.0])) == pytest.approx(
        math.sqrt(4 / 3))
    assert mae(np.array([1.0, 2.0, 3.0]), np.array([2.0, 2.0, 5.0])) == pytest.approx(1.0)


def test_perfect_ranking_scores_one() -> None:
    m = ranking_metrics([np.array([1, 2, 3])], [np.array([1, 2, 3])], k=3, catalogue_size=10)
    assert m["precision_at_3"] == 1.0
    assert m["recall_at_3"] == 1.0
    assert m["ndcg_at_3"] == pytest.approx(1.0)
    assert m["map_at_3"] == pytest.approx(1.0)
    assert m["coverage"] == pytest.approx(0.3)


def test_hand_computed_single_user() -> None:
    # hits at ranks 1 and 3 of 3; 4 relevant items in total
    m = ranking_metrics([np.array([10, 20, 30])], [np.array([10, 30, 40, 50])], k=3,
                        catalogue_size=100)
    assert m["precision_at_3"] == pytest.approx(2 / 3)
    assert m["recall_at_3"] == pytest.approx(2 / 4)
    dcg = 1 + 1 / math.log2(4)
    idcg = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert m["ndcg_at_3"] == pytest.approx(dcg / idcg)
    assert m["map_at_3"] == pytest.approx((1 + 2 / 3) / 3)


def test_no_hits_and_averaging_over_users() -> None:
    m = ranking_metrics([np.array([1, 2]), np.array([3, 4])], [np.array([1]), np.array([9])],
                        k=2, catalogue_size=4)
    assert m["precision_at_2"] == pytest.approx(0.25)
    assert m["recall_at_2"] == pytest.approx(0.5)
    assert m["ndcg_at_2"] == pytest.approx(0.5)
    assert m["coverage"] == 1.0


def test_fewer_recommendations_than_k() -> None:
    m = ranking_metrics([np.array([5])], [np.array([5])], k=10, catalogue_size=5)
    assert m["precision_at_10"] == pytest.approx(0.1)
    assert m["ndcg_at_10"] == pytest.approx(1.0)


def test_top_k_rows_sorted_and_skips_excluded() -> None:
    scores = np.array([[0.1, 0.9, 0.5, -np.inf], [3.0, 1.0, 2.0, 4.0]])
    scores[1, 3] = -np.inf
    assert top_k_rows(scores, 2).tolist() == [[1, 2], [0, 2]]


def _holdout() -> HoldOut:
    # 3 users, 5 movies; user 1 saw 10,20 and liked 30 later; user 2 saw 10, liked 40;
    # user 3 saw 20, held-out 50 rated low (not relevant).
    items = np.array([10, 20, 30, 40, 50])
    counts = np.array([50, 40, 3, 2, 1])
    sums = counts * 4.0
    seen = (np.array([1, 1, 2, 3]), np.array([10, 20, 10, 20]))
    test = (np.array([1, 2, 3]), np.array([30, 40, 50]), np.array([5.0, 4.5, 1.0]))
    return HoldOut.build(items, counts, sums, np.array([1, 2, 3]), seen, test)


def test_seen_items_are_never_recommended() -> None:
    ho = _holdout()
    out = evaluate(ho, None, k=1)
    # popularity would pick 10 then 20 for everyone; seen exclusion moves it to 30 / 20
    assert out["popularity"]["users"] == 2  # user 3 has no relevant held-out movie
    assert out["popularity"]["precision_at_1"] == pytest.approx(0.5)  # user 1 gets 30


def test_model_that_knows_the_answer_beats_baselines() -> None:
    ho = _holdout()
    eye = np.eye(5, dtype=np.float32)
    # user 1 points at movie 30, user 2 at movie 40
    factors = Factors(user_ids=np.array([1, 2, 3]), user_factors=eye[[2, 3, 4]],
                      item_ids=ho.items, item_factors=eye, implicit=True)
    out = evaluate(ho, factors, k=1)
    assert out["als"]["precision_at_1"] == 1.0
    assert out["als"]["ndcg_at_1"] == 1.0
    assert out["als"]["ndcg_at_1"] > out["popularity"]["ndcg_at_1"]
    assert "rmse" not in out["als"]  # implicit scores are not ratings
    assert "rmse" in out["popularity"]


def test_explicit_rmse_uses_clipped_dot_products() -> None:
    ho = _holdout()
    u = np.array([[5.0], [4.5], [9.0]], np.float32)  # user 3 predicts 9 -> clipped to 5
    factors = Factors(user_ids=np.array([1, 2, 3]), user_factors=u, item_ids=ho.items,
                      item_factors=np.ones((5, 1), np.float32), implicit=False)
    out = evaluate(ho, factors, k=1)
    assert out["als"]["rmse"] == pytest.approx(math.sqrt((0 + 0 + 16) / 3))
    assert out["als"]["mae"] == pytest.approx(4 / 3)


def test_users_without_factors_are_left_out_for_every_model() -> None:
    ho = _holdout()
    factors = Factors(user_ids=np.array([1]), user_factors=np.ones((1, 1), np.float32),
                      item_ids=ho.items, item_factors=np.ones((5, 1), np.float32),
                      implicit=True)
    out = evaluate(ho, factors, k=1)
    assert out["als"]["users"] == out["popularity"]["users"] == 1


def test_rmse_covers_every_held_out_pair_with_the_serving_fallbacks() -> None:
    # user 4 is unknown to the model and held out a movie (60) absent from training
    items = np.array([10, 20, 30])
    ho = HoldOut.build(items, np.array([5, 5, 5]), np.array([20.0, 20.0, 20.0]),
                       np.array([1, 4]), (np.array([1]), np.array([10])),
                       (np.array([1, 1, 4]), np.array([20, 60, 30]),
                        np.array([4.0, 2.0, 3.0])))
    # rating layout: user rows [x, mu + b_u, 1], item rows [y, 1, b_i]
    users = np.array([[1.0, 3.5, 1.0]], np.float32)  # user 1: mu + b_u = 3.5
    rows = np.array([[0.0, 1.0, 0.0], [0.5, 1.0, 0.0], [0.0, 1.0, -0.5]], np.float32)
    factors = Factors(user_ids=np.array([1]), user_factors=users, item_ids=items,
                      item_factors=rows, implicit=False,
                      fallback_user=np.array([0.0, 3.2, 1.0], np.float32),  # mu = 3.2
                      fallback_item=np.array([0.0, 1.0, 0.0], np.float32))
    out = evaluate(ho, factors, k=1)["als"]
    # (1, 20): 0.5 + 3.5 = 4.0 (error 0); (1, 60) unknown movie: mu + b_u = 3.5 (error 1.5);
    # (4, 30) unknown user: mu + b_i = 3.2 - 0.5 = 2.7 (error 0.3)
    assert out["rated_pairs"] == 3 and out["scorable_pairs"] == 1
    assert out["rmse"] == pytest.approx(math.sqrt((0 + 1.5 ** 2 + 0.3 ** 2) / 3), abs=1e-6)
    assert out["rmse_scorable"] == pytest.approx(0.0, abs=1e-6)
