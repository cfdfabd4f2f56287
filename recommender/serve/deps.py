"""Typed dependencies: what a route may ask for, injected by FastAPI, never imported globally.

Everything hangs off one ``ApiContext`` built by ``main.create_app`` and stored on
``app.state``, so two apps with different settings (tests) never share a client, and a route
module names its needs in its signature (``es: EsDep``) instead of reaching for globals.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Annotated

from cassandra.cluster import Session
from elasticsearch import AsyncElasticsearch
from fastapi import Depends, HTTPException, Query, Request, Security
from fastapi.security import APIKeyHeader
from kafka import KafkaProducer

from recommender.contracts import IndexNames
from recommender.errors import InvalidRequest
from recommender.model.artifacts import ModelArtifacts
from recommender.serve.backends import Backends
from recommender.serve.feed_state import SessionStore
from recommender.serve.metrics import Metrics
from recommender.serve.model_cache import ModelCache
from recommender.serve.recommend import Recommender
from recommender.serve.schemas import DEFAULT_K, K_CEILING
from recommender.settings import Settings


@dataclass(frozen=True)
class ApiContext:
    """The app's long-lived objects: settings, clients, model cache, services."""

    settings: Settings
    indices: IndexNames
    backends: Backends
    models: ModelCache
    recommender: Recommender
    sessions: SessionStore
    metrics: Metrics


# Dependencies that only look something up are ``async def``: FastAPI runs a plain ``def``
# dependency in its thread pool, a thread hop per dependency per request. Those that may block
# (connect to Cassandra or Kafka, load a model) stay plain ``def``.


async def get_context(request: Request) -> ApiContext:
    return request.app.state.context


ContextDep = Annotated[ApiContext, Depends(get_context)]


async def _settings(ctx: ContextDep) -> Settings:
    return ctx.settings


async def _indices(ctx: ContextDep) -> IndexNames:
    return ctx.indices


async def _backends(ctx: ContextDep) -> Backends:
    return ctx.backends


async def _es(ctx: ContextDep) -> AsyncElasticsearch:
    return ctx.backends.async_es


def _cassandra(ctx: ContextDep) -> Session:
    return ctx.backends.cassandra()


def _producer(ctx: ContextDep) -> KafkaProducer:
    return ctx.backends.producer()


def _current_model(ctx: ContextDep) -> ModelArtifacts:
    return ctx.models.current()


async def _recommender(ctx: ContextDep) -> Recommender:
    return ctx.recommender


async def _sessions(ctx: ContextDep) -> SessionStore:
    return ctx.sessions


# Cassandra and Kafka connect on first use, and FastAPI runs dependencies before it
# validates path and query parameters: routes that must answer 422 before 503 take
# ``BackendsDep`` and connect in their body. ``CassandraDep``/``ProducerDep`` are for the rest.
SettingsDep = Annotated[Settings, Depends(_settings)]
BackendsDep = Annotated[Backends, Depends(_backends)]
IndicesDep = Annotated[IndexNames, Depends(_indices)]
EsDep = Annotated[AsyncElasticsearch, Depends(_es)]
CassandraDep = Annotated[Session, Depends(_cassandra)]
ProducerDep = Annotated[KafkaProducer, Depends(_producer)]
ModelDep = Annotated[ModelArtifacts, Depends(_current_model)]
RecommenderDep = Annotated[Recommender, Depends(_recommender)]
SessionsDep = Annotated[SessionStore, Depends(_sessions)]


async def top_k(settings: SettingsDep,
          k: Annotated[int, Query(ge=1, le=K_CEILING,
                                  description="How many; at most settings.api.max_k.")] = DEFAULT_K,
          ) -> int:
    """``k`` bounded by ``settings.api.max_k`` (the schema can only carry a static bound)."""
    if k > settings.api.max_k:
        raise InvalidRequest(f"k={k} is above the maximum {settings.api.max_k} (api.max_k)")
    return k


TopK = Annotated[int, Depends(top_k)]

_api_key_header = APIKeyHeader(
    name="X-API-Key", auto_error=False,
    description="Required on write endpoints when settings.api.api_key is set.")


async def require_api_key(settings: SettingsDep,
                    key: Annotated[str | None, Security(_api_key_header)] = None) -> None:
    """401 unless the header matches ``settings.api.api_key``; open when no key is set."""
    expected = settings.api.api_key
    if expected is None:
        return
    if key is None or not secrets.compare_digest(key.encode(),
                                                 expected.get_secret_value().encode()):
        raise HTTPException(401, "missing or wrong X-API-Key header",
                            headers={"WWW-Authenticate": "ApiKey"})


ApiKeyDep = Depends(require_api_key)
