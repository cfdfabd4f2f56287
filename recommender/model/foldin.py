"""Serving-time math on a trained version, in pure numpy: no Spark, no retraining.

The ranking model orders every list; the rating model gives every predicted rating. A user
is a pair of vectors (``UserVectors``), one per model: the trained rows for a user the
models know, else a fold-in.

Fold-in solves the same regularised least squares problem ALS solves for every user in its
user half-step, with the item factors held fixed, so a folded-in vector is what the next
training run would give that user if the item factors did not move (Spark scales the
regularisation by the user's rating count, ALS-WR):

* ranking (implicit):  x = (YᵀY + Y_Iᵀ (C_I - I) Y_I + λ·n·I)⁻¹ Y_Iᵀ C_I p
  with confidence c = 1 + alpha·|r| and preference p = 1 for r > 0 (Hu, Koren, Volinsky 2008);
* rating (explicit on bias residuals): b_u = Σ(r - μ - b_i) / (λ_u + n), then the offset on
  rare movies o_u = Σ_R(r - μ - b_u - b_i) / (λ_u + |R|) over R, the rated movies with
  ``rare_i`` = 1 or unknown to the model (``b_i`` = ``b_new`` for those), then
  x = (Y_Iᵀ Y_I + λ·n·I)⁻¹ Y_Iᵀ (r - μ - b_u - b_i - o_u·rare_i), as training does: the
  vector ``[x, μ + b_u, 1, o_u]`` (``[x, μ + b_u, 1]`` for versions trained before ``o_u``).

``I`` is the set of rated movies the model knows. A solve is rank x rank, so a fold-in plus a
top-k over ~10k movies takes well under a millisecond.

Example::

    artifacts = ModelArtifacts.load(models_dir / "20240101T000000Z")
    vector = fold_in(artifacts, {1: 5.0, 260: 4.5, 1196: 5.0})
    recommend(artifacts, vector, k=10, exclude={1, 260, 1196})    # [(movie_id, score), ...]
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from recommender.contracts import RATING_MAX, RATING_MIN, Strategy
from recommender.model.artifacts import FactorModel, ModelArtifacts


@dataclass(frozen=True)
class UserVectors:
    """A user as the two models see them: ``ranking`` orders, ``rating`` predicts stars."""

    ranking: np.ndarray
    rating: np.ndarray


@dataclass(frozen=True)
class Recommendations:
    """Top-k for one user and how it was made (``als``, ``fold-in`` or ``popular``).

    ``items`` are (movie id, ranking score); ``ratings`` the rating model's predicted rating
    of each, in the same order."""

    strategy: Strategy
    items: list[tuple[int, float]]
    ratings: list[float]


def trained_vectors(artifacts: ModelArtifacts, user_id: int) -> UserVectors | None:
    """The trained vectors of a user the models know, else None (fold in or fall back)."""
    row = artifacts.user_row(user_id)
    if row is None:
        return None
    return UserVectors(artifacts.ranking.user_factors[row], artifacts.rating.user_factors[row])


def fold_in(artifacts: ModelArtifacts, ratings: Mapping[int, float]) -> UserVectors | None:
    """Both vectors of a user from ``{movie_id: rating}``; None if no movie is known.

    Movies the model does not know are ignored: they carry no factor to learn from.
    """
    rows, values = _known(artifacts, ratings)
    if len(rows) == 0:
        return None
    return UserVectors(_fold_in_ranking(artifacts.ranking, rows, values),
                       _fold_in_rating(artifacts.rating, rows, values,
                                       _unknown_ratings(artifacts, ratings)))


def _fold_in_ranking(model: FactorModel, rows: np.ndarray, values: np.ndarray) -> np.ndarray:
    y = model.latent_item_factors[rows].astype(np.float64)
    c1 = float(model.params.get("alpha", 1.0)) * np.abs(values)
    positive = values > 0
    a = model.gramian + (y * c1[:, None]).T @ y
    b = y.T @ np.where(positive, 1.0 + c1, 0.0)
    return _solve(a, b, float(model.params.get("reg_param", 0.1)), int(positive.sum()))


def _fold_in_rating(model: FactorModel, rows: np.ndarray, values: np.ndarray,
                    unknown: np.ndarray) -> np.ndarray:
    """The rating vector from the known movies' ``rows`` and ``values``; ``unknown`` are the
    user's ratings of movies the model never saw, which only tell ``o_u``."""
    mean = model.global_mean
    item_bias = model.item_factors[rows, model.item_bias_column].astype(np.float64)
    user_bias = float((values - mean - item_bias).sum()
                      / (float(model.params.get("user_bias_reg", 5.0)) + len(values)))
    offset, rare = 0.0, np.zeros(len(rows))
    if model.has_rare_movie_offsets:
        rare = model.item_factors[rows, model.item_bias_column + 1].astype(np.float64)
        offset = _rare_movie_offset(model, values[rare > 0] - item_bias[rare > 0], unknown,
                                    mean + user_bias)
    y = model.latent_item_factors[rows].astype(np.float64)
    residual = values - mean - user_bias - item_bias - offset * rare
    x = _solve(y.T @ y, y.T @ residual, float(model.params.get("reg_param", 0.1)), len(rows))
    extra = [mean + user_bias, 1.0] + ([offset] if model.has_rare_movie_offsets else [])
    return np.concatenate([x, np.array(extra, np.float32)])


