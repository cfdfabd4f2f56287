"""Predictor scoring on a hand-made model: strategies, enrichment and exclusions."""

from __future__ import annotations

from dataclasses import fields

import numpy as np
import pandas as pd
import pytest

from recommender.contracts import Prediction
from recommender.model.artifacts import ModelArtifacts
from recommender.predict.scoring import (
    REQUEST_COLUMNS,
    ServingBundle,
    predict_rows,
    users_needing_history,
)

MOVIES = {10: ("Alpha", 1995, ["Action"]), 20: ("Beta", 2001, ["Comedy"]),
          30: ("Gamma", 1999, ["Drama", "Action"]), 40: ("Delta", 2010, [])}


@pytest.fixture
def bundle() -> ServingBundle:
    artifacts = ModelArtifacts(
        version="v1",
        item_ids=np.array([10, 20, 30]),
        item_factors=np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=np.float32),
        user_ids=np.array([1]),
        user_factors=np.array([[2.0, 1.0]], dtype=np.float32),
        item_counts=np.array([5, 50, 7]),
        params={"rank": 2, "reg_param": 0.1, "implicit_prefs": False},
    )
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
    return predict_rows(bundle, frame, histories)


def test_pair_for_known_user_is_the_dot_product_enriched(bundle):
    [row] = run(bundle, request(movie_id=30))
    assert row["predicted_rating"] == pytest.approx(3.0)
    assert (row["title"], row["year"], row["genres"]) == ("Gamma", 1999, ["Drama", "Action"])
    assert (row["strategy"], row["model_version"], row["requested_at"]) == ("als", "v1", 1000)
    assert row["rank"] is None and row["reason"] is None


def test_pair_rating_is_clipped_to_the_scale(bundle):
    [row] = run(bundle, request(movie_id=10, user_id=1))
    assert row["predicted_rating"] == 2.0
    [row] = run(bundle, request(movie_id=20, user_id=2, history={10: 0.5}))
    assert row["strategy"] == "fold-in" and row["predicted_rating"] == 0.5


def test_unknown_movie_gets_a_reason_not_a_crash(bundle):
    [row] = run(bundle, request(movie_id=999))
    assert row["predicted_rating"] is None and "unknown movie_id 999" in row["reason"]


def test_movie_in_catalogue_but_not_in_model(bundle):
    [row] = run(bundle, request(movie_id=40))
    assert row["predicted_rating"] is None and "no ratings" in row["reason"]
    assert row["title"] == "Delta"


def test_top_k_excludes_seen_and_requested_and_ranks_from_one(bundle):
    rows = run(bundle, request(k=3, exclude=[30], history={10: 4.0}))
    assert [r["movie_id"] for r in rows] == [20]
    assert rows[0]["rank"] == 1 and rows[0]["strategy"] == "als"


def test_new_user_with_history_is_folded_in(bundle):
    rows = run(bundle, request(user_id=77, k=2, history={10: 5.0}))
    assert {r["strategy"] for r in rows} == {"fold-in"}
    assert [r["movie_id"] for r in rows] == [30, 20]


def test_user_with_no_history_gets_popularity_labelled(bundle):
    rows = run(bundle, request(user_id=78, k=2))
    assert [(r["movie_id"], r["strategy"]) for r in rows] == [(20, "popular"), (30, "popular")]
    assert all(r["predicted_rating"] is None for r in rows)


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
        {**request(request_id="a", user_id=1, movie_id=10)},  # known user, pair: dot product
        {**request(request_id="b", user_id=2, movie_id=10)},  # unknown user: fold-in
        {**request(request_id="c", user_id=3, k=2)},  # top-k: seen movies excluded
        {**request(request_id="d", user_id=1, movie_id=20)},
    ])[list(REQUEST_COLUMNS)]
    assert users_needing_history(bundle, frame) == [2, 3]
    popular = ServingBundle(bundle.artifacts, MOVIES, popular_only=True)
    assert users_needing_history(popular, frame) == [3]


def test_interleaved_users_are_each_answered_with_their_own_strategy(bundle):
    rows = run(bundle, request(request_id="a", user_id=1, movie_id=30),
               request(request_id="b", user_id=77, movie_id=30, history={10: 5.0}),
               request(request_id="c", user_id=1, movie_id=10),
               request(request_id="d", user_id=78, movie_id=20))
    assert {r["request_id"]: (r["user_id"], r["strategy"]) for r in rows} == {
        "a": (1, "als"), "b": (77, "fold-in"), "c": (1, "als"), "d": (78, "popular")}
