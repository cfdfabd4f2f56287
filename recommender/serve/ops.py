"""``/health`` and ``/metrics``: for load balancers, orchestrators and Prometheus."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

from fastapi import APIRouter, Response

from recommender.errors import RecommenderError
from recommender.serve.backends import cassandra_errors, es_errors, kafka_errors
from recommender.serve.deps import ApiContext, ContextDep
from recommender.serve.schemas import Check, Health

router = APIRouter(tags=["operations"])
GATING = ("kafka", "cassandra", "elasticsearch")


@router.get("/health", response_model=Health,
            responses={503: {"model": Health, "description": "A backend is down"}})
def health(ctx: ContextDep, response: Response) -> Health:
    """Kafka, Cassandra and Elasticsearch each answer a real request within a short timeout
    (checked in parallel); 200 when all three do, else 503 with each one's detail.

    The model is reported (``model_version`` = the registry's CURRENT, and whether it loads)
    but does not gate: before the first training the API is up and says so.
    """
    checks = _run_checks(ctx, {
        "kafka": lambda: _kafka(ctx),
        "cassandra": lambda: _cassandra(ctx),
        "elasticsearch": lambda: _elasticsearch(ctx),
        "model": lambda: _model(ctx),
    })
    vectors = None
    if checks["elasticsearch"].ok:
        try:
            published = ctx.recommender.published()
            vectors = published.version if published else None
        except RecommenderError:
            vectors = None
    ok = all(checks[name].ok for name in GATING)
    response.status_code = 200 if ok else 503
    return Health(status="ok" if ok else "unavailable",
                  model_version=ctx.models.current_version(), vectors_version=vectors,
                  checks=checks)


@router.get("/metrics", response_class=Response,
            responses={200: {"content": {"text/plain": {}},
                             "description": "Prometheus text exposition format"}})
def metrics(ctx: ContextDep) -> Response:
    """Request counts by route and status, latency histograms and errors by type."""
    return Response(ctx.metrics.render(), media_type=ctx.metrics.content_type)


def _run_checks(ctx: ApiContext, probes: dict[str, Callable[[], str]]) -> dict[str, Check]:
    deadline = ctx.backends.timeout_s + 1.0
    pool = ThreadPoolExecutor(max_workers=len(probes), thread_name_prefix="health")
    started = time.perf_counter()
    futures = {name: pool.submit(_timed, probe) for name, probe in probes.items()}
    out: dict[str, Check] = {}
    for name, future in futures.items():
        left = max(0.0, deadline - (time.perf_counter() - started))
        try:
            out[name] = future.result(timeout=left)
        except FutureTimeout:
            out[name] = Check(ok=False, detail=f"no answer within {deadline:.1f}s",
                              latency_ms=deadline * 1000)
    pool.shutdown(wait=False, cancel_futures=True)
    return out


def _timed(probe: Callable[[], str]) -> Check:
    started = time.perf_counter()
    try:
        detail, ok = probe(), True
    except RecommenderError as exc:
        detail, ok = str(exc), False
    return Check(ok=ok, detail=detail, latency_ms=round((time.perf_counter() - started) * 1000, 2))


def _kafka(ctx: ApiContext) -> str:
    try:
        admin = ctx.backends.kafka_admin()
        with kafka_errors(ctx.settings):
            cluster = admin.describe_cluster()
    except RecommenderError:
        ctx.backends.reset_kafka_admin()
        raise
    return f"{len(cluster.get('brokers') or [])} broker(s)"


def _cassandra(ctx: ApiContext) -> str:
    session = ctx.backends.cassandra()
    with cassandra_errors(ctx.settings):
        row = session.execute("SELECT release_version FROM system.local",
                              timeout=ctx.backends.timeout_s).one()
    return f"release {row.release_version}"


def _elasticsearch(ctx: ApiContext) -> str:
    with es_errors(ctx.settings):
        state = ctx.backends.es.cluster.health()
    if state["status"] == "red":
        raise RecommenderError(f"cluster {state['cluster_name']} is red")
    return f"cluster {state['cluster_name']} is {state['status']}"


def _model(ctx: ApiContext) -> str:
    model = ctx.models.current()
    return (f"{model.version}: ranking rank {model.ranking.rank}, rating rank "
            f"{model.rating.rank}, {len(model.item_ids)} movies")