def _rare_movie_offset(model: FactorModel, rare_known: np.ndarray, unknown: np.ndarray,
                       baseline: float) -> float:
    """``o_u`` as training computes it (``train.als``): the mean residual from ``mu + b_u +
    b_i`` of the user's ratings of rare movies (``rare_known``: rating - b_i) and of movies
    the model never saw (``b_i`` = ``b_new``), shrunk by ``user_bias_reg``."""
    beyond = np.concatenate([rare_known, unknown - float(model.params.get("new_movie_bias",
                                                                          0.0))]) - baseline
    if len(beyond) == 0:
        return 0.0
    return float(beyond.sum() / (float(model.params.get("user_bias_reg", 5.0)) + len(beyond)))


def _unknown_ratings(artifacts: ModelArtifacts, ratings: Mapping[int, float]) -> np.ndarray:
    """The user's ratings of movies the model never saw."""
    ids = np.fromiter(ratings, np.int64, len(ratings))
    _, known = artifacts.item_positions(ids)
    return np.fromiter(ratings.values(), np.float64, len(ratings))[~known]


def _solve(a: np.ndarray, b: np.ndarray, reg: float, n: int) -> np.ndarray:
    a[np.diag_indices_from(a)] += reg * max(n, 1)
    try:
        x = np.linalg.solve(a, b)
    except np.linalg.LinAlgError:  # singular only when reg_param is 0 and data is degenerate
        x = np.linalg.lstsq(a, b, rcond=None)[0]
    return x.astype(np.float32)


def recommend(artifacts: ModelArtifacts, vectors: UserVectors, k: int = 10,
              exclude: Iterable[int] = ()) -> list[tuple[int, float]]:
    """The ``k`` movies ordered highest (the ranking score with the rating model's
    prediction mixed in, ``masked_scores``), best first, skipping ``exclude``.

    Ties break by movie order in the model, so results are deterministic.
    """
    return best_of(artifacts, masked_scores(artifacts, vectors, exclude), k)


def masked_scores(artifacts: ModelArtifacts, vectors: UserVectors,
                  exclude: Iterable[int] = ()) -> np.ndarray:
    """Every movie's ordering score (``ModelArtifacts.ordering_items``), ``-inf`` for the
    excluded ones: computed once per user, it serves all of that user's top-k requests of a
    batch."""
    scores = (artifacts.ordering_items @ ordering_vector(artifacts, vectors)).astype(np.float64)
    scores[artifacts.item_rows(exclude)] = -np.inf
    return scores


def ordering_vector(artifacts: ModelArtifacts, vectors: UserVectors) -> np.ndarray:
    """The user's query against ``artifacts.ordering_items`` (and the kNN index)."""
    return artifacts.ordering_vector(vectors.ranking, vectors.rating)


def best_of(artifacts: ModelArtifacts, scores: np.ndarray, k: int) -> list[tuple[int, float]]:
    """The ``k`` best finite scores as (movie id, score), best first; ties by model order."""
    k = max(0, min(k, int(np.isfinite(scores).sum())))
    if k == 0:
        return []
    top = np.argpartition(-scores, k - 1)[:k]
    top = top[np.lexsort((top, -scores[top]))]
    return [(int(artifacts.item_ids[i]), float(scores[i])) for i in top]


