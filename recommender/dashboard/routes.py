"""The built-in dashboard: ``/dashboard`` (page), ``/dashboard/data`` (every panel as JSON)
and ``/dashboard/data/{panel_id}``; static assets from this package, so it works offline.

Self-contained so the API only has to ``app.include_router(router)``: settings come from
``dashboard_settings`` (the app's ``state.settings`` when it has them, else
``get_settings()``) and the Elasticsearch client is built once per settings with
``clients.elasticsearch_client``. Handlers are plain ``def``: FastAPI runs them in its
thread pool, so the blocking Elasticsearch client never stalls the event loop.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Annotated, Any

from elasticsearch import Elasticsearch
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse

from recommender.clients import elasticsearch_client
from recommender.dashboard import panel_queries
from recommender.dashboard.panels import DASHBOARDS, panel
from recommender.settings import ElasticsearchSettings, Settings, get_settings

STATIC_DIR = Path(__file__).parent / "static"
ASSETS = {"dashboard.js": "text/javascript", "dashboard.css": "text/css"}
QUERY_TIMEOUT_S = 10.0  # a hung cluster shows as an error within one refresh, not 30 s later

router = APIRouter(prefix="/dashboard", tags=["dashboard"])


async def dashboard_settings(request: Request) -> Settings:
    """The settings the dashboard reads Elasticsearch with: its app's (``state.settings``),
    else the process's. Not a ``dependency_overrides`` entry: while an app has any, FastAPI
    re-inspects every dependency of every route on every request (a third of the API's CPU)."""
    return getattr(request.app.state, "settings", None) or get_settings()


_clients: dict[tuple[Any, ...], Elasticsearch] = {}
_lock = threading.Lock()


def _key(es: ElasticsearchSettings) -> tuple[Any, ...]:
    def secret(value: Any) -> str | None:
        return value.get_secret_value() if value is not None else None

    return (es.url, secret(es.api_key), es.username, secret(es.password), es.ca_certs,
            es.verify_certs, es.request_timeout)


def dashboard_es(settings: Annotated[Settings, Depends(dashboard_settings)]) -> Elasticsearch:
    """One client per distinct Elasticsearch settings, built on first use and reused."""
    key = _key(settings.elasticsearch)
    with _lock:
        if key not in _clients:
            timeout = min(settings.elasticsearch.request_timeout, QUERY_TIMEOUT_S)
            _clients[key] = elasticsearch_client(settings.elasticsearch,
                                                 request_timeout=timeout)
        return _clients[key]


SettingsDep = Annotated[Settings, Depends(dashboard_settings)]
EsDep = Annotated[Elasticsearch, Depends(dashboard_es)]


@router.get("", response_class=HTMLResponse, name="dashboard_page")
def page(request: Request) -> HTMLResponse:
    """The page: a shell that polls ``/dashboard/data`` and draws every panel in SVG."""
    html = (STATIC_DIR / "index.html").read_text()
    html = (html.replace("__DATA_URL__", str(request.url_for("dashboard_data")))
                .replace("__CSS_URL__", str(request.url_for("dashboard_static",
                                                           name="dashboard.css")))
                .replace("__JS_URL__", str(request.url_for("dashboard_static",
                                                          name="dashboard.js"))))
    return HTMLResponse(html, headers={"Cache-Control": "no-store"})


@router.get("/static/{name}", name="dashboard_static")
def static(name: str) -> FileResponse:
    if name not in ASSETS:
        raise HTTPException(404, f"no dashboard asset {name!r}")
    return FileResponse(STATIC_DIR / name, media_type=ASSETS[name],
                        headers={"Cache-Control": "no-cache"})


@router.get("/data", name="dashboard_data")
def all_panels(es: EsDep, settings: SettingsDep, dashboard: str | None = None) -> JSONResponse:
    """Every panel (or one dashboard's): status ok / empty / error, series or rows.

    503 when Elasticsearch is unreachable (the body still lists every panel, in error).
    """
    if dashboard is not None and dashboard not in {d.id for d in DASHBOARDS}:
        raise HTTPException(404, f"no dashboard {dashboard!r}; one of "
                                 f"{', '.join(d.id for d in DASHBOARDS)}")
    status, body = panel_queries.dashboard_payload(es, settings.elasticsearch.urls, dashboard,
                                          prefix=settings.elasticsearch.index_prefix)
    return JSONResponse(body, status_code=status, headers={"Cache-Control": "no-store"})


@router.get("/data/{panel_id}", name="dashboard_panel")
def one_panel(panel_id: str, es: EsDep, settings: SettingsDep) -> JSONResponse:
    try:
        spec = panel(panel_id)
    except KeyError:
        raise HTTPException(404, f"no panel {panel_id!r}") from None
    try:
        (result,) = panel_queries.fetch_panels(es, [spec],
                                               prefix=settings.elasticsearch.index_prefix)
    except panel_queries.Unreachable as exc:
        body = {**panel_queries.describe(spec), "status": "error", "error": str(exc),
                "series": []}
        return JSONResponse(body, status_code=503)
    return JSONResponse(result, headers={"Cache-Control": "no-store"})
