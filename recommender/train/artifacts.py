"""The portable half of a model version: factor matrices as ``.npy`` plus ``metadata.json``.

Serving (the streaming predictor, the HTTP API) needs the factors, not Spark: loading them
with ``np.load(allow_pickle=False)`` takes milliseconds, runs without a JVM and cannot execute
code hidden in a file. The Spark ``ALSModel`` saved beside them (``als/``) is for Spark jobs.

Layout of ``<models_dir>/<version>/``::

    metadata.json        version, params, data snapshot, metrics, file checksums
    item_ids.npy         int64 [n_items]        movie ids, row order of item_factors
    item_factors.npy     float32 [n_items, rank (+1)]   (+1: the bias column, see below)
    item_counts.npy      int64 [n_items]        training ratings per item (popularity fallback)
    user_ids.npy         int64 [n_users]
    user_factors.npy     float32 [n_users, rank (+1)]
    als/                 pyspark.ml.recommendation.ALSModel

In every mode ``item_factors @ user_vector`` is the model's score (explicit: the predicted
rating). A biased explicit model (``params["user_bias"]``) stores the user's rating level as
a last column: ``b_u`` in ``user_factors`` against a constant 1 in ``item_factors``. The Spark
model in ``als/`` was fitted on the residuals and predicts ``rating - b_u``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from recommender.errors import ModelError

FORMAT_VERSION = 1
METADATA_FILE = "metadata.json"
SPARK_MODEL_DIR = "als"
ARRAY_FILES = ("item_ids", "item_factors", "item_counts", "user_ids", "user_factors")


@dataclass(frozen=True, eq=False)
class ModelArtifacts:
    """One model version in memory: id arrays, factor matrices, params and metadata.

    Row ``i`` of ``item_factors`` belongs to movie ``item_ids[i]`` (same for users). The
    ``params`` dict holds the ALS hyper-parameters (``rank``, ``reg_param``, ``alpha``,
    ``implicit_prefs`` ...) that fold-in must reuse to stay consistent with training.
    """

    version: str
    item_ids: np.ndarray
    item_factors: np.ndarray
    user_ids: np.ndarray
    user_factors: np.ndarray
    item_counts: np.ndarray
    params: dict[str, Any]
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n_items, n_users = len(self.item_ids), len(self.user_ids)
        if self.item_factors.ndim != 2 or self.item_factors.shape[0] != n_items:
            raise ModelError(f"model {self.version}: item_factors shape "
                             f"{self.item_factors.shape} does not match {n_items} item ids")
        if self.user_factors.ndim != 2 or self.user_factors.shape[0] != n_users:
            raise ModelError(f"model {self.version}: user_factors shape "
                             f"{self.user_factors.shape} does not match {n_users} user ids")
        if self.user_factors.shape[1] != self.item_factors.shape[1]:
            raise ModelError(f"model {self.version}: user and item factors differ in rank")
        if len(self.item_counts) != n_items:
            raise ModelError(f"model {self.version}: item_counts length does not match items")

    @property
    def rank(self) -> int:
        """Length of a user vector (latent rank, plus one with the bias column)."""
        return int(self.item_factors.shape[1])

    @property
    def implicit(self) -> bool:
        return bool(self.params.get("implicit_prefs", False))

    @property
    def biased(self) -> bool:
        """Whether the last factor column is the user bias (b_u against a constant 1)."""
        return bool(self.params.get("user_bias", False)) and not self.implicit

    @property
    def latent_item_factors(self) -> np.ndarray:
        """Item factors without the bias column: for similarity, not for scoring."""
        return self.item_factors[:, :-1] if self.biased else self.item_factors

    @property
    def latent_user_factors(self) -> np.ndarray:
        """User factors without the bias column: taste, not rating level."""
        return self.user_factors[:, :-1] if self.biased else self.user_factors

    @cached_property
    def item_index(self) -> dict[int, int]:
        """movie id -> row of ``item_factors``."""
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
        """user id -> row of ``user_factors``."""
        return {int(u): i for i, u in enumerate(self.user_ids)}

    @cached_property
    def gramian(self) -> np.ndarray:
        """``YᵀY`` over all items (float64): the implicit fold-in's constant term, computed once."""
        y = self.latent_item_factors.astype(np.float64)
        return y.T @ y

    @cached_property
    def popularity_order(self) -> np.ndarray:
        """Item rows by descending training count: the cold-start fallback ranking."""
        return np.argsort(-self.item_counts, kind="stable")

    def user_vector(self, user_id: int) -> np.ndarray | None:
        """The trained factor vector of a known user, else None (fold in or fall back)."""
        row = self.user_index.get(int(user_id))
        return None if row is None else self.user_factors[row]

    # --- persistence ----------------------------------------------------------------------

    def save(self, version_dir: Path, metadata: dict[str, Any]) -> dict[str, Any]:
        """Write the arrays and ``metadata.json`` (with file checksums) into ``version_dir``.

        Returns the metadata as written. The caller owns atomicity: the registry hands out a
        temporary directory and renames it only after this returns.
        """
        version_dir.mkdir(parents=True, exist_ok=True)
        arrays = {
            "item_ids": self.item_ids.astype(np.int64),
            "item_factors": self.item_factors.astype(np.float32),
            "item_counts": self.item_counts.astype(np.int64),
            "user_ids": self.user_ids.astype(np.int64),
            "user_factors": self.user_factors.astype(np.float32),
        }
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
        arrays: dict[str, np.ndarray] = {}
        for name in ARRAY_FILES:
            path = version_dir / f"{name}.npy"
            if not path.is_file():
                raise ModelError(f"model {version} is incomplete: {path} is missing")
            expected = meta.get("files", {}).get(path.name, {}).get("sha256")
            if verify and expected and _sha256(path) != expected:
                raise ModelError(f"model {version} is corrupt: checksum of {path} differs")
            try:
                arrays[name] = np.load(path, allow_pickle=False)
            except (ValueError, OSError, EOFError) as exc:
                raise ModelError(f"model {version} is corrupt: cannot read {path}: {exc}") from exc
        return cls(version=version, params=dict(meta.get("params") or {}), metadata=meta,
                   **arrays)


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
