"""The dashboards against the real Elasticsearch, with realistic data in the real indices.

* Kibana: every visualization's data view, time field and fields exist in the live mapping
  with a usable type, and its aggregation (translated from the saved object) returns data.
* Built-in dashboard: every panel returns data; an empty window is "no data", not an error;
  headless Chromium renders every panel with data marks (screenshot kept in
  tests/artifacts/); the page shows an unreachable Elasticsearch and recovers by itself.
* Report: the serving model's metrics against its baselines, and throughput from ES.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from recommender.clients import elasticsearch_client
from recommender.dashboard import data, kibana, kibana_check, kibana_query, report
from recommender.dashboard.panels import PANELS, THROUGHPUT, Source
from recommender.dashboard.routes import dashboard_settings, router
from recommender.settings import Settings
from tests.integration import dashboard_data

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def es(stack, settings: Settings):
    client = elasticsearch_client(settings.elasticsearch, request_timeout=120)
    yield client
    client.close()


@pytest.fixture(scope="module")
def loaded(es, settings: Settings, run_id: str):
    now = int(time.time() * 1000)
    written = dashboard_data.load(es, settings.data.data_dir, run_id, now)
    yield written
    dashboard_data.cleanup(es, written)


def test_kibana_visualizations_read_existing_fields_of_usable_types(es, loaded):
    for stem, objects in kibana.load_dir().items():
        views = kibana_check.data_views(objects)
        for spec in kibana_check.vis_specs(objects):
            view = views[spec.data_view_id]
            fields = [op.field for op in (*spec.buckets, *spec.metrics) if op.field]
            caps = es.field_caps(index=view.pattern, fields=[*fields, view.time_field or "_id"],
                                 ignore_unavailable=True, allow_no_indices=True)["fields"]
            assert kibana_check.field_problems(spec, view, caps) == [], (stem, spec.id)


def test_kibana_visualizations_return_data_over_their_dashboard_time_range(es, loaded):
    checked = 0
    for objects in kibana.load_dir().values():
        views, ranges = kibana_check.data_views(objects), kibana_check.dashboard_time_ranges(
            objects)
        for spec in kibana_check.vis_specs(objects):
            response = kibana_query.search(es, spec, views[spec.data_view_id],
                                           ranges[spec.id])
            assert kibana_query.has_data(spec, response), (spec.id, response.get("hits"))
            checked += 1
    assert checked == len(PANELS)


def test_every_panel_and_the_report_throughput_return_data(es, loaded):
    results = data.fetch_panels(es, [*PANELS, *THROUGHPUT])
    problems = {r["id"]: r["status"] + f" {r['error'] or ''}" for r in results
                if r["status"] != "ok"}
    assert problems == {}
    shares = next(r for r in results if r["id"] == "model_version_share")["series"]
    assert {s["name"] for s in shares} >= {dashboard_data.OLD, dashboard_data.NEW}


def test_an_empty_window_is_no_data_not_an_error(es, loaded):
    future = int(time.time() * 1000) + 10 * 365 * 86_400_000
    results = data.fetch_panels(es, [p for p in PANELS if p.dashboard == "predictions"],
                                now_ms=future)
    assert {r["status"] for r in results} == {"empty"}


def test_a_missing_index_is_no_data_not_an_error(es, run_id):
    """user-taste before its first write: the histogram's range request and its buckets."""
    missing = Source("missing", "Missing", f"it-{run_id}-no-such-index", None)
    panels = [replace(p, source=missing) for p in PANELS if p.dashboard == "users"]
    assert {r["status"] for r in data.fetch_panels(es, panels)} == {"empty"}


@contextmanager
def serve(choose_settings) -> Iterator[str]:
    """The router in a FastAPI app under uvicorn in a thread; settings from the callable."""
    app = FastAPI()
    app.include_router(router)
    app.dependency_overrides[dashboard_settings] = choose_settings
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}/dashboard"
    finally:
        server.should_exit = True
        thread.join(10)


def chromium(url: str, tmp: Path, *extra: str, budget_ms: int = 10_000) -> str:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `apt-get install -y chromium` (make bootstrap)")
    args = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
            "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run", "--hide-scrollbars",
            f"--user-data-dir={tmp}", f"--virtual-time-budget={budget_ms}", *extra, url]
    return subprocess.run(args, capture_output=True, text=True, timeout=180,
                          check=True).stdout


