"""Small model versions built in memory, for unit tests of the pure serving math and for
integration tests that need a version with known factors (no Spark training).

A version holds two factor models (``recommender.model.artifacts``): ``ranking`` (implicit,
latent columns only) and ``rating`` (latent columns plus the bias columns). These helpers
build the two-column bias layout of versions trained before ``o_u`` (user rows
``[x, mu + b_u, 1]``, item rows ``[y, 1, b_i]``), which keeps loading; a test of today's
three-column layout passes its rows and ``extra_columns`` itself.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from recommender.model.artifacts import FactorModel, ModelArtifacts


def rating_rows(latent: np.ndarray, second: np.ndarray, third: np.ndarray) -> np.ndarray:
    """``latent`` with two columns appended (the bias layout of the rating model)."""
    return np.hstack([latent, np.asarray(second, np.float64)[:, None],
                      np.asarray(third, np.float64)[:, None]]).astype(np.float32)


def make_artifacts(
    item_ids: np.ndarray | list[int],
    user_ids: np.ndarray | list[int],
    ranking_items: np.ndarray,
    ranking_users: np.ndarray,
    *,
    rating_items: np.ndarray | None = None,
    rating_users: np.ndarray | None = None,
    item_counts: np.ndarray | list[int] | None = None,
    version: str = "v1",
    ranking_params: dict[str, Any] | None = None,
    rating_params: dict[str, Any] | None = None,
    global_mean: float = 3.5,
) -> ModelArtifacts:
    """A version from explicit factors. Without rating factors, the rating model reuses the
    ranking latent factors with zero biases around ``global_mean``."""
    items = np.asarray(item_ids, np.int64)
    users = np.asarray(user_ids, np.int64)
    if rating_items is None:
        rating_items = rating_rows(ranking_items, np.ones(len(items)), np.zeros(len(items)))
    if rating_users is None:
        rating_users = rating_rows(ranking_users, np.full(len(users), global_mean),
                                   np.ones(len(users)))
    counts = np.ones(len(items), np.int64) if item_counts is None else np.asarray(item_counts)
    ranking = FactorModel("ranking", np.asarray(ranking_items, np.float32),
                          np.asarray(ranking_users, np.float32),
                          {"rank": np.shape(ranking_items)[1], "reg_param": 0.1, "alpha": 1.0,
                           **(ranking_params or {})})
    rating = FactorModel("rating", np.asarray(rating_items, np.float32),
                         np.asarray(rating_users, np.float32),
                         {"rank": np.shape(rating_items)[1] - 2, "reg_param": 0.1,
                          "user_bias_reg": 5.0, "item_bias_reg": 10.0,
                          "global_mean": global_mean, **(rating_params or {})})
    return ModelArtifacts(version, items, users, counts.astype(np.int64), ranking, rating)


def random_artifacts(n_items: int = 50, n_users: int = 2, rank: int = 4, *, seed: int = 7,
                     version: str = "v1", first_item: int = 100,
                     **kwargs: Any) -> ModelArtifacts:
    """A version with seeded random factors for both models; item counts fall with the row
    (the first movie is the most rated)."""
    rng = np.random.default_rng(seed)
    return make_artifacts(
        np.arange(first_item, first_item + n_items), np.arange(1, n_users + 1),
        rng.normal(size=(n_items, rank)), rng.normal(size=(n_users, rank)),
        rating_items=rating_rows(rng.normal(scale=0.3, size=(n_items, rank)),
                                 np.ones(n_items), rng.normal(scale=0.3, size=n_items)),
        rating_users=rating_rows(rng.normal(scale=0.3, size=(n_users, rank)),
                                 3.5 + rng.normal(scale=0.3, size=n_users), np.ones(n_users)),
        item_counts=np.arange(n_items)[::-1].copy() + 1, version=version, **kwargs)
