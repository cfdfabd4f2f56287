"""The simulated users: the ratings a model was trained from, cut again by the split recorded
in its metadata (Spark side).

``recommender train`` holds out rows by a seeded hash of (user, movie) (``model.snapshot.split``),
so re-running the split with the recorded method, fraction and seed puts every row on the
same side as when the model was trained: the held-out side is exactly what the model never
saw, even after new ratings arrived (a new row lands on one side or the other and was seen by
no model anyway). A ``time`` split depends on each user's whole history, so it is reproduced
only while the source still holds as many ratings as when the model was trained (ratings
are upserts and never deleted, so an equal count means the same rows).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from recommender.errors import ModelError
from recommender.model import snapshot
from recommender.settings import Settings
from recommender.simulate.session import SimUser
from recommender.vectors import MovieInfo

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession


@dataclass(frozen=True)
class SplitSpec:
    """How a version's training data was cut, from its ``metadata.json``."""

    method: snapshot.SplitMethod
    test_fraction: float
    seed: int
    last_n: int | None
    days: float | None
    rows_total: int  # ratings in the source when the model was trained, before any window
    source: str

    @classmethod
    def of(cls, meta: dict[str, Any]) -> SplitSpec:
        ev, snap = meta.get("evaluation") or {}, meta.get("data") or {}
        window = snap.get("window") or {}
        if "split" not in ev or "rows_total" not in snap:
            raise ModelError(f"model {meta.get('version')} records no train/held-out split; "
                             "retrain it with `recommender train`")
        return cls(ev["split"], float(ev["test_fraction"]), int(ev["seed"]),
                   window.get("last_n"), window.get("days"), int(snap["rows_total"]),
                   str(snap.get("source", "")))

    def same_held_out(self, other: SplitSpec) -> bool:
        """Whether both versions held out the same rows (so one simulation is honest for
        both): the same hash split, or for time splits also the same data."""
        same = (self.method, self.test_fraction, self.seed) == \
            (other.method, other.test_fraction, other.seed)
        if self.method == "time":
            same &= (self.last_n, self.days, self.rows_total, self.source) == \
                (other.last_n, other.days, other.rows_total, other.source)
        return same


def read_source(spark: SparkSession, settings: Settings, source: str,
                ratings_csv: Path | None = None) -> tuple[DataFrame, DataFrame]:
    """(ratings, movies with genres) from where the model was trained: ``csv:<path>`` (with
    ``movies.csv`` beside it), ``cassandra:<keyspace>.<table>``, else the configured keyspace.
    ``ratings_csv`` overrides the recorded source."""
    if ratings_csv is None and source.startswith("csv:"):
        ratings_csv = Path(source.removeprefix("csv:"))
    if ratings_csv is not None:
        return (snapshot.read_csv(spark, ratings_csv),
                snapshot.read_movies_csv(spark, ratings_csv.parent / "movies.csv"))
    keyspace, table = settings.cassandra.keyspace, "ratings"
    if source.startswith("cassandra:") and "." in source:
        keyspace, table = source.removeprefix("cassandra:").split(".", 1)
    return (snapshot.read_cassandra(spark, keyspace, table),
            snapshot.read_movies_cassandra(spark, keyspace))


def held_out_split(ratings: DataFrame, spec: SplitSpec) -> tuple[DataFrame, DataFrame]:
    """(train, held out) exactly as the version's training run cut them."""
    if spec.method == "time" and (rows := ratings.count()) != spec.rows_total:
        raise ModelError(f"the model was trained from {spec.rows_total} ratings with a time "
                         f"split and there are {rows} now: its held-out rows cannot be "
                         "reproduced; retrain (or train with --split random, which stays "
                         "reproducible as ratings arrive)")
    if spec.last_n or spec.days:
        ratings = snapshot.window(ratings, spec.last_n, spec.days)
    return snapshot.split(ratings, spec.method, spec.test_fraction, spec.seed)


def collect_users(train: DataFrame, held_out: DataFrame, max_users: int,
                  seed: int) -> list[SimUser]:
    """Users with at least one held-out rating (a seeded sample of ``max_users`` when there
    are more), with both sides of their ratings."""
    from pyspark.sql import functions as F

    train.sparkSession.conf.set("spark.sql.execution.arrow.pyspark.enabled", "true")
    users = np.sort(held_out.select("user_id").distinct().toPandas()["user_id"]
                    .to_numpy(np.int64))
    if len(users) > max_users:
        users = sample_ids(users, max_users, seed)
        chosen = F.col("user_id").isin([int(u) for u in users])
        train, held_out = train.where(chosen), held_out.where(chosen)
    columns = ("user_id", "movie_id", "rating")
    return group_users(users, arrays(train.select(*columns).toPandas()),
                       arrays(held_out.select(*columns).toPandas()))


def sample_ids(ids: np.ndarray, n: int, seed: int) -> np.ndarray:
    """A seeded, sorted sample of ``n`` of ``ids`` (all of them when there are no more)."""
    if len(ids) <= n:
        return np.sort(ids)
    return np.sort(np.random.default_rng(seed).choice(ids, n, replace=False))


def collect_catalogue(movies: DataFrame) -> dict[int, MovieInfo]:
    """``{movie_id: (None, None, genres)}``: the feed's genre fallback needs only genres."""
    frame = movies.toPandas()
    return {int(m): (None, None, list(g) if g is not None else [])
            for m, g in zip(frame["movie_id"], frame["genres"], strict=True)}


Rows = tuple[np.ndarray, np.ndarray, np.ndarray]  # user ids, movie ids, ratings


def arrays(frame: Any) -> Rows:
    """A pandas frame of ``user_id, movie_id, rating`` as ``Rows``."""
    return (frame["user_id"].to_numpy(np.int64), frame["movie_id"].to_numpy(np.int64),
            frame["rating"].to_numpy(np.float64))


def group_users(users: np.ndarray, seen: Rows, held_out: Rows) -> list[SimUser]:
    """One ``SimUser`` per id in ``users``, from (user, movie, rating) arrays of each side."""
    sides = [ratings_by_user(users, rows) for rows in (seen, held_out)]
    return [SimUser(int(u), sides[0][i], sides[1][i]) for i, u in enumerate(users)]


def ratings_by_user(users: np.ndarray, rows: Rows) -> list[dict[int, float]]:
    """``{movie_id: rating}`` per id in ``users`` (empty for a user without rows), from
    (user, movie, rating) arrays: one sort instead of a pandas groupby per user."""
    user, movie, rating = rows
    order = np.argsort(user, kind="stable")
    user, movie, rating = user[order], movie[order], rating[order]
    lows = np.searchsorted(user, users, side="left")
    highs = np.searchsorted(user, users, side="right")
    return [dict(zip(movie[a:b].tolist(), rating[a:b].tolist(), strict=True))
            for a, b in zip(lows, highs, strict=True)]
