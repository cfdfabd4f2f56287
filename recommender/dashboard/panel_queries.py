"""Run panels against Elasticsearch: one ``_msearch`` round trip for all of them (two when a
histogram needs its field's range first).

Failures are data, not exceptions: a panel whose query fails carries ``status="error"`` and
the reason, and an unreachable cluster marks every panel so. The page shows that and keeps
polling, so it recovers by itself when Elasticsearch is back.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from elastic_transport import TransportError
from elasticsearch import ApiError

from recommender.clients import describe_urls
from recommender.dashboard import aggs
from recommender.dashboard.panels import (
    DASHBOARDS,
    PANELS,
    THROUGHPUT_WINDOW,
    Panel,
    relative_ms,
)

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch


class Unreachable(Exception):
    """Elasticsearch did not answer at all (down, wrong address, timed out)."""


def window_ms(panel: Panel) -> int | None:
    """The panel's dashboard time range; None (all time) when its index has no time field."""
    if panel.time_field is None:
        return None
    if panel.dashboard == "throughput":
        return relative_ms(THROUGHPUT_WINDOW)
    return next(d.window_ms for d in DASHBOARDS if d.id == panel.dashboard)


def describe(panel: Panel) -> dict[str, Any]:
    return {"id": panel.id, "title": panel.title, "dashboard": panel.dashboard,
            "description": panel.description, "chart": panel.chart,
            "index": panel.source.pattern, "window_ms": window_ms(panel)}


def fetch_panels(es: Elasticsearch, panels: list[Panel] | tuple[Panel, ...],
                 now_ms: int | None = None, prefix: str = "") -> list[dict[str, Any]]:
    """Each panel's description, ``status`` (ok, empty or error), series and ``took_ms``,
    read from the indices under ``prefix`` (``elasticsearch.index_prefix``).

    Raises ``Unreachable`` when Elasticsearch does not answer, so callers can tell "the
    cluster is down" from "this panel's query failed".
    """
    now = now_ms or int(time.time() * 1000)
    tic = time.perf_counter()
    first = {p.id: body for p in panels
             if (body := aggs.stats_body(p, now, window_ms(p))) is not None}
    stats = dict(zip(first, _msearch(es, [(prefix + p.source.pattern, first[p.id]) for p in panels
                                          if p.id in first]), strict=True))
    requests, results = [], {}
    for p in panels:
        pre = stats.get(p.id)
        if pre is not None and "error" in pre:
            results[p.id] = _error(p, pre["error"])
            continue
        intervals = aggs.histogram_intervals(p, pre)
        requests.append((p, aggs.search_body(p, now, window_ms(p), intervals)))
    answers = _msearch(es, [(prefix + p.source.pattern, body) for p, body in requests])
    took = round((time.perf_counter() - tic) * 1000)
    for (p, _), answer in zip(requests, answers, strict=True):
        if "error" in answer:
            results[p.id] = _error(p, answer["error"])
        else:
            results[p.id] = {**describe(p), **aggs.to_series(p, answer), "error": None}
    return [{**results[p.id], "took_ms": took} for p in panels]


def _msearch(es: Elasticsearch, searches: list[tuple[str, dict[str, Any]]]) -> list[dict]:
    if not searches:
        return []
    lines: list[dict[str, Any]] = []
    for index, body in searches:
        # A missing index (user-taste before its first write) is "no data", not an error.
        lines += [{"index": index, "ignore_unavailable": True, "allow_no_indices": True}, body]
    try:
        return list(es.msearch(searches=lines)["responses"])
    except ApiError as exc:
        raise Unreachable(f"Elasticsearch answered {exc.meta.status}: {_reason(exc)}") from exc
    except TransportError as exc:
        raise Unreachable(f"Elasticsearch did not answer: {type(exc).__name__}: "
                          f"{exc.message}") from exc


def _reason(exc: ApiError) -> str:
    body = exc.body if isinstance(exc.body, dict) else {}
    error = body.get("error", exc.message)
    return _error_text(error)


def _error_text(error: Any) -> str:
    if isinstance(error, dict):
        causes = error.get("root_cause") or [error]
        first = causes[0] if causes else error
        return f"{first.get('type', 'error')}: {first.get('reason', '')}".strip()
    return str(error)


def _error(panel: Panel, error: Any) -> dict[str, Any]:
    return {**describe(panel), "status": "error", "error": _error_text(error), "series": []}


def dashboard_payload(es: Elasticsearch, es_urls: Sequence[str], dashboard_id: str | None = None,
                      now_ms: int | None = None, prefix: str = "") -> tuple[int, dict[str, Any]]:
    """The page's data: (HTTP status, body). 503 with every panel in error when the
    cluster is unreachable (the message names ``es_urls``, the nodes ``es`` reaches);
    200 otherwise, even if single panels failed."""
    now = now_ms or int(time.time() * 1000)
    boards = [d for d in DASHBOARDS if dashboard_id in (None, d.id)]
    panels = [p for p in PANELS if p.dashboard in {d.id for d in boards}]
    body: dict[str, Any] = {
        "generated_at": now,
        "dashboards": [{"id": d.id, "title": d.title, "description": d.description,
                        "time_from": d.time_from, "refresh_s": d.refresh_s} for d in boards],
    }
    try:
        body["panels"] = fetch_panels(es, panels, now, prefix)
    except Unreachable as exc:
        message = f"{exc} (at {describe_urls(es_urls)})"
        body["elasticsearch"] = {"ok": False, "error": message}
        body["panels"] = [{**describe(p), "status": "error", "error": message, "series": []}
                          for p in panels]
        return 503, body
    body["elasticsearch"] = {"ok": True, "error": None}
    return 200, body
