"""Predictor scoring on a hand-made model: strategies, enrichment and exclusions."""

from __future__ import annotations

from dataclasses import asdict, fields

import numpy as np
import pandas as pd
import pytest

from recommender.contracts import Prediction
from recommender.model import ModelArtifacts, fold_in, predict_pair, recommend
from recommender.predict.scoring import (
    REQUEST_COLUMNS,
    ServingBundle,
    predict_rows,
    users_needing_history,
)
from tests.support.models import make_artifacts, rating_rows

MOVIES = {10: ("Alpha", 1995, ["Action"]), 20: ("Beta", 2001, ["Comedy"]),
          30: ("Gamma", 1999, ["Drama", "Action"]), 40: ("Delta", 2010, [])}


@pytest.fixture
def bundle() -> ServingBundle:
    """Two models that disagree. Ranking scores of user 1: movie 10 -> 2, 20 -> 1, 30 -> 3.
    Rating model (mu 3.0, b_i 0 / 0.2 / -0.1): user 1 rates 10 -> 3.5, 20 -> 3.7, 30 -> 2.9;
    users 2 and 3 sit far above and below the scale (clipping)."""
    artifacts = make_artifacts(
        [10, 20, 30], [1, 2, 3],
        np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]),
        np.array([[2.0, 1.0], [0.1, 0.1], [0.1, 0.1]]),
        rating_items=rating_rows(np.array([[0.5, 0.0], [0.0, 0.5], [0.0, 0.0]]), [1, 1, 1],
                                 [0.0, 0.2, -0.1]),
        rating_users=rating_rows(np.array([[1.0, 1.0], [0.0, 0.0], [0.0, 0.0]]),
                                 [3.0, 9.0, -9.0], [1, 1, 1]),
        item_counts=[5, 50, 7], global_mean=3.0)
    return ServingBundle(artifacts, MOVIES)


def request(request_id="r", user_id=1, movie_id=None, k=None, exclude=None, history=None):
    return {"request_id": request_id, "user_id": user_id, "movie_id": movie_id, "k": k,
            "exclude": exclude, "requested_at": 1000, "history": history}


def run(bundle, *requests):
    """What a predictor worker does with a batch: the histories of the users who need one
    (here: given with the user's first request), then the rows."""
    frame = pd.DataFrame([{c: r[c] for c in REQUEST_COLUMNS} for r in requests])
    given = {}
    for r in requests:
        given.setdefault(r["user_id"], r["history"] or {})
    histories = {u: given[u] for u in users_needing_history(bundle, frame)}
    return [asdict(row) for row in predict_rows(bundle, frame, histories)]


def test_pair_is_the_rating_models_prediction_enriched(bundle):
    [row] = run(bundle, request(movie_id=30))
    assert row["predicted_rating"] == pytest.approx(2.9)  # rating model; ranking says 3.0
    assert (row["title"], row["year"], row["genres"]) == ("Gamma", 1999, ["Drama", "Action"])
    assert (row["strategy"], row["model_version"], row["requested_at"]) == ("als", "v1", 1000)
    assert row["rank"] is None and row["reason"] is None


def test_pair_rating_is_clipped_to_the_scale(bundle):
    [above] = run(bundle, request(movie_id=10, user_id=2))
    [below] = run(bundle, request(movie_id=10, user_id=3))
    assert (above["predicted_rating"], below["predicted_rating"]) == (5.0, 0.5)


def test_pair_of_a_folded_in_user_uses_the_rating_models_fold_in(bundle):
    [row] = run(bundle, request(movie_id=20, user_id=77, history={10: 4.0}))
    expected = predict_pair(bundle.artifacts, fold_in(bundle.artifacts, {10: 4.0}), 20)
    assert row["strategy"] == "fold-in" and row["predicted_rating"] == pytest.approx(expected)


def test_pair_of_a_user_with_no_history_is_the_movies_bias(bundle):
    [row] = run(bundle, request(movie_id=20, user_id=78))
    assert row["predicted_rating"] == pytest.approx(3.2)  # mu + b_i
    assert "no history" in row["reason"]


def test_unknown_movie_gets_a_reason_not_a_crash(bundle):
    [row] = run(bundle, request(movie_id=999))
    assert row["predicted_rating"] is None and "unknown movie_id 999" in row["reason"]


def test_movie_in_catalogue_but_not_in_model_gets_the_users_bias(bundle):
    [row] = run(bundle, request(movie_id=40))
    assert row["predicted_rating"] == pytest.approx(3.0)  # mu + b_u of user 1
    assert "no ratings" in row["reason"] and row["title"] == "Delta"


