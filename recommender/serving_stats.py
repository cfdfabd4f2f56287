"""``recommender stats``: what the serving model does for the user base, in numbers.

Sources and why:

* Cassandra ``ratings``, the system of record, says who the users are and how much each
  rated (not the model, which knows only the users of its training snapshot).
* The registry's CURRENT factors give each user's top-k exactly as
  ``/users/{id}/recommendations`` ranks it (``foldin.recommend_for_user``: the user's own
  factors, else a fold-in of their ratings, else popularity; rated movies excluded). From
  those lists: catalogue coverage (distinct movies in all lists / movies the model knows; low
  means everyone is shown the same few movies) and the share of users whose top-1 no other
  user gets (how personal the first slot is); and whether the lists push obscure movies (the
  listed movies' median number of ratings against the catalogue's, and their mean rating).
* The profile tables training writes after a promotion (``train/profiles.py``): the share of
  users with a "users like you" neighbour in ``similar_users``, and per genre the
  distribution of ``user_taste.score`` (the share of a user's rating mass in the genre).

Lists are computed for at most ``max_users`` users (a seeded sample, said in the output);
every other number covers all users.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from recommender.clients import CASSANDRA_FORMAT
from recommender.contracts import PROFILE_TABLES
from recommender.model.artifacts import ModelArtifacts
from recommender.model.foldin import recommend_for_user
from recommender.settings import Settings

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession


@dataclass(frozen=True)
class Distribution:
    """Summary of a set of numbers (None fields when it is empty)."""

    count: int
    min: float | None
    p50: float | None
    p90: float | None
    max: float | None
    mean: float | None

    @classmethod
    def of(cls, values: Iterable[float]) -> Distribution:
        array = np.asarray(list(values), dtype=np.float64)
        if len(array) == 0:
            return cls(0, None, None, None, None, None)
        p50, p90 = np.quantile(array, [0.5, 0.9])
        return cls(len(array), float(array.min()), float(p50), float(p90), float(array.max()),
                   float(array.mean()))


@dataclass(frozen=True)
class GenreTaste:
    """How strongly the users who have a genre in their profile lean to it."""

    genre: str
    scores: Distribution  # user_taste.score over the users with this genre


@dataclass(frozen=True)
class ListProfile:
    """Whether the lists push obscure movies: the median number of ratings of the listed
    movies against the catalogue's median, and their mean rating (Cassandra ratings)."""

    rec_median_count: float | None
    catalogue_median_count: float | None
    rec_mean_rating: float | None


@dataclass(frozen=True)
class Stats:
    model_version: str
    keyspace: str
    users: int  # distinct users in Cassandra ratings
    ratings: int
    ratings_per_user: Distribution
    users_with_factors: int  # of those, users the model has factors for
    catalogue: int  # movies the model can recommend
    k: int
    list_users: int  # users whose top-k lists were computed (all, or a sample)
    coverage_at_k: float  # distinct movies in the top-k lists / catalogue
    lists: ListProfile  # how popular and well rated the listed movies are
    unique_top1_share: float  # users whose top-1 movie is nobody else's top-1
    neighbour_share: float  # users with a "users like you" neighbour (similar_users)
    taste_users: int  # users with a taste profile (user_taste)
    top_genre_score: Distribution  # each profiled user's strongest genre score
    genre_taste: list[GenreTaste]  # most profiled genre first


# --- pure pieces --------------------------------------------------------------------------


def top_lists(artifacts: ModelArtifacts, users: Sequence[int], ratings: Sequence[dict[int, float]],
              k: int) -> list[list[int]]:
    """Each user's top-k movie ids as the API would serve them (rated movies excluded)."""
    return [[m for m, _ in recommend_for_user(artifacts, user, k, ratings=rated).items]
            for user, rated in zip(users, ratings, strict=True)]


def list_profile(lists: Iterable[Sequence[int]], counts: dict[int, int],
                 means: dict[int, float], catalogue: Iterable[int]) -> ListProfile:
    """``ListProfile`` of the listed movies (every slot counts) over ``catalogue``'s movies;
    ``counts``/``means`` are each movie's number of ratings and mean rating."""
    shown = [m for movies in lists for m in movies]
    known = [counts.get(int(m), 0) for m in catalogue]
    return ListProfile(
        float(np.median([counts.get(m, 0) for m in shown])) if shown else None,
        float(np.median(known)) if known else None,
        float(np.mean([means[m] for m in shown if m in means])) if shown else None)


def coverage(lists: Iterable[Sequence[int]], catalogue: int) -> float:
    """Distinct movies across all lists, as a share of the catalogue."""
    shown = {m for movies in lists for m in movies}
    return len(shown) / catalogue if catalogue else 0.0


