"""Shared error types. Each carries the exit code the CLI returns and the HTTP status the API
answers with, so one mapper at each edge turns them into output and nothing else has to."""

from __future__ import annotations

from enum import IntEnum


class ExitStatus(IntEnum):
    SUCCESS = 0
    ERROR = 1
    USAGE = 2
    UNAVAILABLE = 69  # EX_UNAVAILABLE: a backend is down or missing
    DATA = 65  # EX_DATAERR: the input data is wrong
    REFUSED = 3  # a quality gate or safety check said no


class RecommenderError(Exception):
    """Base class: a failure the user can act on, with a message that says how."""

    exit_status = ExitStatus.ERROR
    http_status = 500


class StackError(RecommenderError):
    """The embedded stack could not be fetched, started or reached."""

    exit_status = ExitStatus.UNAVAILABLE
    http_status = 503


class BackendUnavailable(RecommenderError):
    """Kafka, Cassandra or Elasticsearch did not answer."""

    exit_status = ExitStatus.UNAVAILABLE
    http_status = 503


class DatasetError(RecommenderError):
    """A dataset is missing, fails its checksum or has a malformed line."""

    exit_status = ExitStatus.DATA
    http_status = 422


class ModelError(RecommenderError):
    """A model version is missing, corrupt, or no model is promoted yet."""

    exit_status = ExitStatus.ERROR
    http_status = 503


class TrainingRefused(RecommenderError):
    """Too little data to train, or the quality gate refused the candidate."""

    exit_status = ExitStatus.REFUSED
    http_status = 409


class NotFound(RecommenderError):
    exit_status = ExitStatus.ERROR
    http_status = 404


class InvalidRequest(RecommenderError):
    exit_status = ExitStatus.USAGE
    http_status = 422
