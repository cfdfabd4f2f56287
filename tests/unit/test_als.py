"""The two models' hyper-parameters and the search space ``train --tune`` walks."""

from __future__ import annotations

from recommender.settings import ModelSettings
from recommender.train.als import RankingParams, RatingParams, SearchSpace


def test_ranking_candidates_vary_alpha_and_rating_candidates_the_bias_regularisation():
    model = ModelSettings()
    space = SearchSpace(rank=(8, 16), reg_param=(0.1,), max_iter=(5,), alpha=(0.5, 2.0),
                        item_bias_reg=(3.0, None), user_bias_reg=(7.0,))
    ranking = space.candidates(RankingParams.from_settings(model))
    assert sorted((p.rank, p.alpha) for p in ranking) == [(8, 0.5), (8, 2.0), (16, 0.5),
                                                          (16, 2.0)]
    assert all(isinstance(p, RankingParams) for p in ranking)
    base = RatingParams.from_settings(model)
    rating = space.candidates(base)
    assert sorted((p.rank, p.item_bias_reg, p.user_bias_reg) for p in rating) == [
        (8, 3.0, 7.0), (8, base.item_bias_reg, 7.0), (16, 3.0, 7.0),
        (16, base.item_bias_reg, 7.0)]  # None keeps the base value
    assert all(not hasattr(p, "alpha") for p in rating)


def test_overrides_replace_single_parameters_and_ignore_the_other_models():
    model = ModelSettings()
    ranking = RankingParams.from_settings(model, rank=48, item_bias_reg=1.0)
    assert ranking.rank == 48 and ranking.alpha == model.ranking.alpha
    rating = RatingParams.from_settings(model, alpha=9.0, reg_param=0.3)
    assert rating.reg_param == 0.3 and rating.rank == model.rating.rank
    assert ranking.to_dict()["implicit_prefs"] and not rating.to_dict()["implicit_prefs"]
