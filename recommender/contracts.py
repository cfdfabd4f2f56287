"""The data contracts between stages, defined once: topic payloads, Cassandra tables and
Elasticsearch index mappings. The README's "Data contracts" section documents these.

Every stage imports its schema from here; nothing else spells a field name of a payload.
Timestamps on the wire are epoch milliseconds (UTC).
"""

from __future__ import annotations

import base64
import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

EventType = Literal["rating", "tag"]
Strategy = Literal["als", "fold-in", "popular"]

RATING_MIN, RATING_MAX = 0.5, 5.0


# --- Kafka payloads ----------------------------------------------------------------------


@dataclass
class RatingEvent:
    """Topic ``ratings``; key = ``user_id`` as UTF-8. ``tag`` is set for ``event_type='tag'``.

    ``event_id`` is ``<source>:<user_id>:<movie_id>:<event_time>`` (tags append
    ``:tag:<crc32 of the tag>``, since one user may tag a movie several times in a second) so
    that a replayed event is recognisably the same event.

    Not frozen, unlike the other payloads: a frozen dataclass sets each field through
    ``object.__setattr__``, 2.9 us per event against 0.6 us, and replay builds one per event
    with a budget of 10 us (100k events/s). No ``slots`` either: orjson serialises a
    ``__dict__`` four times faster.
    """

    event_id: str
    user_id: int
    movie_id: int
    rating: float | None
    event_time: int
    event_type: EventType = "rating"
    tag: str | None = None
    source: str = "movielens"

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    def key(self) -> bytes:
        return str(self.user_id).encode()


MAX_EXCLUDE = 1000  # movie ids one request may exclude
MAX_EVENT_ID_CHARS = 256  # of a rating event's event_id and source (ingest refuses longer)
MAX_REQUEST_ID_BYTES = 64  # a request id is a document id and a URL path segment


@dataclass(frozen=True)
class PredictionRequest:
    """Topic ``prediction-requests``; key = ``user_id``.

    Exactly one of ``movie_id`` (predict one pair) and ``k`` (top-k) is set. Movies the user
    already rated are excluded from top-k; ``exclude`` adds more (``MAX_EXCLUDE`` at most).
    ``request_id`` holds at most ``MAX_REQUEST_ID_BYTES`` bytes, wherever the request comes
    from (the API and the predictor check the same limit).
    """

    request_id: str
    user_id: int
    movie_id: int | None = None
    k: int | None = None
    exclude: list[int] = field(default_factory=list)
    requested_at: int | None = None

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    def key(self) -> bytes:
        return str(self.user_id).encode()


@dataclass  # not frozen: the predictor builds one per answered row, and frozen ones cost 4x
class Prediction:
    """Topic ``predictions``; key = ``request_id``. One record per pair request and one per
    ranked movie of a top-k request. ``predicted_rating`` is None, with ``reason`` set, when
    the movie is unknown or no prediction can be made. ``answer_size`` is how many records
    answer the request (k, or fewer when fewer movies are left): a reader that sees fewer
    has caught the request half-indexed."""

    request_id: str
    user_id: int
    movie_id: int | None
    rank: int | None
    predicted_rating: float | None
    score: float | None
    title: str | None
    year: int | None
    genres: list[str]
    model_version: str | None
    strategy: Strategy
    requested_at: int | None
    predicted_at: int
    answer_size: int
    reason: str | None = None

    def doc_id(self) -> str:
        """Elasticsearch ``_id``: a re-delivered prediction overwrites instead of duplicating."""
        return prediction_doc_id(self.request_id, self.movie_id, self.rank)


def prediction_doc_id(request_id: str, movie_id: int | None, rank: int | None) -> str:
    return request_id if rank is None else f"{request_id}:{movie_id}"


def latest_prediction_doc_id(user_id: int, movie_id: int) -> str:
    """``_id`` in the latest-predictions index: one document per (user, movie), replaced only
    by a prediction made later (the shipper writes with ``predicted_at`` as external version)."""
    return f"{user_id}:{movie_id}"


