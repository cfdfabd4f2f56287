"""Spark ML ALS: the two models every version holds, built, fitted and searched.

This module only knows how to make candidate models; evaluating them is ``evaluate``'s job
and deciding whether they replace the current ones is the registry's.

* **Ranking** (``RankingParams``): implicit ALS as Spark implements Hu, Koren and Volinsky
  (2008). Every rating is a positive preference with confidence ``1 + alpha * rating``, so a
  5-star rating counts more than a 1-star one but any rating says "watched": what orders a
  top-k list well, since what people choose to watch is most of the signal. Top-k lists are
  ordered by the ranking score plus ``rating_weight`` times the rating model's prediction
  (``ordering``): what a user will watch, nudged toward what they will like.
* **Rating** (``RatingParams``): explicit ALS on the residuals of regularised baselines,
  ``r - mu - b_u - b_i`` (Koren 2008, section 2.1): the movie bias ``b_i`` is the mean
  residual from ``mu`` shrunk by ``item_bias_reg`` pseudo-ratings, then the user bias ``b_u``
  the mean residual from ``mu + b_i`` shrunk by ``user_bias_reg``, then ``o_u``, the user's
  own offset on rare movies (at most ``new_movie_max_ratings`` ratings in training), shrunk
  the same way: some users rate obscure movies far above or below the rest. A movie the
  model never saw is a rare one with the bias ``b_new``. The biases travel as three factor
  columns (``model.artifacts``), so every consumer computes ``items @ user``.
"""

from __future__ import annotations

import itertools
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Self

import numpy as np

from recommender.model.artifacts import (
    RATING_EXTRA_COLUMNS,
    mixed_items,
    mixed_users,
    without_rare_offsets,
)
from recommender.settings import ModelSettings, RankingSettings, RatingSettings
from recommender.train.evaluate import Factors

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.ml.recommendation import ALS, ALSModel
    from pyspark.sql import DataFrame, SparkSession

CHECKPOINT_EVERY = 10
_RANKING, _RATING = RankingSettings(), RatingSettings()  # the defaults, defined once


class _FromSettings:
    """What both models' params share: built from their section of ``ModelSettings``
    (``SECTION``) with a run's overrides, recorded with Spark's ``implicitPrefs``."""

    SECTION: ClassVar[str]
    IMPLICIT: ClassVar[bool]

    @classmethod
    def from_settings(cls, model: ModelSettings, **overrides: Any) -> Self:
        section = getattr(model, cls.SECTION).model_dump()
        return _with(cls(**section, seed=model.seed), overrides)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "implicit_prefs": self.IMPLICIT}


@dataclass(frozen=True)
class RankingParams(_FromSettings):
    """Hyper-parameters of the implicit ranking model (Spark ML's names)."""

    SECTION: ClassVar[str] = "ranking"
    IMPLICIT: ClassVar[bool] = True
    rank: int = _RANKING.rank
    reg_param: float = _RANKING.reg_param
    alpha: float = _RANKING.alpha
    max_iter: int = _RANKING.max_iter
    rating_weight: float = _RANKING.rating_weight
    seed: int = 42


@dataclass(frozen=True)
class RatingParams(_FromSettings):
    """Hyper-parameters of the explicit rating model and of its biases."""

    SECTION: ClassVar[str] = "rating"
    IMPLICIT: ClassVar[bool] = False
    rank: int = _RATING.rank
    reg_param: float = _RATING.reg_param
    max_iter: int = _RATING.max_iter
    item_bias_reg: float = _RATING.item_bias_reg
    user_bias_reg: float = _RATING.user_bias_reg
    new_movie_max_ratings: int = _RATING.new_movie_max_ratings
    seed: int = 42


Params = RankingParams | RatingParams


def _with(params: Any, overrides: dict[str, Any]) -> Any:
    known = {k: v for k, v in overrides.items() if v is not None and hasattr(params, k)}
    return replace(params, **known)


@dataclass(frozen=True)
class SearchSpace:
    """Values ``train --tune`` tries. ``alpha`` and ``rating_weight`` apply to the ranking
    model only, the bias axes to the rating model only; ``None`` keeps the base value.
    ``rating_weight`` is the last axis, so candidates that differ only in it follow each
    other and share one fit (``pipeline.search``)."""

    rank: Sequence[int] = (16, 32)
    reg_param: Sequence[float] = (0.05, 0.1, 0.2)
    max_iter: Sequence[int] = (15,)
    alpha: Sequence[float] = (0.5, 1.0, 2.0)
    item_bias_reg: Sequence[float | None] = (None,)
    user_bias_reg: Sequence[float | None] = (None,)
    new_movie_max_ratings: Sequence[int | None] = (None,)
    rating_weight: Sequence[float | None] = (0.0, 0.05, 0.1, 0.2)

    def candidates(self, base: Params) -> list[Params]:
        ranking = isinstance(base, RankingParams)
        extra = ({"alpha": self.alpha, "rating_weight": self.rating_weight} if ranking else
                 {"item_bias_reg": self.item_bias_reg, "user_bias_reg": self.user_bias_reg,
                 "new_movie_max_ratings": self.new_movie_max_ratings})
        axes = {"rank": self.rank, "reg_param": self.reg_param, "max_iter": self.max_iter,
                **extra}
        return [_with(base, dict(zip(axes, values, strict=True)))
                for values in itertools.product(*axes.values())]


