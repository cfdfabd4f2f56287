"""Held-out evaluation of a factor model and of the baselines it has to beat, in numpy.

Ranking needs every user's score for every movie, which Spark does slowly through a cross
join; on the driver it is one matrix product per batch of users. The held-out data is
collected for at most ``max_users`` sampled test users, so memory stays bounded on big data
while MovieLens small and 1M are evaluated on every user.

Conventions (recorded in each version's metadata):

* movies the user rated in the training split are never recommended ("seen excluded");
* a held-out movie is relevant when its rating is >= ``relevance_threshold``;
* ranking metrics average over users with a trained factor and at least one relevant movie;
  baselines are scored on exactly the same users and rows;
* RMSE/MAE cover held-out rows whose user and movie both have factors (Spark's
  ``coldStartStrategy="drop"``) and are left out for implicit models, whose scores are not
  ratings;
* coverage = distinct recommended movies / movies in the training split.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from recommender.contracts import RATING_MAX, RATING_MIN

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

LOWER_IS_BETTER = frozenset({"rmse", "mae"})
BATCH_CELLS = 1 << 24  # scores computed per batch: 16M floats = 64 MB


def metric_names(k: int) -> list[str]:
    return [f"precision_at_{k}", f"recall_at_{k}", f"ndcg_at_{k}", f"map_at_{k}", "coverage"]


def higher_is_better(metric: str) -> bool:
    return metric not in LOWER_IS_BETTER


# --- pure metrics -----------------------------------------------------------------------------


def rmse(predicted: np.ndarray, actual: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(predicted) - np.asarray(actual)) ** 2)))


def mae(predicted: np.ndarray, actual: np.ndarray) -> float:
    return float(np.mean(np.abs(np.asarray(predicted) - np.asarray(actual))))


def ranking_metrics(recommended: Sequence[np.ndarray], relevant: Sequence[np.ndarray], k: int,
                    catalogue_size: int) -> dict[str, float]:
    """Precision, recall, NDCG and MAP at ``k`` (binary relevance) averaged over users, and
    catalogue coverage. ``recommended[u]`` is ranked best first; users without a relevant
    item must be filtered out by the caller (they have no defined recall or NDCG)."""
    if len(recommended) != len(relevant):
        raise ValueError("recommended and relevant must hold the same users")
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    precision, recall, ndcg, ap = [], [], [], []
    shown: set[int] = set()
    for recs, rel in zip(recommended, relevant, strict=True):
        recs = np.asarray(recs)[:k]
        shown.update(int(m) for m in recs)
        hits = np.isin(recs, rel).astype(np.float64)
        n_rel = len(rel)
        precision.append(hits.sum() / k)
        recall.append(hits.sum() / n_rel if n_rel else 0.0)
        ideal = discounts[: min(k, n_rel)].sum()
        ndcg.append(float(hits @ discounts[: len(hits)]) / ideal if ideal else 0.0)
        cum_hits = np.cumsum(hits)
        precisions = cum_hits / np.arange(1, len(hits) + 1)
        ap.append(float(precisions @ hits) / min(k, n_rel) if n_rel else 0.0)
    n = max(len(recommended), 1)
    return {
        f"precision_at_{k}": float(np.sum(precision) / n),
        f"recall_at_{k}": float(np.sum(recall) / n),
        f"ndcg_at_{k}": float(np.sum(ndcg) / n),
        f"map_at_{k}": float(np.sum(ap) / n),
        "coverage": len(shown) / catalogue_size if catalogue_size else 0.0,
    }


def top_k_rows(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the ``k`` highest scores of each row, best first (-inf = excluded)."""
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


# --- held-out data ----------------------------------------------------------------------------


