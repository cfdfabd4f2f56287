"""Request bodies and response models of the HTTP API: what the OpenAPI schema shows.

Kept apart from the internal types (``contracts``, ``ModelArtifacts``, Cassandra rows) so the
public shape changes only on purpose. Ids are positive 32-bit ints because Cassandra stores
them as ``int``; anything else is a 422 before a backend is asked.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from recommender.contracts import (
    MAX_EXCLUDE,
    MAX_REQUEST_ID_BYTES,
    RATING_MAX,
    RATING_MIN,
    Strategy,
)

INT32_MAX = 2**31 - 1
MAX_BATCH = 1000
K_CEILING = 10_000  # static bound for the schema; settings.api.max_k is checked per request
DEFAULT_K = 10  # how many the GET endpoints return without ?k=

PositiveId = Annotated[int, Field(gt=0, le=INT32_MAX)]
RequestId = Annotated[str, Field(min_length=1, max_length=MAX_REQUEST_ID_BYTES,
                                 pattern=r"^[A-Za-z0-9_.:-]+$")]  # ASCII: characters = bytes
SessionId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
Genre = Annotated[str, Field(min_length=1, max_length=64)]


class ErrorResponse(BaseModel):
    """Every error: a short ``error`` and a ``detail`` a human can act on."""

    error: str
    detail: Any = None


# --- prediction requests --------------------------------------------------------------------


class PredictionRequestIn(BaseModel):
    """One request for the streaming predictor: exactly one of ``movie_id`` and ``k``."""

    model_config = ConfigDict(extra="forbid")

    request_id: RequestId | None = Field(
        None, description="Idempotency key; a uuid4 hex is generated when absent.")
    user_id: PositiveId
    movie_id: PositiveId | None = Field(None, description="Predict this one pair.")
    k: int | None = Field(None, ge=1, le=K_CEILING,
                          description="Top-k request; at most settings.api.max_k.")
    exclude: list[PositiveId] = Field(default_factory=list, max_length=MAX_EXCLUDE)

    @model_validator(mode="after")
    def _one_target(self) -> PredictionRequestIn:
        if (self.movie_id is None) == (self.k is None):
            raise ValueError("give exactly one of movie_id (one pair) and k (top-k)")
        return self


PredictionRequestBody = (
    PredictionRequestIn
    | Annotated[list[PredictionRequestIn], Field(min_length=1, max_length=MAX_BATCH)]
)


class RequestsAccepted(BaseModel):
    """The ids to poll ``GET /prediction-requests/{id}`` with, in request order."""

    request_ids: list[str]
    topic: str


# --- the catalogue ----------------------------------------------------------------------------


class CatalogueMovie(BaseModel):
    """A movie as the catalogue (the ``movies`` index) knows it."""

    movie_id: int
    title: str | None = None
    year: int | None = None
    genres: list[str] = []
    rating_count: int | None = Field(None, description="Ratings in the loaded dataset.")


class CatalogueMatches(BaseModel):
    query: str
    movies: list[CatalogueMovie]


# --- ratings --------------------------------------------------------------------------------


class RatingIn(BaseModel):
    """A user's rating of a movie, as the website sends it: MovieLens' half-star scale."""

    model_config = ConfigDict(extra="forbid")

    user_id: PositiveId
    movie_id: PositiveId = Field(description="A movie of the catalogue.")
    rating: float = Field(ge=RATING_MIN, le=RATING_MAX, multiple_of=0.5,
                          description="0.5 to 5 in half stars.")


class RatingAccepted(BaseModel):
    """The event as the ratings topic received it (what ingest stores in Cassandra)."""

    event_id: str
    topic: str
    event_time: int = Field(description="Epoch milliseconds, when the API accepted it.")


# --- predictions ----------------------------------------------------------------------------


class PredictionOut(BaseModel):
    """One prediction as the streaming predictor wrote it (``contracts.Prediction``)."""

    request_id: str
    user_id: int
    movie_id: int | None = None
    rank: int | None = None
    predicted_rating: float | None = None
    score: float | None = None
    title: str | None = None
    year: int | None = None
    genres: list[str] = []
    model_version: str | None = None
    strategy: Strategy
    requested_at: int | None = None
    predicted_at: int
    answer_size: int | None = Field(
        None, description="How many predictions answer the request; null on predictions "
        "shipped before the field existed")
    reason: str | None = None


PREDICTION_FIELDS = list(PredictionOut.model_fields)


class UserPredictions(BaseModel):
    user_id: int
    predictions: list[PredictionOut]


class RequestPredictions(BaseModel):
    request_id: str
    predictions: list[PredictionOut]


# --- live recommendations -------------------------------------------------------------------


class Movie(BaseModel):
    movie_id: int
    title: str | None = None
    year: int | None = None
    genres: list[str] = []


class RecommendedMovie(Movie):
    rank: int
    score: float = Field(description="The ordering score (als/fold-in: ranking score + "
                                     "rating_weight x predicted rating) or the training rating "
                                     "count (popular).")
    predicted_rating: float | None = Field(
        None, description="The score clipped to the rating scale, for explicit models only.")


class Recommendations(BaseModel):
    user_id: int
    strategy: Strategy
    model_version: str
    genre: str | None = None
    items: list[RecommendedMovie]


class SimilarMovie(Movie):
    rank: int
    similarity: float


class SimilarMovies(BaseModel):
    movie_id: int
    model_version: str
    items: list[SimilarMovie]


class SessionItem(BaseModel):
    """The next movie of a listening-style session and where it came from."""

    session_id: str
    user_id: int
    movie: Movie
    source: Literal["top", "genre-fallback", "popular-fallback"]
    genre: str | None = Field(None, description="The genre a fallback stayed in.")
    served: int = Field(description="Movies served in this session so far, this one included.")
    model_version: str
    expires_in_s: float


# --- profiles ------------------------------------------------------------------------------


class SimilarUser(BaseModel):
    user_id: int
    neighbour_id: int
    similarity: float | None = None
    suggested_movie_id: int | None = None
    model_version: str | None = None


class GenreTaste(BaseModel):
    genre: str
    score: float | None = None
    percentile: float | None = None
    ratings: int | None = None


class UserTaste(BaseModel):
    user_id: int
    genres: list[GenreTaste] = Field(description="Highest score first.")


# --- operations ----------------------------------------------------------------------------


class Check(BaseModel):
    ok: bool
    detail: str
    latency_ms: float


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    model_version: str | None
    vectors_version: str | None = None
    checks: dict[str, Check]