class Panels(HTMLParser):
    """Each ``section[data-panel]``: its ``data-state`` and how many ``.mark`` it holds."""

    def __init__(self) -> None:
        super().__init__()
        self.panels: dict[str, dict] = {}
        self.body: dict[str, str | None] = {}
        self.current: str | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "body":
            self.body = a
        if tag == "section" and "data-panel" in a:
            self.current = a["data-panel"]
            self.panels[self.current] = {"state": a.get("data-state"), "marks": 0}
        elif self.current and "mark" in (a.get("class") or "").split():
            self.panels[self.current]["marks"] += 1

    handle_startendtag = handle_starttag

    def handle_endtag(self, tag):
        if tag == "section":
            self.current = None


def parse(dom: str) -> Panels:
    parser = Panels()
    parser.feed(dom)
    return parser


def test_dashboard_renders_every_panel_with_data_in_chromium(loaded, settings, tmp_path):
    ARTIFACTS.mkdir(exist_ok=True)
    with serve(lambda: settings) as url:
        dom = chromium(url, tmp_path / "profile", "--dump-dom")
        (ARTIFACTS / "dashboard.html").write_text(dom)
        page = parse(dom)
        assert page.body.get("data-status") == "ok", page.body
        assert set(page.panels) == {p.id for p in PANELS}
        bare = {pid: p for pid, p in page.panels.items() if p["state"] != "ok" or not p["marks"]}
        assert bare == {}
        shot = ARTIFACTS / "dashboard.png"
        shot.unlink(missing_ok=True)
        chromium(url, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1400,2000")
    assert shot.stat().st_size > 10_000


def test_dashboard_shows_elasticsearch_down_and_recovers(loaded, settings, tmp_path):
    dead = settings.model_copy(update={"elasticsearch": settings.elasticsearch.model_copy(
        update={"url": f"http://127.0.0.1:{_free_port()}"})})
    calls = {"n": 0}

    def first_down_then_up() -> Settings:
        calls["n"] += 1
        return dead if calls["n"] == 1 else settings

    with serve(first_down_then_up) as url:
        down = httpx.get(f"{url}/data", timeout=60)  # the first call: Elasticsearch is down
        assert down.status_code == 503
        body = down.json()
        assert body["elasticsearch"]["ok"] is False and "did not answer" in body[
            "elasticsearch"]["error"]
        assert {p["status"] for p in body["panels"]} == {"error"}
        assert httpx.get(url, timeout=30).status_code == 200  # the page itself still loads
        calls["n"] = 0
        page = parse(chromium(f"{url}?refresh=1", tmp_path / "profile", "--dump-dom",
                              budget_ms=2500))
    assert int(page.body["data-errors-seen"]) >= 1  # it showed the outage ...
    assert int(page.body["data-loads"]) >= 2
    assert page.body["data-status"] == "ok"  # ... and recovered without a reload
    assert {p["state"] for p in page.panels.values()} == {"ok"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_report_charts_the_current_model_and_throughput(loaded, es, settings, tmp_path):
    models = tmp_path / "models"
    version = models / "20250301T000000Z"
    version.mkdir(parents=True)
    metadata = {"version": version.name, "created_at": "2025-03-01T00:00:00+00:00",
                "mode": "explicit", "params": {"rank": 10},
                "data": {"rows": 100836, "users": 610, "items": 9724},
                "metrics": {"rmse": 0.87, "mae": 0.67, "ndcg_at_10": 0.08},
                "baseline_metrics": {"popularity": {"rmse": 0.97, "mae": 0.75,
                                                    "ndcg_at_10": 0.09},
                                     "random": {"rmse": 1.42, "mae": 1.1,
                                                "ndcg_at_10": 0.005}}}
    (version / "metadata.json").write_text(json.dumps(metadata))
    (models / "CURRENT").write_text(version.name + "\n")
    local = settings.model_copy(update={"model": settings.model.model_copy(
        update={"models_dir": models})})
    out = tmp_path / "report.html"
    result = report.write(local, out, es)
    html = out.read_text()
    assert result.model_problem is None and result.throughput_problem is None
    assert html.split('id="metrics"')[1].split("</div>")[0].count('class="mark"') == 9
    assert html.split('id="throughput"')[1].count('<path class="mark"') == 2
    assert "<script" not in html and not re.search(r"<link|(src|href)=", html)
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(out, ARTIFACTS / "report.html")