@dataclass(frozen=True)
class HoldOut:
    """What evaluation needs, as arrays indexed by the training catalogue.

    ``items`` are the movies of the training split (the catalogue), with their training
    ``counts`` and mean ratings. ``users`` are the evaluated users; ``seen_*`` are their
    training pairs and ``test_*`` their held-out rows, as (user row, item column) indices
    into ``users`` and ``items`` (-1 for a held-out movie absent from training).
    """

    items: np.ndarray
    counts: np.ndarray
    item_means: np.ndarray
    global_mean: float
    users: np.ndarray
    seen_user: np.ndarray
    seen_item: np.ndarray
    test_user: np.ndarray
    test_item: np.ndarray
    test_rating: np.ndarray

    @classmethod
    def build(cls, items: np.ndarray, counts: np.ndarray, sums: np.ndarray, users: np.ndarray,
              seen: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray, np.ndarray],
              shrinkage: float = 5.0) -> HoldOut:
        """From movie ids/stats and (user id, movie id[, rating]) arrays.

        Item means shrink toward the global mean by ``shrinkage`` pseudo-ratings, so a movie
        rated once at 5 does not predict 5 for everyone.
        """
        order = np.argsort(items)
        items, counts, sums = items[order], counts[order], sums[order]
        users = np.unique(users)
        global_mean = float(sums.sum() / max(counts.sum(), 1))
        means = (sums + shrinkage * global_mean) / (counts + shrinkage)
        su, si = _index(users, seen[0]), _index(items, seen[1])
        keep = (su >= 0) & (si >= 0)
        tu, ti = _index(users, test[0]), _index(items, test[1])
        keep_t = tu >= 0
        return cls(items=items, counts=counts.astype(np.int64), item_means=means,
                   global_mean=global_mean, users=users, seen_user=su[keep], seen_item=si[keep],
                   test_user=tu[keep_t], test_item=ti[keep_t],
                   test_rating=np.asarray(test[2], dtype=np.float64)[keep_t])

    def relevant(self, threshold: float) -> list[np.ndarray]:
        """Per evaluated user: the catalogue columns of relevant held-out movies."""
        mask = (self.test_rating >= threshold) & (self.test_item >= 0)
        return _group(self.test_user[mask], self.test_item[mask], len(self.users))


