"""Taste profiles and "users like you", written to Cassandra after a model is promoted.

* ``user_taste``: per user and genre, ``score`` = the share of the user's rating mass that
  falls in the genre (a movie's rating is split evenly over its genres, so a user's scores
  sum to 1 and reward both watching and liking a genre), ``percentile`` = the share of users
  with a profile in that genre whose score is <= this user's (0-100], ``ratings`` = how many
  of the user's movies carry the genre.
* ``similar_users``: each user's nearest neighbour by cosine of ALS user factors (the latent
  part, without the rating-level bias), and the
  movie that neighbour rated highest among those the user has not rated (newest first on
  ties), stamped with the model version the factors came from.

Rows are upserts keyed as in ``contracts.CASSANDRA_TABLES``: a rerun overwrites.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from recommender.cassandra_schema import ensure_tables
from recommender.clients import CASSANDRA_FORMAT
from recommender.contracts import PROFILE_TABLES
from recommender.errors import RecommenderError
from recommender.model.artifacts import ModelArtifacts
from recommender.settings import Settings

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch
    from pyspark.sql import DataFrame

NO_GENRE = "(no genres listed)"
SHARED_GENRES = 3  # neighbour_genres per user
BULK_DOCS = 5000


@dataclass(frozen=True)
class ProfileStats:
    taste_rows: int
    similar_rows: int
    taste_documents: int


def taste_profiles(ratings: DataFrame, movies: DataFrame) -> DataFrame:
    """``user_id, genre, score, percentile, ratings`` as described in the module docstring."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    genres = (movies.select("movie_id", F.explode("genres").alias("genre"))
              .where((F.col("genre") != NO_GENRE) & (F.length("genre") > 0)))
    per_movie = genres.groupBy("movie_id").agg(F.count("*").alias("n_genres"))
    weighted = (ratings.select("user_id", "movie_id", "rating")
                .join(genres, "movie_id").join(per_movie, "movie_id")
                .withColumn("mass", F.col("rating") / F.col("n_genres")))
    per_genre = weighted.groupBy("user_id", "genre").agg(
        F.sum("mass").alias("mass"), F.count("*").cast("int").alias("ratings"))
    total = Window.partitionBy("user_id")
    by_genre = Window.partitionBy("genre").orderBy("score")
    return (per_genre
            .withColumn("score", (F.col("mass") / F.sum("mass").over(total)).cast("float"))
            .withColumn("percentile", (F.cume_dist().over(by_genre) * 100).cast("float"))
            .select("user_id", "genre", "score", "percentile", "ratings"))


def nearest_neighbours(user_ids: np.ndarray, factors: np.ndarray,
                       batch_cells: int = 1 << 24) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For every user, the other user with the highest cosine similarity of factors.

    Returns (user_ids, neighbour_ids, similarity); batched so memory stays bounded.
    """
    n = len(user_ids)
    if n < 2:
        return user_ids[:0], user_ids[:0], np.zeros(0, np.float32)
    unit = factors.astype(np.float32)
    norms = np.linalg.norm(unit, axis=1, keepdims=True)
    unit = unit / np.where(norms == 0, 1.0, norms)
    best = np.empty(n, np.int64)
    sim = np.empty(n, np.float32)
    step = max(1, batch_cells // n)
    for start in range(0, n, step):
        rows = np.arange(start, min(start + step, n))
        scores = unit[rows] @ unit.T
        scores[np.arange(len(rows)), rows] = -np.inf
        best[rows] = np.argmax(scores, axis=1)
        sim[rows] = scores[np.arange(len(rows)), best[rows]]
    return user_ids, user_ids[best], sim


def similar_users(ratings: DataFrame, artifacts: ModelArtifacts) -> DataFrame:
    """``user_id, neighbour_id, similarity, suggested_movie_id, model_version``."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    users, neighbours, sim = nearest_neighbours(artifacts.user_ids,
                                                artifacts.ranking.latent_user_factors)
    import pandas as pd

    frame = pd.DataFrame({"user_id": users.astype(np.int32),
                          "neighbour_id": neighbours.astype(np.int32),
                          "similarity": sim.astype(np.float32)})
    pairs = ratings.sparkSession.createDataFrame(
        frame, "user_id int, neighbour_id int, similarity float")
    theirs = ratings.select(F.col("user_id").alias("neighbour_id"), "movie_id", "rating",
                            "event_time")
    unseen = (pairs.join(theirs, "neighbour_id")
              .join(ratings.select("user_id", "movie_id"), ["user_id", "movie_id"], "left_anti"))
    order = Window.partitionBy("user_id").orderBy(F.desc("rating"), F.desc("event_time"),
                                                  "movie_id")
    top = (unseen.withColumn("n", F.row_number().over(order)).where(F.col("n") == 1)
           .select("user_id", F.col("movie_id").alias("suggested_movie_id")))
    return (pairs.join(top, "user_id", "left")
            .withColumn("model_version", F.lit(artifacts.version)))


