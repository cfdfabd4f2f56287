"""Fold-in reproduces the ALS user half-step of each model; lists follow the ranking model and
every predicted rating the rating model."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from recommender.errors import ModelError
from recommender.model.artifacts import ModelArtifacts
from recommender.model.foldin import (
    UserVectors,
    fold_in,
    predict_pair,
    predicted_ratings,
    recommend,
    recommend_for_user,
    recommend_popular,
    similar_items,
    trained_vectors,
    user_vectors,
)
from tests.support.models import make_artifacts, random_artifacts, rating_rows

RNG = np.random.default_rng(7)


def _objective_explicit(x: np.ndarray, y: np.ndarray, r: np.ndarray, lam: float) -> float:
    return float(((y @ x - r) ** 2).sum() + lam * len(r) * (x @ x))


def _objective_implicit(x: np.ndarray, y_all: np.ndarray, rows: np.ndarray, r: np.ndarray,
                        lam: float, alpha: float) -> float:
    c = np.ones(len(y_all))
    p = np.zeros(len(y_all))
    c[rows] = 1 + alpha * np.abs(r)
    p[rows] = r > 0
    return float((c * (p - y_all @ x) ** 2).sum() + lam * int((r > 0).sum()) * (x @ x))


def _rows(artifacts: ModelArtifacts, ratings: dict[int, float]) -> np.ndarray:
    return np.array([artifacts.item_index[m] for m in ratings])


def test_ranking_fold_in_minimises_the_hu_koren_volinsky_objective() -> None:
    artifacts = random_artifacts(ranking_params={"alpha": 2.0, "reg_param": 0.1})
    ratings = {101: 5.0, 110: 2.0, 140: 4.0}
    x = fold_in(artifacts, ratings).ranking.astype(np.float64)
    r = np.array(list(ratings.values()))
    y_all = artifacts.ranking.item_factors.astype(np.float64)
    best = _objective_implicit(x, y_all, _rows(artifacts, ratings), r, 0.1, 2.0)
    for _ in range(20):  # any perturbation is worse: x is the minimiser
        moved = x + RNG.normal(scale=1e-2, size=x.shape)
        assert _objective_implicit(moved, y_all, _rows(artifacts, ratings), r, 0.1, 2.0) > best


def test_rating_fold_in_is_the_shrunk_user_bias_then_the_als_wr_step_on_residuals() -> None:
    artifacts = random_artifacts(rating_params={"reg_param": 0.1, "user_bias_reg": 5.0,
                                                "global_mean": 3.5})
    ratings = {100: 5.0, 107: 5.0, 120: 4.0}
    vec = fold_in(artifacts, ratings).rating
    rows = _rows(artifacts, ratings)
    item_bias = artifacts.rating.item_factors[rows, -1].astype(np.float64)
    r = np.array(list(ratings.values()))
    user_bias = float((r - 3.5 - item_bias).sum() / (5.0 + 3))
    assert vec.shape == (artifacts.rating.item_factors.shape[1],)
    assert vec[-2] == pytest.approx(3.5 + user_bias, abs=1e-5) and vec[-1] == 1.0
    x = vec[:-2].astype(np.float64)
    y = artifacts.rating.latent_item_factors[rows].astype(np.float64)
    residual = r - 3.5 - user_bias - item_bias
    best = _objective_explicit(x, y, residual, 0.1)
    for _ in range(20):
        assert _objective_explicit(x + RNG.normal(scale=1e-2, size=x.shape), y, residual,
                                   0.1) > best
    # a predicted rating is mu + b_u + b_i + x . y
    expected = 3.5 + user_bias + artifacts.rating.item_factors[5, -1] + float(
        artifacts.rating.latent_item_factors[5] @ x)
    assert predict_pair(artifacts, fold_in(artifacts, ratings), 105) == pytest.approx(
        min(max(expected, 0.5), 5.0), abs=1e-4)


def test_rating_fold_in_recovers_a_user_the_model_can_express() -> None:
    items = RNG.normal(size=(200, 4))
    items[:30] -= items[:30].mean(axis=0)  # the rated movies' taste averages out ...
    artifacts = make_artifacts(np.arange(100, 300), [1], items, RNG.normal(size=(1, 4)),
                               rating_items=rating_rows(items, np.ones(200), np.zeros(200)),
                               rating_params={"reg_param": 1e-6, "user_bias_reg": 0.0},
                               global_mean=0.0)
    truth = np.array([0.5, -1.0, 0.3, 2.0])
    ratings = {int(m): float(v) for m, v in zip(artifacts.item_ids[:30], 3.0 + items[:30] @ truth,
                                                strict=True)}
    vec = fold_in(artifacts, ratings).rating
    assert vec[-2] == pytest.approx(3.0, abs=1e-4)  # ... so the bias is the user's offset
    np.testing.assert_allclose(vec[:-2], truth, atol=1e-3)


def test_unknown_movies_are_ignored_and_none_known_gives_none() -> None:
    artifacts = random_artifacts()
    assert fold_in(artifacts, {999_999: 5.0}) is None
    with_unknown = fold_in(artifacts, {100: 4.0, 999_999: 1.0})
    alone = fold_in(artifacts, {100: 4.0})
    np.testing.assert_allclose(with_unknown.ranking, alone.ranking)
    np.testing.assert_allclose(with_unknown.rating, alone.rating)


def test_recommend_follows_the_ranking_model_and_excludes_sorts_and_limits() -> None:
    artifacts = random_artifacts()
    vectors = trained_vectors(artifacts, 1)
    top = recommend(artifacts, vectors, k=5, exclude={100, 101})
    assert len(top) == 5 and {m for m, _ in top}.isdisjoint({100, 101})
    scores = [s for _, s in top]
    assert scores == sorted(scores, reverse=True)
    ranking = artifacts.ranking.item_factors @ vectors.ranking
    allowed = [i for i in range(len(ranking)) if artifacts.item_ids[i] not in (100, 101)]
    expected = sorted(allowed, key=lambda i: -ranking[i])[:5]
    assert [m for m, _ in top] == [int(artifacts.item_ids[i]) for i in expected]
    assert len(recommend(artifacts, vectors, k=500)) == 50


def test_lists_are_ordered_by_ranking_and_carry_the_rating_models_stars() -> None:
    # two models that disagree: the ranking model prefers movie 100, the rating model 101
    artifacts = make_artifacts([100, 101], [1], np.array([[1.0], [0.1]]), np.array([[1.0]]),
                               rating_items=rating_rows(np.array([[0.1], [1.0]]), [1, 1], [0, 0]),
                               rating_users=rating_rows(np.array([[1.0]]), [3.0], [1]))
    result = recommend_for_user(artifacts, 1, 2)
    assert result.strategy == "als"
    assert [m for m, _ in result.items] == [100, 101]
    assert result.ratings == pytest.approx([3.1, 4.0])
    assert predict_pair(artifacts, trained_vectors(artifacts, 1), 101) == pytest.approx(4.0)


def test_rating_weight_mixes_the_predicted_rating_into_the_order() -> None:
    # the same two disagreeing models; at rating_weight 2 the rating model's 0.9 lead in
    # predicted rating (x 2) outweighs the ranking model's 0.9 lead in score
    artifacts = make_artifacts([100, 101], [1], np.array([[1.0], [0.1]]), np.array([[1.0]]),
                               rating_items=rating_rows(np.array([[0.1], [1.0]]), [1, 1], [0, 0]),
                               rating_users=rating_rows(np.array([[1.0]]), [3.0], [1]),
                               ranking_params={"rating_weight": 2.0})
    result = recommend_for_user(artifacts, 1, 2)
    assert [m for m, _ in result.items] == [101, 100]
    assert [s for _, s in result.items] == pytest.approx([0.1 + 2 * 4.0, 1.0 + 2 * 3.1])
    assert result.ratings == pytest.approx([4.0, 3.1])  # stars stay the rating model's


def test_a_movie_the_model_never_saw_gets_the_new_movie_bias() -> None:
    artifacts = make_artifacts([100], [1], np.array([[1.0]]), np.array([[1.0]]),
                               rating_users=rating_rows(np.array([[1.0]]), [3.0], [1]),
                               rating_params={"new_movie_bias": -0.4})
    assert predict_pair(artifacts, trained_vectors(artifacts, 1), 999) == pytest.approx(3.0 - 0.4)


def _with_rare_movie_offsets(b_new: float) -> ModelArtifacts:
    """Movies 100-104 (rated 10, 3, 2, 1, 1 times; at most 2 is rare), the rating layout
    with ``o_u``: user rows ``[x, mu + b_u, 1, o_u]`` against item rows
    ``[y, 1, b_i, rare_i]``."""
    latent = RNG.normal(scale=0.3, size=(5, 2))
    rare = np.array([0.0, 0.0, 1.0, 1.0, 1.0])
    items = np.column_stack([latent, np.ones(5), RNG.normal(scale=0.3, size=5), rare])
    users = np.array([[0.1, -0.2, 3.6, 1.0, 0.7]])
    return make_artifacts(np.arange(100, 105), [1], latent, RNG.normal(size=(1, 2)),
                          rating_items=items, rating_users=users,
                          item_counts=[10, 3, 2, 1, 1],
                          rating_params={"rank": 2, "extra_columns": 3, "new_movie_bias": b_new,
                                         "new_movie_max_ratings": 2, "user_bias_reg": 2.0})


def test_rare_and_unseen_movies_add_the_users_own_offset_on_rare_movies() -> None:
    artifacts = _with_rare_movie_offsets(-0.4)
    assert artifacts.rating.rank == 2 and artifacts.rating.has_rare_movie_offsets
    vectors = trained_vectors(artifacts, 1)
    x = np.array([0.1, -0.2])
    # a movie the model never saw is a rare one: mu + b_u + b_new + o_u
    assert predict_pair(artifacts, vectors, 999) == pytest.approx(3.6 - 0.4 + 0.7)
    often, rare = artifacts.rating.item_factors[0], artifacts.rating.item_factors[3]
    assert predict_pair(artifacts, vectors, 100) == pytest.approx(
        3.6 + often[3] + often[:2] @ x, abs=1e-5)  # no offset on a movie rated 10 times
    assert predict_pair(artifacts, vectors, 103) == pytest.approx(
        3.6 + rare[3] + 0.7 + rare[:2] @ x, abs=1e-5)
    # a user with no signal gets mu + b_i, and mu + b_new for a new movie
    assert predicted_ratings(artifacts, None, [100, 999]) == pytest.approx(
        [3.5 + often[3], 3.5 - 0.4], abs=1e-5)


def test_fold_in_computes_the_offset_on_rare_movies_as_training_does() -> None:
    artifacts = _with_rare_movie_offsets(-0.4)
    ratings = {100: 4.0, 101: 4.0, 102: 5.0, 103: 2.0, 999: 1.0}  # 102, 103 rare, 999 unseen
    vec = fold_in(artifacts, ratings).rating
    assert vec.shape == (5,) and vec.dtype == np.float32
    b_i = artifacts.rating.item_factors[:, 3].astype(np.float64)
    mu_b = float(vec[2])  # mu + b_u, from the known movies
    assert mu_b == pytest.approx(3.5 + (np.array([4.0, 4.0, 5.0, 2.0]) - 3.5 - b_i[:4]).sum()
                                 / (2.0 + 4), abs=1e-5)
    beyond = np.array([5.0 - b_i[2], 2.0 - b_i[3], 1.0 + 0.4]) - mu_b
    assert vec[4] == pytest.approx(beyond.sum() / (2.0 + 3), abs=1e-5)
    # the latent step fits what the biases and the offset leave
    y = artifacts.rating.latent_item_factors[:4].astype(np.float64)
    residual = np.array([4.0, 4.0, 5.0, 2.0]) - mu_b - b_i[:4] - vec[4] * np.array([0, 0, 1, 1])
    best = _objective_explicit(vec[:2].astype(np.float64), y, residual, 0.1)
    for _ in range(20):
        assert _objective_explicit(vec[:2] + RNG.normal(scale=1e-2, size=2), y, residual,
                                   0.1) > best
    # no rare or unseen movie among the ratings: no offset
    assert fold_in(artifacts, {100: 4.0, 101: 3.0}).rating[4] == 0.0


def test_a_known_user_with_ratings_the_models_were_not_fitted_on_is_folded_in() -> None:
    artifacts = random_artifacts()
    fitted = {100: 5.0, 101: 4.0}
    artifacts = replace(artifacts,
                        user_counts=np.full(len(artifacts.user_ids), len(fitted), np.int64))
    vectors, strategy = user_vectors(artifacts, 1, fitted)
    assert strategy == "als"
    np.testing.assert_array_equal(vectors.ranking, trained_vectors(artifacts, 1).ranking)
    newer = {**fitted, 110: 5.0, 111: 5.0, 112: 4.5}
    vectors, strategy = user_vectors(artifacts, 1, newer)
    assert strategy == "fold-in"
    np.testing.assert_allclose(vectors.ranking, fold_in(artifacts, newer).ranking)
    np.testing.assert_allclose(vectors.rating, fold_in(artifacts, newer).rating)
    assert recommend_for_user(artifacts, 1, 5, ratings=newer).items == recommend(
        artifacts, fold_in(artifacts, newer), 5, exclude=newer)
    # a version that does not record what it was fitted on serves trained vectors
    assert user_vectors(replace(artifacts, user_counts=None), 1, newer)[1] == "als"


def test_strategy_falls_back_from_als_to_fold_in_to_popular() -> None:
    artifacts = random_artifacts()
    assert recommend_for_user(artifacts, 1, 3).strategy == "als"
    folded = recommend_for_user(artifacts, 77, 3, ratings={100: 5.0})
    assert folded.strategy == "fold-in" and 100 not in {m for m, _ in folded.items}
    popular = recommend_for_user(artifacts, 77, 3, exclude=[100])
    assert popular.strategy == "popular"
    assert [m for m, _ in popular.items] == [101, 102, 103]  # highest counts, 100 excluded
    assert recommend_popular(artifacts, 2) == [(100, 50.0), (101, 49.0)]
    # stars without a user vector: mu + b_i
    mu_b = 3.5 + artifacts.rating.item_factors[[1, 2, 3], -1]
    np.testing.assert_allclose(popular.ratings, mu_b.clip(0.5, 5.0), atol=1e-5)


def test_predicted_ratings_clip_and_fall_back_to_the_biases() -> None:
    artifacts = random_artifacts()
    big = UserVectors(artifacts.ranking.user_factors[0], artifacts.rating.item_factors[0] * 100)
    assert predict_pair(artifacts, big, 100) == 5.0
    small = UserVectors(artifacts.ranking.user_factors[0], -artifacts.rating.item_factors[0] * 100)
    assert predict_pair(artifacts, small, 100) == 0.5
    user = trained_vectors(artifacts, 1)
    # a movie the model never saw: mu + b_u, the user row's bias column
    assert predict_pair(artifacts, user, 999_999) == pytest.approx(
        float(np.clip(artifacts.rating.user_factors[0, -2], 0.5, 5.0)), abs=1e-5)
    both = predicted_ratings(artifacts, None, [999_999])
    assert both[0] == pytest.approx(3.5)  # neither known: mu


def test_similar_items_use_the_ranking_models_latent_factors() -> None:
    artifacts = random_artifacts()
    # same direction as 103
    artifacts.ranking.item_factors[10] = artifacts.ranking.item_factors[3] * 2
    artifacts.ranking.item_factors[11] = -artifacts.ranking.item_factors[3]  # opposite taste
    # the rating model's twin
    artifacts.rating.item_factors[12, :-2] = artifacts.rating.item_factors[3, :-2]
    ranked = similar_items(artifacts, 103, 49)
    assert ranked[0][0] == 110 and ranked[-1][0] == 111
    assert ranked[0][1] == pytest.approx(1.0, abs=1e-5)


def test_save_load_round_trip_without_pickle(tmp_path: Path) -> None:
    artifacts = random_artifacts()
    artifacts.save(tmp_path / "v1", {"created_at": "now"})
    loaded = ModelArtifacts.load(tmp_path / "v1")
    for kind in ("ranking", "rating"):
        np.testing.assert_array_equal(getattr(loaded, kind).item_factors,
                                      getattr(artifacts, kind).item_factors)
        np.testing.assert_array_equal(getattr(loaded, kind).user_factors,
                                      getattr(artifacts, kind).user_factors)
    np.testing.assert_array_equal(loaded.user_ids, artifacts.user_ids)
    assert loaded.params == artifacts.params and loaded.metadata["format"] == 2


def test_corrupt_or_missing_files_raise_model_error_naming_the_version(tmp_path: Path) -> None:
    random_artifacts().save(tmp_path / "v1", {})
    (tmp_path / "v1" / "ranking_item_factors.npy").write_bytes(b"garbage")
    with pytest.raises(ModelError, match=r"v1.*corrupt"):
        ModelArtifacts.load(tmp_path / "v1")
    (tmp_path / "v1" / "user_ids.npy").unlink()
    with pytest.raises(ModelError, match=r"v1.*missing"):
        ModelArtifacts.load(tmp_path / "v1", verify=False)
    with pytest.raises(ModelError, match="nope"):
        ModelArtifacts.load(tmp_path / "nope")


def test_a_version_missing_one_of_its_two_models_is_refused(tmp_path: Path) -> None:
    random_artifacts().save(tmp_path / "v1", {})
    (tmp_path / "v1" / "rating_user_factors.npy").unlink()
    with pytest.raises(ModelError, match=r"v1 is incomplete.*rating_user_factors"):
        ModelArtifacts.load(tmp_path / "v1")


def test_mismatched_factor_shapes_are_refused() -> None:
    with pytest.raises(ModelError, match="ranking item factors shape"):
        make_artifacts([1, 2, 3], [1], RNG.normal(size=(2, 4)), RNG.normal(size=(1, 4)),
                       rating_items=rating_rows(RNG.normal(size=(3, 4)), np.ones(3),
                                                np.zeros(3)))
    with pytest.raises(ModelError, match="rating user and item factors differ in rank"):
        make_artifacts([1, 2], [1], RNG.normal(size=(2, 4)), RNG.normal(size=(1, 4)),
                       rating_users=rating_rows(RNG.normal(size=(1, 3)), [3.5], [1]))


def test_a_single_model_version_of_the_old_format_is_refused_with_what_to_do(
        tmp_path: Path) -> None:
    random_artifacts().save(tmp_path / "v1", {})
    meta_path = tmp_path / "v1" / "metadata.json"
    import json

    meta = json.loads(meta_path.read_text())
    del meta["format"]  # format 1 wrote no format field
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ModelError, match=r"format 1.*recommender train"):
        ModelArtifacts.load(tmp_path / "v1")