def _index(sorted_ids: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Positions of ``ids`` in ``sorted_ids``, -1 where absent."""
    ids = np.asarray(ids)
    if len(sorted_ids) == 0:
        return np.full(len(ids), -1, dtype=np.int64)
    pos = np.searchsorted(sorted_ids, ids).clip(0, len(sorted_ids) - 1)
    return np.where(sorted_ids[pos] == ids, pos, -1).astype(np.int64)


def _group(rows: np.ndarray, values: np.ndarray, n: int) -> list[np.ndarray]:
    order = np.argsort(rows, kind="stable")
    bounds = np.searchsorted(rows[order], np.arange(n + 1))
    vals = values[order]
    return [vals[bounds[i]:bounds[i + 1]] for i in range(n)]


# --- evaluation -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Factors:
    """A trained model reduced to what evaluation needs."""

    user_ids: np.ndarray
    user_factors: np.ndarray
    item_ids: np.ndarray
    item_factors: np.ndarray
    implicit: bool


def evaluate(holdout: HoldOut, factors: Factors | None, k: int = 10,
             relevance_threshold: float = 4.0, seed: int = 42) -> dict[str, dict[str, float]]:
    """Metrics of the model (``"als"``) and of the ``"popularity"`` and ``"random"`` baselines.

    With ``factors=None`` only the baselines are scored (on every evaluated user).
    """
    n_items = len(holdout.items)
    relevant = holdout.relevant(relevance_threshold)
    has_factor = np.ones(len(holdout.users), dtype=bool)
    u_rows = v_fac = known_item = None
    if factors is not None:
        u_rows = _index_unsorted(factors.user_ids, holdout.users)
        has_factor = u_rows >= 0
        v_rows = _index_unsorted(factors.item_ids, holdout.items)
        known_item = v_rows >= 0
        v_fac = np.zeros((n_items, factors.item_factors.shape[1]), np.float32)
        v_fac[known_item] = factors.item_factors[v_rows[known_item]]
    users = np.array([u for u in range(len(holdout.users)) if has_factor[u] and len(relevant[u])],
                     dtype=np.int64)
    seen = _group(holdout.seen_user, holdout.seen_item, len(holdout.users))
    rng = np.random.default_rng(seed)
    popularity = holdout.counts.astype(np.float32)
    recs: dict[str, list[np.ndarray]] = {"popularity": [], "random": []}
    if factors is not None:
        recs["als"] = []
    batch = max(1, BATCH_CELLS // max(n_items, 1))
    for start in range(0, len(users), batch):
        chunk = users[start:start + batch]
        mask_rows = np.repeat(np.arange(len(chunk)), [len(seen[u]) for u in chunk])
        mask_cols = np.concatenate([seen[u] for u in chunk]).astype(np.int64)
        tables = {"popularity": np.broadcast_to(popularity, (len(chunk), n_items)).copy(),
                  "random": rng.random((len(chunk), n_items), dtype=np.float32)}
        if factors is not None:
            scores = factors.user_factors[u_rows[chunk]].astype(np.float32) @ v_fac.T
            scores[:, ~known_item] = -np.inf
            tables["als"] = scores
        for name, scores in tables.items():
            scores[mask_rows, mask_cols] = -np.inf
            recs[name].extend(holdout.items[top_k_rows(scores, k)])
    rel_ids = [holdout.items[relevant[u]] for u in users]
    out = {name: {**ranking_metrics(lists, rel_ids, k, n_items), "users": float(len(users))}
           for name, lists in recs.items()}
    for name, errors in _rating_errors(holdout, factors, rng).items():
        out[name].update(errors)
    return out


def _rating_errors(holdout: HoldOut, factors: Factors | None,
                   rng: np.random.Generator) -> dict[str, dict[str, float]]:
    """RMSE/MAE on held-out rows every scored model can predict (Spark's cold-start drop)."""
    rows = holdout.test_item >= 0
    if factors is not None:
        u_rows = _index_unsorted(factors.user_ids, holdout.users)[holdout.test_user]
        v_rows = _index_unsorted(factors.item_ids, holdout.items)[holdout.test_item]
        rows &= (u_rows >= 0) & (v_rows >= 0)
    actual = holdout.test_rating[rows]
    if len(actual) == 0:
        return {}
    predictions = {
        "popularity": holdout.item_means[holdout.test_item[rows]],
        "random": rng.uniform(RATING_MIN, RATING_MAX, size=len(actual)),
    }
    if factors is not None and not factors.implicit:
        u = factors.user_factors[u_rows[rows]].astype(np.float64)
        v = factors.item_factors[v_rows[rows]].astype(np.float64)
        # Clipped like predict_pair: the error of what serving would answer.
        predictions["als"] = np.einsum("ij,ij->i", u, v).clip(RATING_MIN, RATING_MAX)
    return {name: {"rmse": rmse(p, actual), "mae": mae(p, actual),
                   "rated_pairs": float(len(actual))} for name, p in predictions.items()}


def _index_unsorted(ids: np.ndarray, query: np.ndarray) -> np.ndarray:
    order = np.argsort(ids)
    pos = _index(ids[order], query)
    return np.where(pos >= 0, order[pos.clip(0)], -1)


# --- Spark side -------------------------------------------------------------------------------


def collect_holdout(train: DataFrame, test: DataFrame, max_users: int = 10_000,
                    seed: int = 42) -> HoldOut:
    """Collect the evaluation arrays from Spark: item stats of ``train`` and the train/test
    rows of at most ``max_users`` test users (a seeded sample when there are more)."""
    from pyspark.sql import functions as F

    stats = train.groupBy("movie_id").agg(F.count("*").alias("n"),
                                          F.sum("rating").alias("s")).toPandas()
    test_users = np.sort(test.select("user_id").distinct().toPandas()["user_id"].to_numpy())
    if len(test_users) > max_users:
        test_users = np.sort(np.random.default_rng(seed).choice(test_users, max_users, False))
    spark = train.sparkSession
    chosen = F.broadcast(spark.createDataFrame([(int(u),) for u in test_users], "user_id int"))
    seen = train.join(chosen, "user_id").select("user_id", "movie_id").toPandas()
    held = test.join(chosen, "user_id").select("user_id", "movie_id", "rating").toPandas()
    return HoldOut.build(
        items=stats["movie_id"].to_numpy(np.int64), counts=stats["n"].to_numpy(np.int64),
        sums=stats["s"].to_numpy(np.float64), users=test_users.astype(np.int64),
        seen=(seen["user_id"].to_numpy(np.int64), seen["movie_id"].to_numpy(np.int64)),
        test=(held["user_id"].to_numpy(np.int64), held["movie_id"].to_numpy(np.int64),
              held["rating"].to_numpy(np.float64)),
    )