@dataclass(frozen=True)
class DeadLetter:
    """Any ``*-dlq`` topic: the original bytes, where they came from, and why they failed."""

    source_topic: str
    partition: int
    offset: int
    reason: str
    raw: str
    raw_base64: str
    failed_at: int

    @classmethod
    def of(cls, raw: bytes | None, *, source_topic: str, partition: int, offset: int,
           reason: str, failed_at: int) -> DeadLetter:
        data = raw or b""
        return cls(source_topic=source_topic, partition=partition, offset=offset, reason=reason,
                   raw=data.decode("utf-8", errors="replace"),
                   raw_base64=base64.b64encode(data).decode(), failed_at=failed_at)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()


# --- Cassandra -----------------------------------------------------------------------------

CASSANDRA_TABLES: dict[str, str] = {
    # The system of record training reads. One row per (user, movie): a replay overwrites.
    "ratings": """CREATE TABLE IF NOT EXISTS {ks}.ratings (
        user_id int, movie_id int, rating float, event_time timestamp, event_id text,
        ingested_at timestamp, PRIMARY KEY ((user_id), movie_id))""",
    "tags": """CREATE TABLE IF NOT EXISTS {ks}.tags (
        user_id int, movie_id int, tag text, event_time timestamp,
        PRIMARY KEY ((user_id), movie_id, tag))""",
    "movies": """CREATE TABLE IF NOT EXISTS {ks}.movies (
        movie_id int PRIMARY KEY, title text, year int, genres list<text>,
        imdb_id text, tmdb_id int)""",
    "user_taste": """CREATE TABLE IF NOT EXISTS {ks}.user_taste (
        user_id int, genre text, score float, percentile float, ratings int,
        PRIMARY KEY ((user_id), genre))""",
    "similar_users": """CREATE TABLE IF NOT EXISTS {ks}.similar_users (
        user_id int PRIMARY KEY, neighbour_id int, similarity float,
        suggested_movie_id int, model_version text)""",
}
# What training derives for each user after a promotion (``train.profiles``).
PROFILE_TABLES = ("user_taste", "similar_users")


def keyspace_cql(keyspace: str, replication_factor: int) -> str:
    return (f"CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = "
            f"{{'class': 'SimpleStrategy', 'replication_factor': {replication_factor}}}")


# --- Elasticsearch -------------------------------------------------------------------------
# Only core field types: the embedded distribution has no mapper-extras or analysis-common.

_ID = {"type": "keyword"}
_TITLE = {"type": "text", "fields": {"keyword": {"type": "keyword", "ignore_above": 256}}}
_DATE = {"type": "date", "format": "epoch_millis||strict_date_optional_time"}



@dataclass(frozen=True)
class IndexNames:
    """Every Elasticsearch index, alias and template name a deployment uses, behind one
    ``prefix`` (``elasticsearch.index_prefix``, empty by default): several deployments, or a
    test run beside a user's data, share one cluster without touching each other's names.

    * ``ratings_prefix``: yearly ratings indices, ``ratings-YYYY``;
    * ``predictions_prefix``: the daily prediction history, ``predictions-YYYY.MM.DD``, all
      behind ``predictions_alias``;
    * ``latest_predictions``: the newest prediction per (user, movie), what
      /users/{id}/predictions ranks; deliberately outside the predictions-* pattern, so the
      history alias never counts a prediction twice;
    * ``movie_vectors``: the alias of the CURRENT model's ``movie-vectors-<version>`` index.
    """

    prefix: str = ""
    ratings_prefix: str = "ratings-"
    predictions_prefix: str = "predictions-"
    predictions_alias: str = "predictions"
    latest_predictions: str = "latest-predictions"
    movies: str = "movies"
    movie_vectors: str = "movie-vectors"
    user_taste: str = "user-taste"

    @classmethod
    def under(cls, prefix: str) -> IndexNames:
        """The default names with ``prefix`` in front of each."""
        return cls(prefix, **{f.name: prefix + f.default for f in fields(cls)
                              if f.name != "prefix"})

    def template(self, name: str) -> str:
        """An index template's name (``recommender-ratings``, ...) under the prefix."""
        return f"{self.prefix}{name}"

    def patterns(self) -> tuple[str, ...]:
        """Every index and alias pattern these names cover (cleanup, checks)."""
        return (f"{self.ratings_prefix}*", f"{self.predictions_prefix}*",
                self.latest_predictions, self.movies, f"{self.movie_vectors}*", self.user_taste)