def unique_top1_share(lists: Sequence[Sequence[int]]) -> float:
    """Share of lists whose first movie is the first of no other list (empty lists count as
    not unique)."""
    firsts = Counter(movies[0] for movies in lists if movies)
    unique = sum(1 for movies in lists if movies and firsts[movies[0]] == 1)
    return unique / len(lists) if lists else 0.0


def share_of(users: Iterable[int], having: Iterable[int]) -> float:
    """Share of ``users`` that are among ``having``."""
    population, subset = set(users), set(having)
    return len(population & subset) / len(population) if population else 0.0


# --- reading ------------------------------------------------------------------------------


def collect(spark: SparkSession, settings: Settings, artifacts: ModelArtifacts, k: int = 10,
            max_users: int = 20_000, seed: int = 42) -> Stats:
    """All the statistics from Cassandra (keyspace ``cassandra.keyspace``) and ``artifacts``."""
    from pyspark.sql import functions as F

    from recommender.cassandra_schema import ensure_tables
    from recommender.model import snapshot
    from recommender.simulate.simulated_users import arrays, ratings_by_user, sample_ids

    keyspace = settings.cassandra.keyspace
    spark.conf.set("spark.sql.execution.arrow.pyspark.enabled", "true")
    ratings = snapshot.read_cassandra(spark, keyspace).persist()
    try:
        counts = ratings.groupBy("user_id").count().toPandas()
        users = counts["user_id"].to_numpy(np.int64)
        sample = sample_ids(users, max_users, seed)
        picked = ratings if len(sample) == len(users) else \
            ratings.where(F.col("user_id").isin([int(u) for u in sample]))
        rows = arrays(picked.select("user_id", "movie_id", "rating").toPandas())
        movies = ratings.groupBy("movie_id").agg(F.count("*").alias("n"),
                                                 F.avg("rating").alias("mean")).toPandas()
    finally:
        ratings.unpersist()
    lists = top_lists(artifacts, sample.tolist(), ratings_by_user(sample, rows), k)
    ensure_tables(settings, PROFILE_TABLES)  # before the first promotion they may not exist yet
    neighbours = (_table(spark, keyspace, "similar_users").where(F.col("neighbour_id").isNotNull())
                  .select("user_id").toPandas()["user_id"])
    taste = _table(spark, keyspace, "user_taste").select("user_id", "genre", "score")
    strongest = taste.groupBy("user_id").agg(F.max("score").alias("score")).toPandas()["score"]
    return Stats(
        model_version=artifacts.version, keyspace=keyspace, users=len(users),
        ratings=int(counts["count"].sum()),
        ratings_per_user=Distribution.of(counts["count"]),
        users_with_factors=sum(1 for u in users.tolist() if u in artifacts.user_index),
        catalogue=len(artifacts.item_ids), k=k, list_users=len(sample),
        coverage_at_k=coverage(lists, len(artifacts.item_ids)),
        lists=list_profile(lists, dict(zip(movies["movie_id"].tolist(), movies["n"].tolist(),
                                           strict=True)),
                           dict(zip(movies["movie_id"].tolist(), movies["mean"].tolist(),
                                    strict=True)), artifacts.item_ids.tolist()),
        unique_top1_share=unique_top1_share(lists),
        neighbour_share=share_of(users.tolist(), neighbours.tolist()),
        taste_users=len(strongest), top_genre_score=Distribution.of(strongest),
        genre_taste=genre_taste(taste))


def _table(spark: SparkSession, keyspace: str, table: str) -> DataFrame:
    return (spark.read.format(CASSANDRA_FORMAT)
            .options(keyspace=keyspace, table=table, directJoinSetting="off").load())


def genre_taste(taste: DataFrame) -> list[GenreTaste]:
    """Per genre, the distribution of ``score`` over the users who have it, aggregated in
    Spark (one row per genre reaches the driver), most profiled genre first."""
    from pyspark.sql import functions as F

    rows = (taste.groupBy("genre").agg(
        F.count("*").alias("n"), F.min("score").alias("lo"),
        F.percentile_approx("score", [0.5, 0.9]).alias("q"), F.max("score").alias("hi"),
        F.avg("score").alias("mean")).orderBy(F.desc("n"), "genre").collect())
    return [GenreTaste(r["genre"], Distribution(int(r["n"]), float(r["lo"]), float(r["q"][0]),
                                                float(r["q"][1]), float(r["hi"]),
                                                float(r["mean"])))
            for r in rows]
