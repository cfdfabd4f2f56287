"""The two models' hyper-parameters and the search space ``train --tune`` walks."""

from __future__ import annotations

import numpy as np

from recommender.settings import ModelSettings
from recommender.train.als import (
    RankingParams,
    RatingParams,
    SearchSpace,
    fit_key,
    ordering,
)
from recommender.train.evaluate import Factors


def test_ranking_candidates_vary_alpha_and_rating_candidates_the_bias_regularisation():
    model = ModelSettings()
    space = SearchSpace(rank=(8, 16), reg_param=(0.1,), max_iter=(5,), alpha=(0.5, 2.0),
                        item_bias_reg=(3.0, None), user_bias_reg=(7.0,),
                        rating_weight=(0.0, 0.3))
    ranking = space.candidates(RankingParams.from_settings(model))
    assert sorted((p.rank, p.alpha, p.rating_weight) for p in ranking) == [
        (r, a, w) for r in (8, 16) for a in (0.5, 2.0) for w in (0.0, 0.3)]
    assert all(isinstance(p, RankingParams) for p in ranking)
    # candidates differing only in rating_weight follow each other: one fit serves both
    keys = [fit_key(p) for p in ranking]
    assert keys[0::2] == keys[1::2] and len(set(keys)) == 4
    base = RatingParams.from_settings(model)
    rating = space.candidates(base)
    assert sorted((p.rank, p.item_bias_reg, p.user_bias_reg) for p in rating) == [
        (8, 3.0, 7.0), (8, base.item_bias_reg, 7.0), (16, 3.0, 7.0),
        (16, base.item_bias_reg, 7.0)]  # None keeps the base value
    assert all(not hasattr(p, "alpha") for p in rating)


def test_ordering_scores_are_the_ranking_score_plus_the_weighted_predicted_rating():
    rng = np.random.default_rng(0)
    ids_u, ids_i = np.arange(4), np.arange(6)
    ranking = Factors(ids_u, rng.normal(size=(4, 3)).astype(np.float32), ids_i,
                      rng.normal(size=(6, 3)).astype(np.float32), implicit=True)
    rating = Factors(ids_u, rng.normal(size=(4, 5)).astype(np.float32), ids_i,
                     rng.normal(size=(6, 5)).astype(np.float32), implicit=False)
    mixed = ordering(ranking, rating, 0.25)
    stars = rating.item_factors.copy()
    stars[:, -1] = 0.0  # the user's offset on rare movies moves their stars, not their place
    expected = (ranking.user_factors @ ranking.item_factors.T
                + 0.25 * rating.user_factors @ stars.T)
    np.testing.assert_allclose(mixed.user_factors @ mixed.item_factors.T, expected, rtol=1e-5,
                               atol=1e-5)
    assert ordering(ranking, rating, 0.0) is ranking


def test_overrides_replace_single_parameters_and_ignore_the_other_models():
    model = ModelSettings()
    ranking = RankingParams.from_settings(model, rank=48, item_bias_reg=1.0)
    assert ranking.rank == 48 and ranking.alpha == model.ranking.alpha
    rating = RatingParams.from_settings(model, alpha=9.0, reg_param=0.3)
    assert rating.reg_param == 0.3 and rating.rank == model.rating.rank
    assert ranking.to_dict()["implicit_prefs"] and not rating.to_dict()["implicit_prefs"]