# A ratings document is written once per rating and read by charts: fields nothing charts or
# filters on are kept in ``_source`` only (a unique event_id in the terms index, and the
# analysed words of every title, cost Elasticsearch about a quarter of its CPU per rating).
# ``title`` stays of type text, as in indices made before, so the data view sees one type.
_STORED_ONLY = {"type": "keyword", "index": False, "doc_values": False}
_TITLE_CHARTED = {**_TITLE, "index": False}

RATINGS_MAPPING: dict[str, Any] = {
    "dynamic": "strict",
    "properties": {
        "event_id": _STORED_ONLY, "user_id": _ID, "movie_id": _ID, "rating": {"type": "float"},
        "event_time": _DATE, "ingested_at": _DATE, "title": _TITLE_CHARTED,
        "year": {"type": "integer"}, "genres": _ID, "source": _ID,
    },
}

PREDICTIONS_MAPPING: dict[str, Any] = {
    "dynamic": "strict",
    "properties": {
        "request_id": _ID, "user_id": _ID, "movie_id": _ID, "rank": {"type": "integer"},
        "predicted_rating": {"type": "float"}, "score": {"type": "float"}, "title": _TITLE,
        "year": {"type": "integer"}, "genres": _ID, "model_version": _ID, "strategy": _ID,
        "reason": {"type": "text"}, "requested_at": _DATE, "predicted_at": _DATE,
        "answer_size": {"type": "integer"}, "latency_ms": {"type": "long"},
        "indexed_at": _DATE,
    },
}

LATEST_QUERIED = ("user_id", "predicted_at")  # the API's term query, retention's range
LATEST_SORTED = ("predicted_rating", "score", "movie_id")  # the API's sort: doc values only


def _latest_field(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    """What latest-predictions indexes of one predictions field: the rest is only kept in
    ``_source``, which the API returns; about a quarter less Elasticsearch CPU per document."""
    if name in LATEST_QUERIED:
        return spec
    if spec["type"] == "text":
        return {"type": "text", "index": False}
    return {**spec, "index": False, "doc_values": name in LATEST_SORTED}


LATEST_PREDICTIONS_MAPPING: dict[str, Any] = {
    "dynamic": "strict",
    "properties": {name: _latest_field(name, spec)
                   for name, spec in PREDICTIONS_MAPPING["properties"].items()},
}

MOVIES_MAPPING: dict[str, Any] = {
    "dynamic": "strict",
    "properties": {
        "movie_id": _ID, "title": _TITLE, "year": {"type": "integer"}, "genres": _ID,
        "imdb_id": _ID, "tmdb_id": _ID, "tags": _ID, "rating_count": {"type": "integer"},
        "rating_mean": {"type": "float"},
    },
}

USER_TASTE_MAPPING: dict[str, Any] = {
    "dynamic": "strict",
    "properties": {
        "user_id": _ID, "genre": _ID, "score": {"type": "float"},
        "percentile": {"type": "float"}, "ratings": {"type": "integer"},
        "neighbour_id": _ID, "neighbour_genres": _ID,
    },
}


def movie_vectors_mapping(rank: int) -> dict[str, Any]:
    """Item factors for kNN: inner product ranks exactly like the ALS dot product."""
    return {
        "dynamic": "strict",
        "properties": {
            "movie_id": _ID, "title": _TITLE, "year": {"type": "integer"}, "genres": _ID,
            "model_version": _ID,
            # flat: exact kNN, so ES ranks exactly like the model (HNSW missed items in tests)
            "vector": {"type": "dense_vector", "dims": rank, "index": True,
                       "similarity": "max_inner_product", "index_options": {"type": "flat"}},
        },
    }