def test_top_k_is_ordered_by_ranking_and_carries_the_rating_models_stars(bundle):
    rows = run(bundle, request(k=3))
    assert [r["movie_id"] for r in rows] == [30, 10, 20]  # ranking 3 > 2 > 1
    assert [r["predicted_rating"] for r in rows] == pytest.approx([2.9, 3.5, 3.7])
    assert [r["rank"] for r in rows] == [1, 2, 3]
    assert [r["score"] for r in rows] == pytest.approx([3.0, 2.0, 1.0])


def test_top_k_excludes_seen_and_requested_and_ranks_from_one(bundle):
    rows = run(bundle, request(k=3, exclude=[30], history={10: 4.0}))
    assert [r["movie_id"] for r in rows] == [20]
    assert rows[0]["rank"] == 1 and rows[0]["strategy"] == "als"


def test_new_user_with_history_is_folded_in_by_the_ranking_model(bundle):
    rows = run(bundle, request(user_id=77, k=2, history={10: 5.0}))
    assert {r["strategy"] for r in rows} == {"fold-in"}
    vectors = fold_in(bundle.artifacts, {10: 5.0})
    expected = recommend(bundle.artifacts, vectors, 2, exclude={10})
    assert [r["movie_id"] for r in rows] == [m for m, _ in expected] == [30, 20]


def test_user_with_no_history_gets_popularity_labelled(bundle):
    rows = run(bundle, request(user_id=78, k=2))
    assert [(r["movie_id"], r["strategy"]) for r in rows] == [(20, "popular"), (30, "popular")]
    assert [r["predicted_rating"] for r in rows] == pytest.approx([3.2, 2.9])  # mu + b_i


def test_before_any_model_top_k_and_pairs_carry_no_rating(bundle):
    popular = ServingBundle(ModelArtifacts.popularity_only(np.array([10, 20, 30]),
                                                           np.array([5, 50, 7])), MOVIES,
                            popular_only=True)
    rows = run(popular, request(k=2), request(request_id="p", movie_id=30))
    top = [r for r in rows if r["request_id"] == "r"]
    assert [r["movie_id"] for r in top] == [20, 30]
    assert all(r["predicted_rating"] is None for r in rows)
    [pair] = [r for r in rows if r["request_id"] == "p"]
    assert pair["score"] == 7.0 and "no model trained yet" in pair["reason"]


def test_everything_excluded_yields_one_explaining_row(bundle):
    [row] = run(bundle, request(k=2, exclude=[10, 20, 30]))
    assert row["movie_id"] is None and "no movie left" in row["reason"]


def test_every_row_says_how_many_rows_answer_its_request(bundle):
    rows = run(bundle, request(request_id="pair", movie_id=30),
               request(request_id="top", k=2), request(request_id="capped", k=50),
               request(request_id="none", k=2, exclude=[10, 20, 30]))
    sizes: dict[str, list[int]] = {}
    for row in rows:
        sizes.setdefault(row["request_id"], []).append(row["answer_size"])
    assert sizes == {"pair": [1], "top": [2, 2], "capped": [3, 3, 3], "none": [1]}


def test_rows_carry_the_prediction_contract_fields_in_order(bundle):
    for row in run(bundle, request(movie_id=30), request(request_id="t", k=2)):
        assert list(row) == [f.name for f in fields(Prediction)]
        Prediction(**row)


def test_history_is_read_only_where_it_changes_the_answer(bundle):
    frame = pd.DataFrame([
        {**request(request_id="a", user_id=1, movie_id=10)},  # known user: newer ratings?
        {**request(request_id="b", user_id=5, movie_id=10)},  # unknown user: fold-in
        {**request(request_id="c", user_id=3, k=2)},  # top-k: seen movies excluded
        {**request(request_id="d", user_id=1, movie_id=20)},
    ])[list(REQUEST_COLUMNS)]
    assert users_needing_history(bundle, frame) == [1, 3, 5]
    popular = ServingBundle(bundle.artifacts, MOVIES, popular_only=True)
    assert users_needing_history(popular, frame) == [3]  # popularity pairs: no history


def test_interleaved_users_are_each_answered_with_their_own_strategy(bundle):
    rows = run(bundle, request(request_id="a", user_id=1, movie_id=30),
               request(request_id="b", user_id=77, movie_id=30, history={10: 5.0}),
               request(request_id="c", user_id=1, movie_id=10),
               request(request_id="d", user_id=78, movie_id=20))
    assert {r["request_id"]: (r["user_id"], r["strategy"]) for r in rows} == {
        "a": (1, "als"), "b": (77, "fold-in"), "c": (1, "als"), "d": (78, "popular")}
