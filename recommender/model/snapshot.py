"""Training data as one Spark DataFrame shape, from Cassandra or a file, and how it is cut.

Everything downstream takes a DataFrame of ``user_id int, movie_id int, rating float,
event_time timestamp``; ``read_cassandra`` and ``read_csv`` are the two ways to get one, so the
pipeline is developed and benchmarked on a CSV and runs unchanged on the system of record.

Splits are hash-based rather than ``randomSplit``: a (user, movie, seed) triple always lands
on the same side, whatever the partitioning or source, so a Cassandra run and a CSV run of
the same ratings are evaluated on the same held-out rows.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from recommender.clients import CASSANDRA_FORMAT
from recommender.errors import BackendUnavailable, DatasetError, TrainingRefused

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

SplitMethod = Literal["random", "time"]
COLUMNS = ("user_id", "movie_id", "rating", "event_time")

_BUCKETS = 1_000_000


@dataclass(frozen=True)
class Snapshot:
    """Size and time range of the data a model was trained from (stored in its metadata).

    ``rows_total`` is the source's row count before any window: ``train --after N`` compares
    the live count against it to decide that N new ratings have arrived.
    """

    source: str
    rows_total: int
    rows: int
    users: int
    items: int
    min_event_time: datetime | None
    max_event_time: datetime | None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("min_event_time", "max_event_time"):
            out[key] = out[key].isoformat() if out[key] else None
        return out


def read_cassandra(spark: SparkSession, keyspace: str, table: str = "ratings") -> DataFrame:
    """The ratings table through the Spark Cassandra Connector, in the training shape.

    ``BackendUnavailable`` when Cassandra or the table cannot be reached (the connector
    fetches the table's schema here, so both fail now rather than mid-training).
    """
    try:
        # directJoinSetting=off: training reads the whole table, so a later join on user_id
        # must never become one Cassandra query per key (the connector's direct join).
        df = (spark.read.format(CASSANDRA_FORMAT)
              .options(keyspace=keyspace, table=table, directJoinSetting="off").load())
    except Exception as exc:  # Py4J / AnalysisException: the JVM's reason is in the message
        raise BackendUnavailable(
            f"cannot read {keyspace}.{table} from Cassandra: {jvm_reason(exc)}") from exc
    return normalise(df)


def read_csv(spark: SparkSession, path: Path | str) -> DataFrame:
    """A MovieLens ``ratings.csv`` (userId,movieId,rating,timestamp in epoch seconds)."""
    from pyspark.sql import functions as F

    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"ratings file not found: {path}")
    df = spark.read.csv(str(path), header=True,
                        schema="userId int, movieId int, rating float, timestamp long")
    return normalise(df.select(
        F.col("userId").alias("user_id"), F.col("movieId").alias("movie_id"), "rating",
        (F.col("timestamp") * 1000).alias("event_time")))


def jvm_reason(exc: BaseException) -> str:
    """The first "SomeException: message" line of a Py4J error, not "error calling o54.load"."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in lines:
        if ("Exception:" in line or "Error:" in line) and not line.startswith("at "):
            return line[:400]
    return lines[0][:400] if lines else repr(exc)


def normalise(df: DataFrame) -> DataFrame:
    """Select and cast the training columns; ``event_time`` may be a timestamp or epoch ms."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import NumericType

    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise DatasetError(f"ratings data lacks columns {missing} (has {df.columns})")
    event_time = F.col("event_time")
    if isinstance(df.schema["event_time"].dataType, NumericType):
        event_time = F.timestamp_millis(event_time.cast("long"))
    return df.select(
        F.col("user_id").cast("int").alias("user_id"),
        F.col("movie_id").cast("int").alias("movie_id"),
        F.col("rating").cast("float").alias("rating"),
        event_time.cast("timestamp").alias("event_time"),
    ).where(F.col("user_id").isNotNull() & F.col("movie_id").isNotNull()
            & F.col("rating").isNotNull())


def snapshot(df: DataFrame, source: str, rows_total: int | None = None) -> Snapshot:
    """Counts and time range in one aggregation."""
    from pyspark.sql import functions as F

    # Separate distinct counts beat one agg with two countDistinct (which doubles the rows).
    row = df.agg(F.count("*").alias("rows"), F.min(F.unix_millis("event_time")).alias("lo"),
                 F.max(F.unix_millis("event_time")).alias("hi")).first()
    users = df.select("user_id").distinct().count()
    items = df.select("movie_id").distinct().count()
    rows = int(row["rows"])
    return Snapshot(source=source, rows_total=rows if rows_total is None else rows_total,
                    rows=rows, users=int(users), items=int(items),
                    min_event_time=_utc(row["lo"]), max_event_time=_utc(row["hi"]))


def _utc(millis: int | None) -> datetime | None:
    return None if millis is None else datetime.fromtimestamp(millis / 1000, tz=UTC)


def window(df: DataFrame, last_n: int | None = None, days: float | None = None) -> DataFrame:
    """Keep only recent interactions: the newest ``last_n`` ratings and/or the last ``days``.

    Days count back from the newest rating in the data, not from the wall clock: on a live
    stream the two coincide, and a replayed historical dataset still gets a sensible window.
    """
    from pyspark.sql import functions as F

    if days is not None:
        if days <= 0:
            raise ValueError("days must be positive")
        newest = df.agg(F.max(F.unix_micros("event_time"))).first()[0]
        if newest is not None:
            start = int(newest - days * 86_400_000_000)
            df = df.where(F.unix_micros("event_time") >= F.lit(start))
    if last_n is not None:
        if last_n <= 0:
            raise ValueError("last_n must be positive")
        df = df.orderBy(F.desc("event_time"), "user_id", "movie_id").limit(last_n)
    return df


def split(df: DataFrame, method: SplitMethod = "random", test_fraction: float = 0.2,
          seed: int = 42) -> tuple[DataFrame, DataFrame]:
    """(train, test). ``random``: a seeded hash of (user, movie) picks ``test_fraction`` of
    the rows. ``time``: each user's latest ``test_fraction`` of ratings are held out, which
    asks the model to predict a user's future from their past (no look-ahead per user)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    if not 0 < test_fraction < 1:
        raise ValueError("test_fraction must be between 0 and 1")
    if method == "random":
        bucket = F.pmod(F.xxhash64("user_id", "movie_id", F.lit(seed)), F.lit(_BUCKETS))
        is_test = bucket < F.lit(int(test_fraction * _BUCKETS))
    elif method == "time":
        order = Window.partitionBy("user_id").orderBy("event_time", "movie_id")
        is_test = F.percent_rank().over(order) > F.lit(1 - test_fraction)
    else:
        raise ValueError(f"unknown split method {method!r} (random or time)")
    marked = df.withColumn("_test", is_test)
    return (marked.where(~F.col("_test")).drop("_test"),
            marked.where(F.col("_test")).drop("_test"))


def require_enough(snap: Snapshot, min_ratings: int, min_users: int = 2,
                   min_items: int = 2) -> None:
    """Refuse to train on data too small to produce a meaningful model."""
    if snap.rows < min_ratings or snap.users < min_users or snap.items < min_items:
        raise TrainingRefused(
            f"not enough training data from {snap.source}: {snap.rows} ratings, {snap.users} "
            f"users, {snap.items} movies (need at least {min_ratings} ratings, {min_users} "
            f"users and {min_items} movies); no model was written")


def count_cassandra(spark: SparkSession, keyspace: str, table: str = "ratings") -> int:
    """Rows in the ratings table now (one row per user and movie)."""
    return read_cassandra(spark, keyspace, table).count()


def read_movies_cassandra(spark: SparkSession, keyspace: str) -> DataFrame:
    """``movie_id, genres array<string>`` from the movies table."""
    return (spark.read.format(CASSANDRA_FORMAT)
            .options(keyspace=keyspace, table="movies", directJoinSetting="off").load()
            .select("movie_id", "genres"))


def read_movies_csv(spark: SparkSession, path: Path | str) -> DataFrame:
    """``movie_id, genres`` from a MovieLens ``movies.csv`` (genres joined by ``|``)."""
    from pyspark.sql import functions as F

    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"movies file not found: {path}")
    df = spark.read.csv(str(path), header=True, quote='"', escape='"',
                        schema="movieId int, title string, genres string")
    return df.select(F.col("movieId").alias("movie_id"),
                     F.split("genres", r"\|").alias("genres"))