def fit_key(params: Params) -> tuple[Any, ...]:
    """What the fitted factors depend on: everything but ``rating_weight``, which only
    changes how they are combined."""
    return tuple(v for k, v in asdict(params).items() if k != "rating_weight")


def ordering(ranking: Factors, rating: Factors, weight: float) -> Factors:
    """The factors whose dot product orders top-k lists: ``ranking score + weight x
    predicted rating`` (unclipped, without the rare-movie offset ``o_u``) as one inner
    product, users ``[x_rank, x_rate]`` against movies ``[y_rank, weight x y_rate]``; the
    ranking factors alone when ``weight`` is 0.
    Both must be fitted on the same users and movies (``pipeline`` checks)."""
    if weight == 0:
        return ranking
    return Factors(user_ids=ranking.user_ids, item_ids=ranking.item_ids, implicit=True,
                   user_factors=mixed_users(ranking.user_factors, rating.user_factors, weight),
                   item_factors=mixed_items(ranking.item_factors,
                                            without_rare_offsets(rating.item_factors), weight))


def build(params: Params) -> ALS:
    """An unfitted ALS estimator over the training columns.

    ``coldStartStrategy="drop"`` keeps NaN predictions for unknown users or movies out of
    ``transform``; one block per core suits the local default (fewer shuffles). Checkpoints
    (every 10 iterations) only when there is a lineage worth cutting.
    """
    from pyspark.ml.recommendation import ALS

    implicit = isinstance(params, RankingParams)
    return ALS(userCol="user_id", itemCol="movie_id", ratingCol="rating",
               rank=params.rank, regParam=params.reg_param, maxIter=params.max_iter,
               alpha=params.alpha if implicit else 1.0, implicitPrefs=implicit,
               seed=params.seed, coldStartStrategy="drop",
               numUserBlocks=_blocks(), numItemBlocks=_blocks(),
               checkpointInterval=CHECKPOINT_EVERY if params.max_iter > CHECKPOINT_EVERY else -1)


@dataclass
class Fitted:
    """A fitted ALS model, its factors as arrays, and the params to record with it."""

    model: ALSModel
    params: Params
    factors: Factors
    recorded: dict[str, Any]


def fit(train: DataFrame, params: Params, checkpoint_dir: Path | str | None = None) -> Fitted:
    """Fit the model ``params`` describes on ``train`` (user_id, movie_id, rating).

    Spark ALS checkpoints its factor RDDs every 10 iterations, but only when the context has
    a checkpoint directory; without one a long lineage overflows the JVM stack and kills the
    driver. So one is always set: ``checkpoint_dir``, else a temp dir.
    """
    sc = train.sparkSession.sparkContext
    if sc.getCheckpointDir() is None:
        target = Path(checkpoint_dir) if checkpoint_dir else Path(tempfile.mkdtemp(prefix="als-"))
        target.mkdir(parents=True, exist_ok=True)
        sc.setCheckpointDir(str(target))
    if isinstance(params, RankingParams):
        model = build(params).fit(train)
        users, items = _frames(model)
        factors = Factors(user_ids=users[0], user_factors=users[1], item_ids=items[0],
                          item_factors=items[1], implicit=True)
        return Fitted(model, params, factors, params.to_dict())
    return _fit_rating(train, params)


