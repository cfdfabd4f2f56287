"""The portable half of a model version: two factor models as ``.npy`` plus ``metadata.json``.

A version holds two Spark ML ALS models trained together on the same ratings and split:

* the **ranking** model, implicit ALS with confidence weighting (Hu, Koren, Volinsky 2008),
  orders every top-k list (predictor top-k, ``/recommendations``, the session feed, similar
  movies, the kNN index, fold-in of new users);
* the **rating** model, explicit ALS on the residuals of regularised global, user and item
  biases, answers every predicted rating (pair requests, the stars on top-k rows).

Serving (the streaming predictor, the HTTP API) needs the factors, not Spark: loading them
with ``np.load(allow_pickle=False)`` takes milliseconds, runs without a JVM and cannot execute
code hidden in a file. The Spark ``ALSModel`` of each is saved beside them for Spark jobs.

Layout of ``<models_dir>/<version>/`` (format 2)::

    metadata.json               version, params of both models, data, metrics, checksums
    item_ids.npy                int64 [n_items]   movie ids, the row order of every item matrix
    item_counts.npy             int64 [n_items]   training ratings per item (popularity)
    user_ids.npy                int64 [n_users]
    user_counts.npy             int64 [n_users]   ratings per user the models were fitted on
                                                  (optional: the speed layer's reference)
    ranking_item_factors.npy    float32 [n_items, rank]
    ranking_user_factors.npy    float32 [n_users, rank]
    rating_item_factors.npy     float32 [n_items, rank + 3]   [y_i, 1, b_i, rare_i]
    rating_user_factors.npy     float32 [n_users, rank + 3]   [x_u, mu + b_u, 1, o_u]
    ranking_als/, rating_als/   pyspark.ml.recommendation.ALSModel

The rating model keeps its biases as three extra columns, so ``item_factors @ user_vector``
is ``mu + b_u + b_i + o_u x rare_i + x_u . y_i``, the predicted rating (``o_u``: the user's
own offset on rare movies, ``rare_i`` 1 for a movie rated at most ``new_movie_max_ratings``
times in training), and the fallbacks serving needs are rows too: a user with no signal is
``[0, mu, 1, 0]`` (``mu + b_i``), a movie the model never saw is a rare one,
``[0, 1, b_new, 1]`` (``mu + b_u + b_new + o_u``, ``b_new`` from the params). Versions
trained before ``o_u`` was kept have two extra columns (``[.., mu + b_u, 1]`` against
``[.., 1, b_i]``) and load as they are (``extra_columns`` in the rating params says which).
Top-k lists are ordered by
``ordering_items`` (the ranking factors with the rating model's mixed in, ``rating_weight``).
Format 1 (one model per version) is refused with what to do.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np

from recommender.errors import ModelError

FORMAT_VERSION = 2
METADATA_FILE = "metadata.json"
KINDS = ("ranking", "rating")
Kind = Literal["ranking", "rating"]
RATING_EXTRA_COLUMNS = 3  # [.., mu + b_u, 1, o_u] against [.., 1, b_i, rare_i]
EARLIER_RATING_EXTRA_COLUMNS = 2  # versions trained before o_u: [.., mu + b_u, 1]
ID_FILES = ("item_ids", "item_counts", "user_ids")
ARRAY_FILES = (*ID_FILES, *(f"{kind}_{side}_factors" for kind in KINDS
                            for side in ("item", "user")))
OPTIONAL_FILES = ("user_counts",)  # versions written before the speed layer lack it


def mixed_items(ranking: np.ndarray, rating: np.ndarray, weight: float) -> np.ndarray:
    """Movie rows ``[y_rank, weight x y_rate]``: against ``mixed_users`` their inner
    product is the ranking score + weight x the predicted rating, the order of every top-k
    list (training's evaluation and serving alike). The ranking rows alone when ``weight``
    is 0."""
    if weight == 0:
        return ranking
    return np.hstack([ranking, weight * rating]).astype(np.float32)


def without_rare_offsets(rating_items: np.ndarray) -> np.ndarray:
    """Rating model movie rows with ``rare_i`` zeroed, for the order of a list: a rare
    movie's stars carry the user's offset ``o_u``, but its place in a list does not, or
    every obscure movie would rise for a user who rates obscure movies high."""
    rows = np.array(rating_items, np.float32, copy=True)
    rows[:, -1] = 0.0
    return rows


def mixed_users(ranking: np.ndarray, rating: np.ndarray, weight: float) -> np.ndarray:
    """User rows (or one user's vector) ``[x_rank, x_rate]`` against ``mixed_items``."""
    if weight == 0:
        return ranking
    return np.hstack([ranking, rating]).astype(np.float32)


def spark_model_dir(kind: Kind) -> str:
    """Where a version keeps the Spark ``ALSModel`` of one of its two models."""
    return f"{kind}_als"


@dataclass(frozen=True, eq=False)
class FactorModel:
    """One of a version's two ALS models: factor rows aligned with the version's ids."""

    kind: Kind
    item_factors: np.ndarray
    user_factors: np.ndarray
    params: dict[str, Any]

    @property
    def extra_columns(self) -> int:
        """The bias columns after the latent ones (none in the ranking model)."""
        if self.kind != "rating":
            return 0
        return int(self.params.get("extra_columns", EARLIER_RATING_EXTRA_COLUMNS))

    @property
    def rank(self) -> int:
        """Latent dimensions (the ALS ``rank``), bias columns not counted."""
        return self.item_factors.shape[1] - self.extra_columns

    @property
    def latent_item_factors(self) -> np.ndarray:
        """Item factors without the bias columns: taste, for similarity and fold-in."""
        return self.item_factors[:, :self.item_factors.shape[1] - self.extra_columns]

    @property
    def latent_user_factors(self) -> np.ndarray:
        return self.user_factors[:, :self.user_factors.shape[1] - self.extra_columns]

    @property
    def global_mean(self) -> float:
        return float(self.params.get("global_mean", 0.0))

    @cached_property
    def fallback_user(self) -> np.ndarray:
        """The vector of a user with no signal: the rating model answers ``mu + b_i``."""
        vec = np.zeros(self.item_factors.shape[1], np.float32)
        if self.kind == "rating":
            vec[self.rank:self.rank + 2] = (self.global_mean, 1.0)
        return vec

    @cached_property
    def fallback_item(self) -> np.ndarray:
        """The row of a movie the model never saw: the rating model answers
        ``mu + b_u + b_new + o_u``, a rare movie: ``b_new`` the bias to expect of one, ``o_u``
        the user's offset on them (``train.als``; versions trained before them lack ``o_u``,
        or both)."""
        row = np.zeros(self.item_factors.shape[1], np.float32)
        if self.kind == "rating":
            row[self.rank:self.rank + 2] = (1.0, float(self.params.get("new_movie_bias", 0.0)))
            row[self.rank + 2:] = 1.0  # rare: o_u's column, where the version has it
        return row

    @property
    def item_bias_column(self) -> int:
        """Where the rating model's item rows keep ``b_i``."""
        return self.rank + 1

    @property
    def has_rare_movie_offsets(self) -> bool:
        """Whether user vectors carry ``o_u``, the user's offset on rare movies."""
        return self.extra_columns > EARLIER_RATING_EXTRA_COLUMNS

    @cached_property
    def gramian(self) -> np.ndarray:
        """``YᵀY`` over all items (float64): the implicit fold-in's constant term, computed once."""
        y = self.latent_item_factors.astype(np.float64)
        return y.T @ y


@dataclass(frozen=True, eq=False)
class ModelArtifacts:
    """One model version in memory: the shared id arrays and its two factor models.

    Row ``i`` of every item matrix belongs to movie ``item_ids[i]`` (same for users): both
    models were fitted on the same training ratings, so they know the same users and movies.
    """

    version: str
    item_ids: np.ndarray
    user_ids: np.ndarray
    item_counts: np.ndarray
    ranking: FactorModel
    rating: FactorModel
    metadata: dict[str, Any] = field(default_factory=dict)
    user_counts: np.ndarray | None = None

    def __post_init__(self) -> None:
        n_items, n_users = len(self.item_ids), len(self.user_ids)
        if len(self.item_counts) != n_items:
            raise ModelError(f"model {self.version}: item_counts length does not match items")
        if self.user_counts is not None and len(self.user_counts) != n_users:
            raise ModelError(f"model {self.version}: user_counts length does not match users")
        for model in (self.ranking, self.rating):
            items, users = model.item_factors, model.user_factors
            if items.ndim != 2 or items.shape[0] != n_items:
                raise ModelError(f"model {self.version}: {model.kind} item factors shape "
                                 f"{items.shape} does not match {n_items} item ids")
            if users.ndim != 2 or users.shape[0] != n_users:
                raise ModelError(f"model {self.version}: {model.kind} user factors shape "
                                 f"{users.shape} does not match {n_users} user ids")
            if users.shape[1] != items.shape[1]:
                raise ModelError(f"model {self.version}: {model.kind} user and item factors "
                                 "differ in rank")
            if items.shape[1] <= model.extra_columns:
                raise ModelError(f"model {self.version}: {model.kind} factors have no latent "
                                 "columns")

    @classmethod
    def popularity_only(cls, item_ids: np.ndarray, item_counts: np.ndarray) -> ModelArtifacts:
        """A factorless stand-in version (``popular``) from rating counts: what the predictor
        serves with ``--allow-no-model`` before the first model is trained."""
        def empty(kind: Kind) -> FactorModel:
            width = 1 + (RATING_EXTRA_COLUMNS if kind == "rating" else 0)
            params = {"extra_columns": RATING_EXTRA_COLUMNS} if kind == "rating" else {}
            return FactorModel(kind, np.zeros((len(item_ids), width), np.float32),
                               np.zeros((0, width), np.float32), params)
        return cls("popular", item_ids, np.zeros(0, np.int64), item_counts,
                   empty("ranking"), empty("rating"))

    @property
    def params(self) -> dict[str, dict[str, Any]]:
        return {"ranking": self.ranking.params, "rating": self.rating.params}

    @property
    def rating_weight(self) -> float:
        """How much the rating model's prediction moves a movie up a top-k list (0 in
        versions trained before it was kept: the ranking model alone)."""
        return float(self.ranking.params.get("rating_weight", 0.0))

    @cached_property
    def ordering_items(self) -> np.ndarray:
        """Movie rows whose inner product with ``ordering_vector`` orders every top-k list
        (predictor, API, kNN index): ``[y_rank, rating_weight x y_rate]``, so the score is
        the ranking score + rating_weight x the predicted rating (``train.als.ordering``)."""
        rating = self.rating.item_factors
        if self.rating.has_rare_movie_offsets:
            rating = without_rare_offsets(rating)
        return mixed_items(self.ranking.item_factors, rating, self.rating_weight)

    def ordering_vector(self, ranking: np.ndarray, rating: np.ndarray) -> np.ndarray:
        """A user's query against ``ordering_items``, from their two vectors."""
        return mixed_users(np.asarray(ranking, np.float32), np.asarray(rating, np.float32),
                              self.rating_weight)

    @cached_property
    def item_index(self) -> dict[int, int]:
        """movie id -> row of every item matrix."""
        return {int(m): i for i, m in enumerate(self.item_ids)}

    @cached_property
    def sorted_items(self) -> tuple[np.ndarray, np.ndarray]:
        """(movie ids ascending, their rows): many ids map to rows in one ``searchsorted``."""
        order = np.argsort(self.item_ids, kind="stable")
        return self.item_ids[order].astype(np.int64), order

    def item_rows(self, movie_ids: Iterable[int] | np.ndarray) -> np.ndarray:
        """Rows of the given movies the model knows (unknown ids are dropped)."""
        return self.item_positions(movie_ids)[0]

    def item_positions(self, movie_ids: Iterable[int] | np.ndarray,
                       ) -> tuple[np.ndarray, np.ndarray]:
        """(rows of the known movies, which of the given ids are known), in one vectorised
        ``searchsorted`` instead of a dictionary lookup per id."""
        ids = movie_ids.astype(np.int64, copy=False) if isinstance(movie_ids, np.ndarray) \
            else np.fromiter(movie_ids, dtype=np.int64)
        sorted_ids, order = self.sorted_items
        if len(sorted_ids) == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(len(ids), dtype=bool)
        pos = np.searchsorted(sorted_ids, ids).clip(0, len(sorted_ids) - 1)
        known = sorted_ids[pos] == ids
        return order[pos[known]], known

    @cached_property
    def user_index(self) -> dict[int, int]:
        """user id -> row of both user matrices."""
        return {int(u): i for i, u in enumerate(self.user_ids)}

    @cached_property
    def popularity_order(self) -> np.ndarray:
        """Item rows by descending training count: the cold-start fallback ranking."""
        return np.argsort(-self.item_counts, kind="stable")

    def user_row(self, user_id: int) -> int | None:
        """The row of a user the model was trained on, else None (fold in or fall back)."""
        return self.user_index.get(int(user_id))

    def fitted_on_all_of(self, row: int, history: Mapping[int, float]) -> bool:
        """Whether the trained vectors of user ``row`` already reflect ``history`` (their
        current ratings): as many ratings as the models were fitted on. A version that does
        not record its counts (written before the speed layer) says yes."""
        return self.user_counts is None or len(history) == int(self.user_counts[row])

    # --- persistence ----------------------------------------------------------------------

    def save(self, version_dir: Path, metadata: dict[str, Any]) -> dict[str, Any]:
        """Write the arrays and ``metadata.json`` (with file checksums) into ``version_dir``.

        Returns the metadata as written (``params`` keyed by model kind). The caller owns
        atomicity: the registry hands out a temporary directory and renames it only after
        this returns.
        """
        version_dir.mkdir(parents=True, exist_ok=True)
        arrays = {"item_ids": self.item_ids.astype(np.int64),
                  "item_counts": self.item_counts.astype(np.int64),
                  "user_ids": self.user_ids.astype(np.int64)}
        if self.user_counts is not None:
            arrays["user_counts"] = self.user_counts.astype(np.int64)
        for model in (self.ranking, self.rating):
            arrays[f"{model.kind}_item_factors"] = model.item_factors.astype(np.float32)
            arrays[f"{model.kind}_user_factors"] = model.user_factors.astype(np.float32)
        files: dict[str, dict[str, Any]] = {}
        for name, array in arrays.items():
            path = version_dir / f"{name}.npy"
            np.save(path, np.ascontiguousarray(array), allow_pickle=False)
            files[path.name] = {"sha256": _sha256(path), "bytes": path.stat().st_size,
                                "shape": list(array.shape), "dtype": str(array.dtype)}
        meta = {**metadata, "format": FORMAT_VERSION, "version": self.version,
                "params": self.params, "files": files}
        write_json(version_dir / METADATA_FILE, meta)
        return meta

    @classmethod
    def load(cls, version_dir: Path | str, verify: bool = True) -> ModelArtifacts:
        """Load a version directory without pickle; ``ModelError`` names what is wrong.

        ``verify`` checks each array against the sha256 recorded in metadata, which catches a
        truncated or overwritten file before it produces silently wrong recommendations.
        """
        version_dir = Path(version_dir)
        meta = read_metadata(version_dir)
        version = str(meta.get("version", version_dir.name))
        _require_format(meta, version)
        arrays: dict[str, np.ndarray] = {}
        recorded = meta.get("files", {})
        for name in (*ARRAY_FILES, *OPTIONAL_FILES):
            path = version_dir / f"{name}.npy"
            if name in OPTIONAL_FILES and path.name not in recorded:
                continue
            if not path.is_file():
                raise ModelError(f"model {version} is incomplete: {path} is missing")
            expected = recorded.get(path.name, {}).get("sha256")
            if verify and expected and _sha256(path) != expected:
                raise ModelError(f"model {version} is corrupt: checksum of {path} differs")
            try:
                arrays[name] = np.load(path, allow_pickle=False)
            except (ValueError, OSError, EOFError) as exc:
                raise ModelError(f"model {version} is corrupt: cannot read {path}: {exc}") from exc
        params = meta["params"]
        models = {kind: FactorModel(kind, arrays[f"{kind}_item_factors"],
                                    arrays[f"{kind}_user_factors"], dict(params.get(kind) or {}))
                  for kind in KINDS}
        return cls(version=version, item_ids=arrays["item_ids"], user_ids=arrays["user_ids"],
                   item_counts=arrays["item_counts"], metadata=meta,
                   user_counts=arrays.get("user_counts"), **models)


def _require_format(meta: dict[str, Any], version: str) -> None:
    """Refuse a version written before a version held two models, saying what to do."""
    found = meta.get("format", 1)
    if found != FORMAT_VERSION:
        raise ModelError(
            f"model {version} is in format {found} (one model per version, written by an "
            f"older recommender); this one serves format {FORMAT_VERSION}, a ranking and a "
            "rating model trained together. Train a new version with `recommender train`; "
            "the previous CURRENT keeps serving until one is promoted.")


def read_metadata(version_dir: Path) -> dict[str, Any]:
    """``metadata.json`` of a version, or ``ModelError`` naming the missing/corrupt version."""
    path = version_dir / METADATA_FILE
    if not version_dir.is_dir():
        raise ModelError(f"model version {version_dir.name!r} not found in {version_dir.parent}")
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelError(f"model {version_dir.name} is incomplete: {path} is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"model {version_dir.name} is corrupt: {path}: {exc}") from None
    if not isinstance(meta, dict) or "params" not in meta:
        raise ModelError(f"model {version_dir.name} is corrupt: {path} has no params")
    return meta


def write_json(path: Path, value: Any) -> None:
    """Write JSON through a temp file and ``os.replace`` so readers never see half a file."""
    import os

    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as fh:
        json.dump(value, fh, indent=2, sort_keys=True, default=str)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
