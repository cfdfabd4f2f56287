"""The API app, assembled: settings -> backends and services -> routers, handlers, middleware.

Nothing connects here. Elasticsearch answers per request; Cassandra and Kafka connect on first
use, and the follower of the ratings topic (``histories``) in the background. The app
therefore starts while a backend is down and ``/health`` says which one (503), instead of
crash-looping; every route fails fast with a 503 naming the backend.

    uvicorn --factory recommender.serve.main:create_app     # or: recommender serve
"""

from __future__ import annotations

import gc
import importlib.util
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from recommender.model.registry import ModelRegistry
from recommender.serve import (
    handlers,
    movies,
    ops,
    page,
    queries,
    ratings,
    requests,
    sessions,
    users,
)
from recommender.serve.backends import Backends
from recommender.serve.deps import ApiContext
from recommender.serve.feed_state import SessionStore
from recommender.serve.histories import Follower, Histories
from recommender.serve.metrics import Metrics, MetricsMiddleware
from recommender.serve.model_cache import ModelCache
from recommender.serve.recommend import Recommender
from recommender.serve.schemas import ErrorResponse
from recommender.settings import Settings, get_settings

DASHBOARD = "recommender.dashboard.routes"
ERRORS = {code: {"model": ErrorResponse} for code in (404, 422, 503)}


def build_context(settings: Settings) -> ApiContext:
    indices = settings.elasticsearch.indices
    backends = Backends(settings)
    models = ModelCache(ModelRegistry.from_settings(settings.model))
    histories = None
    if settings.api.history_cache_users:
        histories = Histories(
            lambda user: queries.user_ratings(backends.cassandra(), settings, user),
            settings.api.history_cache_users, settings.api.history_recent_s)
    recommender = Recommender(backends, models, indices, histories)
    return ApiContext(settings=settings, indices=indices, backends=backends, models=models,
                      recommender=recommender, sessions=SessionStore(recommender),
                      metrics=Metrics())


def create_app(settings: Settings | None = None) -> FastAPI:
    """A new app for ``settings`` (default: the process settings)."""
    settings = settings or get_settings()
    ctx = build_context(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # Everything loaded so far lives as long as the app: out of the collector's scans,
        # which otherwise pause requests for tens of milliseconds (the p99 at 200 req/s).
        # The asyncio Elasticsearch client is made first, so its imports are frozen too.
        ctx.backends.async_es  # noqa: B018 - made here for its side effect
        gc.freeze()
        histories = ctx.recommender.histories
        follower = Follower(settings, histories) if histories is not None else None
        if follower is not None:
            follower.start()
        yield
        if follower is not None:
            follower.close()
        await ctx.backends.close_async()
        ctx.backends.close()

    app = FastAPI(
        title="Movie recommender API",
        summary="Live and streamed movie recommendations over Kafka, Cassandra and "
                "Elasticsearch.",
        version="0.1.0", lifespan=lifespan, responses=ERRORS,  # type: ignore[arg-type]
    )
    app.state.context = ctx
    app.state.settings = settings  # what the dashboard reads too
    app.state.metrics = ctx.metrics
    handlers.install(app)
    if settings.api.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.api.cors_origins,
                           allow_methods=["GET", "POST"],
                           allow_headers=["Content-Type", "X-API-Key"])
    app.add_middleware(MetricsMiddleware, metrics=ctx.metrics)
    for module in (users, requests, ratings, movies, sessions, ops, page):
        app.include_router(module.router)
    if importlib.util.find_spec("recommender.dashboard") and importlib.util.find_spec(DASHBOARD):
        app.include_router(importlib.import_module(DASHBOARD).router)
    return app
