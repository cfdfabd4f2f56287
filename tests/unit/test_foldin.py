"""Fold-in reproduces the ALS user half-step; recommend/predict follow the serving contract."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from recommender.errors import ModelError
from recommender.model.artifacts import ModelArtifacts
from recommender.model.foldin import (
    fold_in,
    predict_pair,
    recommend,
    recommend_for_user,
    recommend_popular,
    similar_items,
)

RNG = np.random.default_rng(7)


def _artifacts(implicit: bool = False, n_items: int = 50, rank: int = 4,
               reg: float = 0.1, alpha: float = 2.0) -> ModelArtifacts:
    return ModelArtifacts(
        version="v1", item_ids=np.arange(100, 100 + n_items),
        item_factors=RNG.normal(size=(n_items, rank)).astype(np.float32),
        user_ids=np.array([1, 2]), user_factors=RNG.normal(size=(2, rank)).astype(np.float32),
        item_counts=np.arange(n_items)[::-1].copy(),
        params={"rank": rank, "reg_param": reg, "alpha": alpha, "implicit_prefs": implicit})


def _objective_explicit(x: np.ndarray, y: np.ndarray, r: np.ndarray, lam: float) -> float:
    return float(((y @ x - r) ** 2).sum() + lam * len(r) * (x @ x))


def _objective_implicit(x: np.ndarray, y_all: np.ndarray, rows: np.ndarray, r: np.ndarray,
                        lam: float, alpha: float) -> float:
    c = np.ones(len(y_all))
    p = np.zeros(len(y_all))
    c[rows] = 1 + alpha * np.abs(r)
    p[rows] = r > 0
    return float((c * (p - y_all @ x) ** 2).sum() + lam * int((r > 0).sum()) * (x @ x))


def test_explicit_fold_in_minimises_the_als_wr_objective() -> None:
    art = _artifacts()
    ratings = {100: 5.0, 107: 3.0, 120: 1.0, 133: 4.5}
    x = fold_in(art, ratings).astype(np.float64)
    rows = np.array([art.item_index[m] for m in ratings])
    y, r = art.item_factors[rows].astype(np.float64), np.array(list(ratings.values()))
    best = _objective_explicit(x, y, r, 0.1)
    for _ in range(20):  # any perturbation is worse: x is the minimiser
        assert _objective_explicit(x + RNG.normal(scale=1e-2, size=x.shape), y, r, 0.1) > best


def _biased(n_items: int = 50, rank: int = 4) -> ModelArtifacts:
    items = np.hstack([RNG.normal(size=(n_items, rank)), np.ones((n_items, 1))])
    users = np.hstack([RNG.normal(size=(2, rank)), [[3.5], [4.0]]])
    return ModelArtifacts(
        version="vb", item_ids=np.arange(100, 100 + n_items),
        item_factors=items.astype(np.float32), user_ids=np.array([1, 2]),
        user_factors=users.astype(np.float32), item_counts=np.ones(n_items, np.int64),
        params={"rank": rank, "reg_param": 0.1, "implicit_prefs": False, "user_bias": True,
                "bias_shrinkage": 5.0, "global_mean": 3.5})


def test_biased_fold_in_appends_the_shrunk_user_mean() -> None:
    art = _biased()
    ratings = {100: 5.0, 107: 5.0, 120: 4.0}
    vec = fold_in(art, ratings)
    assert vec.shape == (art.rank,) == (5,)
    bias = (14.0 + 5 * 3.5) / (3 + 5)
    assert vec[-1] == pytest.approx(bias)
    rows = np.array([art.item_index[m] for m in ratings])
    y = art.latent_item_factors[rows].astype(np.float64)
    r = np.array(list(ratings.values())) - bias
    x = vec[:-1].astype(np.float64)
    best = _objective_explicit(x, y, r, 0.1)
    for _ in range(20):
        assert _objective_explicit(x + RNG.normal(scale=1e-2, size=x.shape), y, r, 0.1) > best
    # the score of a movie is bias + latent dot product
    expected = bias + float(art.latent_item_factors[5] @ vec[:-1])
    assert predict_pair(art, vec, 105) == pytest.approx(min(max(expected, 0.5), 5.0), abs=1e-5)


def test_similarity_ignores_the_bias_column() -> None:
    art = _biased()
    art.latent_item_factors[10] = -art.latent_item_factors[3]  # opposite taste
    assert 110 not in [m for m, _ in similar_items(art, 103, 5)]
    assert similar_items(art, 103, 49)[-1][0] == 110


def test_implicit_fold_in_minimises_the_hu_koren_volinsky_objective() -> None:
    art = _artifacts(implicit=True)
    ratings = {101: 5.0, 110: 2.0, 140: 4.0}
    x = fold_in(art, ratings).astype(np.float64)
    rows = np.array([art.item_index[m] for m in ratings])
    r = np.array(list(ratings.values()))
    y_all = art.item_factors.astype(np.float64)
    best = _objective_implicit(x, y_all, rows, r, 0.1, 2.0)
    for _ in range(20):
        moved = x + RNG.normal(scale=1e-2, size=x.shape)
        assert _objective_implicit(moved, y_all, rows, r, 0.1, 2.0) > best


def test_fold_in_recovers_a_user_the_model_can_express() -> None:
    art = _artifacts(n_items=200, reg=1e-6)
    truth = np.array([0.5, -1.0, 0.3, 2.0], np.float32)
    ratings = {int(m): float(v) for m, v in zip(art.item_ids[:30], art.item_factors[:30] @ truth,
                                                strict=True)}
    np.testing.assert_allclose(fold_in(art, ratings), truth, atol=1e-3)


def test_unknown_movies_are_ignored_and_none_known_gives_none() -> None:
    art = _artifacts()
    assert fold_in(art, {999_999: 5.0}) is None
    np.testing.assert_allclose(fold_in(art, {100: 4.0, 999_999: 1.0}), fold_in(art, {100: 4.0}))


def test_recommend_excludes_sorts_and_limits() -> None:
    art = _artifacts()
    vec = art.user_factors[0]
    top = recommend(art, vec, k=5, exclude={100, 101})
    assert len(top) == 5
    assert {m for m, _ in top}.isdisjoint({100, 101})
    scores = [s for _, s in top]
    assert scores == sorted(scores, reverse=True)
    full = art.item_factors @ vec
    allowed = [i for i in range(len(full)) if art.item_ids[i] not in (100, 101)]
    assert top[0][0] == art.item_ids[max(allowed, key=lambda i: full[i])]
    assert recommend(art, vec, k=500) and len(recommend(art, vec, k=500)) == 50


def test_strategy_falls_back_from_als_to_fold_in_to_popular() -> None:
    art = _artifacts()
    assert recommend_for_user(art, 1, 3).strategy == "als"
    folded = recommend_for_user(art, 77, 3, ratings={100: 5.0})
    assert folded.strategy == "fold-in" and 100 not in {m for m, _ in folded.items}
    popular = recommend_for_user(art, 77, 3, exclude=[100])
    assert popular.strategy == "popular"
    assert [m for m, _ in popular.items] == [101, 102, 103]  # highest counts, 100 excluded
    assert recommend_popular(art, 2) == [(100, 49.0), (101, 48.0)]


def test_predict_pair_clips_explicit_and_handles_unknown_movies() -> None:
    art = _artifacts()
    big = art.item_factors[0] * 100
    assert predict_pair(art, big, 100) == 5.0
    assert predict_pair(art, -big, 100) == 0.5
    assert predict_pair(art, big, 999_999) is None
    imp = _artifacts(implicit=True)
    assert predict_pair(imp, imp.item_factors[0] * 100, 100) > 5.0  # raw preference


def test_similar_items_finds_a_duplicate() -> None:
    art = _artifacts()
    art.item_factors[10] = art.item_factors[3] * 2  # same direction as movie 103
    assert similar_items(art, 103, 1)[0][0] == 110


def test_fold_in_and_recommend_take_milliseconds() -> None:
    art = _artifacts(n_items=10_000, rank=20)
    ratings = {int(m): 4.0 for m in art.item_ids[:20]}
    fold_in(art, ratings)  # warm the cached index and gramian
    started = time.perf_counter()
    for _ in range(20):
        recommend(art, fold_in(art, ratings), k=10, exclude=ratings)
    assert (time.perf_counter() - started) / 20 < 0.05


def test_save_load_round_trip_without_pickle(tmp_path: Path) -> None:
    art = _artifacts(implicit=True)
    art.save(tmp_path / "v1", {"created_at": "now"})
    loaded = ModelArtifacts.load(tmp_path / "v1")
    np.testing.assert_array_equal(loaded.item_factors, art.item_factors)
    np.testing.assert_array_equal(loaded.user_ids, art.user_ids)
    assert loaded.params == art.params and loaded.implicit


def test_corrupt_or_missing_files_raise_model_error_naming_the_version(tmp_path: Path) -> None:
    art = _artifacts()
    art.save(tmp_path / "v1", {})
    (tmp_path / "v1" / "item_factors.npy").write_bytes(b"garbage")
    with pytest.raises(ModelError, match="v1"):
        ModelArtifacts.load(tmp_path / "v1")
    (tmp_path / "v1" / "user_ids.npy").unlink()
    with pytest.raises(ModelError, match=r"v1.*missing"):
        ModelArtifacts.load(tmp_path / "v1", verify=False)
    with pytest.raises(ModelError, match="nope"):
        ModelArtifacts.load(tmp_path / "nope")