def recommend_popular(artifacts: ModelArtifacts, k: int = 10,
                      exclude: Iterable[int] = ()) -> list[tuple[int, float]]:
    """The most-rated movies of the training data: the fallback for a user with no signal.

    The score is the movie's training rating count.
    """
    excluded = {int(m) for m in exclude}
    out: list[tuple[int, float]] = []
    for row in artifacts.popularity_order:
        movie = int(artifacts.item_ids[row])
        if movie not in excluded:
            out.append((movie, float(artifacts.item_counts[row])))
            if len(out) == k:
                break
    return out


def user_vectors(artifacts: ModelArtifacts, user_id: int | None,
                 ratings: Mapping[int, float]) -> tuple[UserVectors | None, Strategy]:
    """The serving strategy for a user with current ratings ``ratings``: trained vectors
    when the models were fitted on all of them (``als``); else, the speed layer, vectors
    folded in from the whole current history (``fold-in``: a user the models do not know,
    or a known user with ratings they were not fitted on); else none (``popular``)."""
    trained = trained_vectors(artifacts, user_id) if user_id is not None else None
    if trained is not None and (not ratings or artifacts.fitted_on_all_of(
            artifacts.user_index[int(user_id)], ratings)):
        return trained, "als"
    vectors = fold_in(artifacts, ratings) if ratings else None
    if vectors is not None:
        return vectors, "fold-in"
    return (trained, "als") if trained is not None else (None, "popular")


def recommend_for_user(artifacts: ModelArtifacts, user_id: int | None, k: int = 10, *,
                       ratings: Mapping[int, float] | None = None,
                       exclude: Iterable[int] = ()) -> Recommendations:
    """The serving strategy in one call: trained vectors, else fold-in, else popularity.

    ``ratings`` are the user's ratings known to the caller (e.g. read from Cassandra); they
    are both the fold-in input and excluded from the result, as is ``exclude``.
    """
    rated = dict(ratings or {})
    excluded = set(rated) | {int(m) for m in exclude}
    vectors, strategy = user_vectors(artifacts, user_id, rated)
    items = (recommend(artifacts, vectors, k, excluded) if vectors is not None
             else recommend_popular(artifacts, k, excluded))
    stars = predicted_ratings(artifacts, vectors, [m for m, _ in items])
    return Recommendations(strategy, items, [float(r) for r in stars])


def predicted_ratings(artifacts: ModelArtifacts, vectors: UserVectors | None,
                      movie_ids: Iterable[int] | np.ndarray) -> np.ndarray:
    """The rating model's predicted ratings, clipped to the MovieLens scale, for any movies.

    Nothing is left unanswered, as evaluation assumes: a user without vectors gets
    ``mu + b_i``, a movie the model never saw ``mu + b_u + b_new`` (``mu + b_new`` for both).
    """
    model = artifacts.rating
    user = model.fallback_user if vectors is None else np.asarray(vectors.rating, np.float32)
    ids = np.fromiter((int(m) for m in movie_ids), np.int64) \
        if not isinstance(movie_ids, np.ndarray) else movie_ids.astype(np.int64)
    rows, known = artifacts.item_positions(ids)
    items = np.broadcast_to(model.fallback_item, (len(ids), len(user))).copy()
    items[known] = model.item_factors[rows]
    return (items @ user).astype(np.float64).clip(RATING_MIN, RATING_MAX)


def predict_pair(artifacts: ModelArtifacts, vectors: UserVectors | None,
                 movie_id: int) -> float:
    """The rating model's predicted rating of one movie (see ``predicted_ratings``)."""
    return float(predicted_ratings(artifacts, vectors, [movie_id])[0])


def similar_items(artifacts: ModelArtifacts, movie_id: int,
                  k: int = 10) -> list[tuple[int, float]]:
    """Movies whose ranking factors are closest by cosine ("people who liked this also
    liked")."""
    row = artifacts.item_index.get(int(movie_id))
    if row is None:
        return []
    factors = artifacts.ranking.latent_item_factors.astype(np.float64)
    norms = np.linalg.norm(factors, axis=1)
    norms[norms == 0] = 1.0
    scores = factors @ factors[row] / (norms * norms[row])
    scores[row] = -np.inf
    return best_of(artifacts, scores, k)


def _known(artifacts: ModelArtifacts,
           ratings: Mapping[int, float]) -> tuple[np.ndarray, np.ndarray]:
    """Rows and ratings of the rated movies the model knows (one vectorised lookup)."""
    rows, known = artifacts.item_positions(ratings.keys())
    values = np.fromiter(ratings.values(), dtype=np.float64, count=len(ratings))
    return rows, values[known]