def taste_documents(taste: DataFrame, similar: DataFrame) -> DataFrame:
    """``user-taste`` documents (``contracts.USER_TASTE_MAPPING``): each taste row with the
    user's neighbour and the ``SHARED_GENRES`` genres the two weigh most together."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    pairs = similar.select("user_id", "neighbour_id")
    theirs = taste.select(F.col("user_id").alias("neighbour_id"), "genre",
                          F.col("score").alias("their_score"))
    strongest = Window.partitionBy("user_id").orderBy(F.desc("weight"), "genre")
    shared = (taste.join(pairs, "user_id").join(theirs, ["neighbour_id", "genre"])
              .withColumn("weight", F.col("score") * F.col("their_score"))
              .withColumn("n", F.row_number().over(strongest))
              .where(F.col("n") <= SHARED_GENRES)
              .groupBy("user_id").agg(F.collect_list("genre").alias("neighbour_genres")))
    return (taste.join(pairs, "user_id", "left").join(shared, "user_id", "left")
            .select(F.col("user_id").cast("string").alias("user_id"), "genre", "score",
                    "percentile", "ratings",
                    F.col("neighbour_id").cast("string").alias("neighbour_id"),
                    F.coalesce("neighbour_genres", F.array().cast("array<string>"))
                    .alias("neighbour_genres")))


def index_documents(docs: DataFrame, es: Elasticsearch, index: str) -> int:
    """Bulk-index ``taste_documents`` into ``user-taste`` (NDJSON rendered in the JVM, sent
    in chunks from the driver, retried while Elasticsearch is busy); how many it accepted."""
    from pyspark.sql import functions as F

    from recommender.indices import bulk_index
    from recommender.streaming import with_retries

    action = F.to_json(F.struct(F.struct(
        F.lit(index).alias("_index"), F.concat_ws(":", "user_id", "genre").alias("_id"))
        .alias("index")))
    lines = docs.select(F.concat(action, F.lit("\n"), F.to_json(F.struct(*docs.columns)),
                                 F.lit("\n")).alias("line"))
    what = f"Elasticsearch bulk index of {index}"

    def send(chunk: list[str]) -> int:
        body = "".join(chunk).encode()
        rejected: list[tuple[int, str]] = []
        with_retries(lambda: rejected.extend(bulk_index(es, body)), what)
        if rejected:
            raise RecommenderError(f"Elasticsearch rejected {len(rejected)} {index} "
                                   f"documents, first: {rejected[0][1]}")
        return len(chunk)

    indexed, chunk = 0, []
    for row in lines.toLocalIterator():
        chunk.append(row.line)
        if len(chunk) == BULK_DOCS:
            indexed, chunk = indexed + send(chunk), []
    if chunk:
        indexed += send(chunk)
    es.indices.refresh(index=index)
    return indexed


def publish_taste(taste: DataFrame, similar: DataFrame, settings: Settings) -> int:
    """Index the taste documents into ``user-taste`` (created by ``es setup`` if missing)."""
    from recommender.clients import elasticsearch_client
    from recommender.indices import setup as setup_indices

    es = elasticsearch_client(settings.elasticsearch)
    try:
        setup_indices(es, settings.elasticsearch.indices, upgrade=(),
                      replicas=settings.elasticsearch.number_of_replicas)
        return index_documents(taste_documents(taste, similar), es,
                               settings.elasticsearch.indices.user_taste)
    finally:
        es.close()


def write(df: DataFrame, keyspace: str, table: str) -> None:
    df.write.format(CASSANDRA_FORMAT).options(keyspace=keyspace, table=table) \
        .mode("append").save()


def build(ratings: DataFrame, movies: DataFrame, artifacts: ModelArtifacts,
          settings: Settings) -> ProfileStats:
    """Compute both tables from ``ratings`` and the promoted model, write them into
    ``settings.cassandra.keyspace`` and index the taste documents into Elasticsearch."""
    keyspace = settings.cassandra.keyspace
    ensure_tables(settings, PROFILE_TABLES)
    owned = not ratings.is_cached
    ratings = ratings.persist() if owned else ratings
    taste = taste_profiles(ratings, movies).persist()
    similar = similar_users(ratings, artifacts).persist()
    try:
        write(taste, keyspace, "user_taste")
        write(similar, keyspace, "similar_users")
        documents = publish_taste(taste, similar, settings)
        return ProfileStats(taste.count(), similar.count(), documents)
    finally:
        taste.unpersist()
        similar.unpersist()
        if owned:
            ratings.unpersist()
