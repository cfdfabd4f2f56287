"""Held-out evaluation of a factor model and of the baselines it has to beat, in numpy.

Ranking needs every user's score for every movie, which Spark does slowly through a cross
join; on the driver it is one matrix product per batch of users. The held-out data is
collected for at most ``max_users`` sampled test users, so memory stays bounded on big data
while MovieLens small and 1M are evaluated on every user.

Conventions (recorded in each version's metadata):

* movies the user rated in the training split are never recommended ("seen excluded");
* a held-out movie is relevant when its rating is >= ``relevance_threshold`` and it occurs
  in the training split (no model, baselines included, can recommend a movie it never saw);
* ranking metrics average over users with a trained factor and at least one relevant movie;
  baselines are scored on exactly the same users and rows;
* RMSE/MAE cover every held-out row, answered as serving answers them: a user or a movie the
  rating model has no factor for gets its fallback row (the biases, ``model.artifacts``), and
  predictions are clipped to the rating scale. ``rmse_scorable``/``mae_scorable`` beside them
  cover only rows whose user and movie both have factors (Spark's cold-start "drop"). They
  are left out for the ranking model, whose scores are not ratings. The popularity baseline
  predicts the movie's (shrunk) mean rating (the global mean for an unseen movie), random a
  uniform rating;
* coverage = distinct recommended movies / movies in the training split;
* ``rec_median_count`` / ``catalogue_median_count``: the median training rating count of the
  recommended movies against the catalogue's, and ``rec_mean_rating`` their mean training
  rating: a model that pushes obscure or poorly rated movies shows it there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from recommender.contracts import RATING_MAX, RATING_MIN
from recommender.model.registry import higher_is_better  # noqa: F401  (re-exported)

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

BATCH_CELLS = 1 << 24  # scores computed per batch: 16M floats = 64 MB


def metric_names(k: int) -> list[str]:
    return [f"precision_at_{k}", f"recall_at_{k}", f"ndcg_at_{k}", f"map_at_{k}", "coverage"]


# --- pure metrics -----------------------------------------------------------------------------


def rmse(predicted: np.ndarray, actual: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(predicted) - np.asarray(actual)) ** 2)))


def mae(predicted: np.ndarray, actual: np.ndarray) -> float:
    return float(np.mean(np.abs(np.asarray(predicted) - np.asarray(actual))))


def ranking_metrics(recommended: Sequence[np.ndarray] | np.ndarray,
                    relevant: Sequence[np.ndarray], k: int,
                    catalogue_size: int) -> dict[str, float]:
    """Precision, recall, NDCG and MAP at ``k`` (binary relevance) averaged over users, and
    catalogue coverage. ``recommended[u]`` is ranked best first (a list of id arrays, or a
    matrix padded with -1); users without a relevant item must be filtered out by the caller
    (they have no defined recall or NDCG). Vectorised: one ``isin`` for all users."""
    if len(recommended) != len(relevant):
        raise ValueError("recommended and relevant must hold the same users")
    n = len(relevant)
    recs = _padded(recommended, k)
    n_rel = np.fromiter((len(r) for r in relevant), dtype=np.int64, count=n)
    hits = np.zeros((n, k), dtype=bool)
    if n and n_rel.sum():
        # one key per (user, movie): hits are the recommended keys among the relevant keys
        width = int(max(recs.max(initial=0), max((int(r.max()) for r in relevant if len(r)),
                                                   default=0))) + 2
        users = np.arange(n, dtype=np.int64)
        rel_keys = np.repeat(users, n_rel) * width + np.concatenate(relevant).astype(np.int64)
        rec_keys = users[:, None] * width + recs
        hits = np.isin(rec_keys, rel_keys) & (recs >= 0)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = np.concatenate([[0.0], np.cumsum(discounts)])[np.minimum(n_rel, k)]
    n_hits = hits.sum(axis=1)
    precision_at = np.cumsum(hits, axis=1) / np.arange(1, k + 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = np.where(n_rel > 0, n_hits / np.maximum(n_rel, 1), 0.0)
        ndcg = np.where(ideal > 0, (hits @ discounts) / np.where(ideal > 0, ideal, 1), 0.0)
        ap = np.where(n_rel > 0, (precision_at * hits).sum(axis=1)
                      / np.maximum(np.minimum(n_rel, k), 1), 0.0)
    shown = np.unique(recs[recs >= 0])
    mean = (lambda v: float(v.mean())) if n else (lambda v: 0.0)
    return {
        f"precision_at_{k}": mean(n_hits / k),
        f"recall_at_{k}": mean(recall),
        f"ndcg_at_{k}": mean(ndcg),
        f"map_at_{k}": mean(ap),
        "coverage": len(shown) / catalogue_size if catalogue_size else 0.0,
    }


def _padded(recommended: Sequence[np.ndarray] | np.ndarray, k: int) -> np.ndarray:
    """Recommendations as an (n, k) int64 matrix, -1 where a user got fewer than k."""
    if isinstance(recommended, np.ndarray) and recommended.ndim == 2:
        out = np.full((len(recommended), k), -1, dtype=np.int64)
        width = min(k, recommended.shape[1])
        out[:, :width] = recommended[:, :width]
        return out
    out = np.full((len(recommended), k), -1, dtype=np.int64)
    for i, recs in enumerate(recommended):
        recs = np.asarray(recs, dtype=np.int64)[:k]
        out[i, :len(recs)] = recs
    return out


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
    raw_means: np.ndarray
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
        raw = np.where(counts > 0, sums / np.maximum(counts, 1), global_mean)
        return cls(items=items, counts=counts.astype(np.int64), item_means=means,
                   raw_means=raw, global_mean=global_mean, users=users,
                   seen_user=su[keep], seen_item=si[keep],
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
    """A trained model reduced to what evaluation needs. A rating model carries the rows
    serving answers with for a user or a movie it has no factor for."""

    user_ids: np.ndarray
    user_factors: np.ndarray
    item_ids: np.ndarray
    item_factors: np.ndarray
    implicit: bool
    fallback_user: np.ndarray | None = None
    fallback_item: np.ndarray | None = None


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
            top = top_k_rows(scores, k)
            top[~np.isfinite(np.take_along_axis(scores, top, axis=1))] = -1  # excluded only
            recs[name].append(top)
    # metrics on catalogue columns (ids are not needed to count hits)
    rel_cols = [relevant[u] for u in users]
    out: dict[str, dict[str, float]] = {name: {"users": float(len(users))} for name in recs}
    if len(users):
        for name, parts in recs.items():
            top = np.vstack(parts)
            out[name].update(ranking_metrics(top, rel_cols, k, n_items))
            out[name].update(_recommended_profile(holdout, top))
    for name, errors in _rating_errors(holdout, factors, rng).items():
        out[name].update(errors)
    return out


def _recommended_profile(holdout: HoldOut, top: np.ndarray) -> dict[str, float]:
    """How popular and how well rated the recommended movies are in the training data."""
    shown = top[top >= 0]
    if len(shown) == 0:
        return {}
    return {"rec_median_count": float(np.median(holdout.counts[shown])),
            "catalogue_median_count": float(np.median(holdout.counts)),
            "rec_mean_rating": float(holdout.raw_means[shown].mean())}


def _rating_errors(holdout: HoldOut, factors: Factors | None,
                   rng: np.random.Generator) -> dict[str, dict[str, float]]:
    """RMSE/MAE over every held-out row (with the serving fallbacks), and over the rows
    every scored model has factors for (``_scorable``)."""
    actual = holdout.test_rating
    if len(actual) == 0:
        return {}
    known_item = holdout.test_item >= 0
    scorable = known_item.copy()
    item_col = holdout.test_item.clip(0)
    predictions = {
        "popularity": np.where(known_item, holdout.item_means[item_col], holdout.global_mean),
        "random": rng.uniform(RATING_MIN, RATING_MAX, size=len(actual)),
    }
    if factors is not None:
        u_rows = _index_unsorted(factors.user_ids, holdout.users)[holdout.test_user]
        v_rows = np.where(known_item,
                          _index_unsorted(factors.item_ids, holdout.items)[item_col], -1)
        scorable &= (u_rows >= 0) & (v_rows >= 0)
        if not factors.implicit:
            predictions["als"] = _predicted(factors, u_rows, v_rows)
    out = {}
    for name, p in predictions.items():
        if name == "als" and factors is not None and factors.fallback_user is None:
            p, a = p[scorable], actual[scorable]  # no fallback: only what it can score
        else:
            a = actual
        out[name] = {"rmse": rmse(p, a), "mae": mae(p, a), "rated_pairs": float(len(a))}
        if scorable.any():
            sp, sa = predictions[name][scorable], actual[scorable]
            out[name].update(rmse_scorable=rmse(sp, sa), mae_scorable=mae(sp, sa),
                             scorable_pairs=float(scorable.sum()))
    return out


def _predicted(factors: Factors, u_rows: np.ndarray, v_rows: np.ndarray) -> np.ndarray:
    """What serving answers for each (user row, item row), -1 = no factor: the fallback
    row when the model has one, clipped like ``model.foldin.predicted_ratings``."""
    width = factors.item_factors.shape[1]
    fallback_u = factors.fallback_user if factors.fallback_user is not None \
        else np.zeros(width, np.float32)
    fallback_i = factors.fallback_item if factors.fallback_item is not None \
        else np.zeros(width, np.float32)
    u = np.where((u_rows >= 0)[:, None], factors.user_factors[u_rows.clip(0)], fallback_u)
    v = np.where((v_rows >= 0)[:, None], factors.item_factors[v_rows.clip(0)], fallback_i)
    return np.einsum("ij,ij->i", u.astype(np.float64), v.astype(np.float64)).clip(
        RATING_MIN, RATING_MAX)


def _index_unsorted(ids: np.ndarray, query: np.ndarray) -> np.ndarray:
    order = np.argsort(ids)
    pos = _index(ids[order], query)
    return np.where(pos >= 0, order[pos.clip(0)], -1)


# --- Spark side -------------------------------------------------------------------------------


def collect_holdout(train: DataFrame, test: DataFrame, max_users: int = 10_000,
                    seed: int = 42, total_users: int | None = None) -> HoldOut:
    """Collect the evaluation arrays from Spark: item stats of ``train`` and the train/test
    rows of at most ``max_users`` test users (a seeded sample when there are more).

    When the data has at most ``max_users`` users (``total_users``, if the caller knows it)
    both splits are collected whole and the item stats computed on the driver: two Spark jobs
    instead of five, which is most of the evaluation time on small data.
    """
    from pyspark.sql import functions as F

    if total_users is not None and total_users <= max_users:
        seen = train.select("user_id", "movie_id", "rating").toPandas()
        held = test.select("user_id", "movie_id", "rating").toPandas()
        items, inverse = np.unique(seen["movie_id"].to_numpy(np.int64), return_inverse=True)
        counts = np.bincount(inverse, minlength=len(items))
        sums = np.bincount(inverse, seen["rating"].to_numpy(np.float64), minlength=len(items))
        test_users = np.unique(held["user_id"].to_numpy(np.int64))
    else:
        stats = train.groupBy("movie_id").agg(F.count("*").alias("n"),
                                              F.sum("rating").alias("s")).toPandas()
        items = stats["movie_id"].to_numpy(np.int64)
        counts, sums = stats["n"].to_numpy(np.int64), stats["s"].to_numpy(np.float64)
        test_users = np.sort(test.select("user_id").distinct().toPandas()["user_id"]
                             .to_numpy(np.int64))
        if len(test_users) > max_users:
            test_users = np.sort(np.random.default_rng(seed).choice(test_users, max_users,
                                                                    replace=False))
            chosen = F.broadcast(train.sparkSession.createDataFrame(
                [(int(u),) for u in test_users], "user_id int"))
            train, test = train.join(chosen, "user_id"), test.join(chosen, "user_id")
        seen = train.select("user_id", "movie_id").toPandas()
        held = test.select("user_id", "movie_id", "rating").toPandas()
    return HoldOut.build(
        items=items, counts=counts, sums=sums, users=test_users,
        seen=(seen["user_id"].to_numpy(np.int64), seen["movie_id"].to_numpy(np.int64)),
        test=(held["user_id"].to_numpy(np.int64), held["movie_id"].to_numpy(np.int64),
              held["rating"].to_numpy(np.float64)),
    )