def _fit_rating(train: DataFrame, params: RatingParams) -> Fitted:
    """Biases first (in Spark, so they scale with the data), then ALS on the residuals."""
    from pyspark.sql import functions as F

    mean = float(train.agg(F.avg("rating")).first()[0] or 0.0)
    item_bias = train.groupBy("movie_id").agg(
        (F.sum(F.col("rating") - F.lit(mean))
         / (F.count("*") + F.lit(params.item_bias_reg))).alias("b_i"),
        (F.count("*") <= params.new_movie_max_ratings).cast("double").alias("rare"))
    with_item = train.join(F.broadcast(item_bias), "movie_id")
    user_bias = with_item.groupBy("user_id").agg(
        (F.sum(F.col("rating") - F.lit(mean) - F.col("b_i"))
         / (F.count("*") + F.lit(params.user_bias_reg))).alias("b_u"))
    with_both = with_item.join(user_bias, "user_id")
    offsets, o_u, new_movie = _rare_movie_offsets(with_both, mean, params)
    residuals = with_both.join(F.broadcast(offsets), "user_id", "left").select(
        "user_id", "movie_id",
        (F.col("rating") - F.lit(mean) - F.col("b_u") - F.col("b_i")
         - F.col("rare") * F.coalesce(F.col("o_u"), F.lit(0.0))).alias("rating"))
    model = build(params).fit(residuals)
    (user_ids, x), (item_ids, y) = _frames(model)
    movies = item_bias.toPandas().set_index("movie_id")
    users = np.column_stack([x, mean + _aligned(_by_id(user_bias, "user_id", "b_u"), user_ids),
                             np.ones(len(x)),
                             _aligned(o_u, user_ids)])
    items = np.column_stack([y, np.ones(len(y)), _aligned(movies["b_i"], item_ids),
                             _aligned(movies["rare"], item_ids)])
    fallback_user = np.zeros(users.shape[1], np.float32)
    fallback_user[-3:] = (mean, 1.0, 0.0)
    fallback_item = np.zeros(items.shape[1], np.float32)
    fallback_item[-3:] = (1.0, new_movie, 1.0)
    factors = Factors(user_ids=user_ids, user_factors=users.astype(np.float32),
                      item_ids=item_ids, item_factors=items.astype(np.float32), implicit=False,
                      fallback_user=fallback_user, fallback_item=fallback_item)
    return Fitted(model, params, factors,
                  {**params.to_dict(), "global_mean": mean, "new_movie_bias": new_movie,
                   "extra_columns": RATING_EXTRA_COLUMNS})


def _aligned(values: pd.Series, ids: np.ndarray) -> np.ndarray:
    """Per-id values in ``ids`` order, 0 where an id has none."""
    return values.reindex(ids).fillna(0.0).to_numpy(np.float32)


def _by_id(frame: DataFrame, key: str, column: str) -> pd.Series:
    return frame.toPandas().set_index(key)[column]


def _rare_movie_offsets(rated: DataFrame, mean: float, params: RatingParams,
                        ) -> tuple[DataFrame, pd.Series, float]:
    """Per user ``o_u`` (as a Spark frame to join, and by user id), the mean residual
    from ``mu + b_u + b_i`` of their ratings of rare movies (rated at most
    ``new_movie_max_ratings`` times in training), shrunk by
    ``user_bias_reg`` pseudo-ratings; and ``b_new``, the mean residual of those ratings from
    ``mu + b_u + o_u``: the bias of a movie the model never saw, which is most like a rare
    one. How far from their usual ratings someone rates obscure movies is a habit of each
    user (some rate them far above, most below) that a movie's bias, shrunk to almost
    nothing for a movie rated once or twice, cannot carry."""
    from pyspark.sql import functions as F

    per_user = rated.where(F.col("rare") > 0).groupBy("user_id").agg(
        F.sum(F.col("rating") - F.lit(mean) - F.col("b_u") - F.col("b_i")).alias("beyond_b_i"),
        F.sum(F.col("rating") - F.lit(mean) - F.col("b_u")).alias("beyond_b_u"),
        F.count("*").alias("n")).toPandas()
    per_user["o_u"] = per_user["beyond_b_i"] / (per_user["n"] + params.user_bias_reg)
    rows = int(per_user["n"].sum())
    new_movie = float((per_user["beyond_b_u"] - per_user["o_u"] * per_user["n"]).sum()
                      / rows) if rows else 0.0
    offsets = rated.sparkSession.createDataFrame(
        per_user[["user_id", "o_u"]].astype({"user_id": "int64", "o_u": "float64"}),
        "user_id long, o_u double")
    return offsets, per_user.set_index("user_id")["o_u"], new_movie


def _frames(model: ALSModel) -> tuple[tuple[np.ndarray, np.ndarray],
                                      tuple[np.ndarray, np.ndarray]]:
    """(user ids, user factors), (item ids, item factors), rows sorted by id."""
    rank = model.rank
    users = model.userFactors.toPandas().sort_values("id")
    items = model.itemFactors.toPandas().sort_values("id")
    return ((users["id"].to_numpy(np.int64), _stack(users["features"], rank)),
            (items["id"].to_numpy(np.int64), _stack(items["features"], rank)))


def checkpoint_files(spark: SparkSession) -> set[Path]:
    """The RDD checkpoints in the context's checkpoint directory (to delete a run's own)."""
    directory = spark.sparkContext.getCheckpointDir()
    if not directory:
        return set()
    root = Path(directory.removeprefix("file:"))
    return set(root.glob("rdd-*")) if root.is_dir() else set()


def _stack(column: Any, rank: int) -> np.ndarray:
    if len(column) == 0:
        return np.zeros((0, rank), np.float32)
    return np.asarray(np.stack(column.to_numpy()), dtype=np.float32)


def _blocks() -> int:
    from pyspark import SparkContext

    sc = SparkContext._active_spark_context
    return max(2, sc.defaultParallelism if sc else 2)
