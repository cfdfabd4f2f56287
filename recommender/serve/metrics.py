"""Prometheus metrics of the API: requests by route and status, latency, errors.

Each app gets its own ``CollectorRegistry`` (not the process-global one) so that several
apps in one process, as in the tests, never clash over metric names. Routes are labelled by
their template (``/users/{user_id}/recommendations``), never by the raw path, which would
make one time series per user id.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

Scope = dict[str, Any]
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """The API's collectors, in a registry of their own."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "recommender_api_requests", "HTTP requests answered, by route and status.",
            ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram(
            "recommender_api_request_duration_seconds", "Time to answer a request.",
            ["method", "route"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.errors = Counter(
            "recommender_api_errors", "Error responses, by route and error type.",
            ["route", "error"], registry=self.registry)
        self.in_flight = Gauge(
            "recommender_api_requests_in_flight", "Requests being answered now.",
            registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def route_label(scope: Scope, status: int | None = None) -> str:
    """The matched route's template; the path of the framework's own pages (/docs,
    /openapi.json), which set no route; ``unmatched`` for unknown paths (404)."""
    route = getattr(scope.get("route"), "path", None)
    if route:
        return route
    return "unmatched" if status in (None, 404, 405) else scope.get("path", "unmatched")


class MetricsMiddleware:
    """Pure ASGI middleware (no body buffering) that times and counts every HTTP request."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500}

        async def send_with_status(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_with_status)
        finally:
            self.metrics.in_flight.dec()
            route, method = route_label(scope, status["code"]), scope.get("method", "")
            self.metrics.requests.labels(method, route, str(status["code"])).inc()
            self.metrics.latency.labels(method, route).observe(time.perf_counter() - started)
