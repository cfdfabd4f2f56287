"""The dashboards against what the real pipeline wrote into the real Elasticsearch.

The session's ml-latest-small went through replay and the ingest job (``ml_small``) and a
model was trained on it (``trained``). This module then runs the rest as a deployment would:
a new user's ratings through replay and ingest, prediction requests through the API, the
streaming predictor and the shipper, a retraining that promotes a second version (so the
predictor rolls over mid-stream) and the taste-profile step that indexes ``user-taste``.

* Kibana: every visualization's data view, time field and fields exist in the live mapping
  with a usable type, and its aggregation (translated from the saved object) returns data
  from this run's documents over its dashboard's time range.
* Built-in dashboard: every panel returns data; an empty window is "no data", not an error;
  headless Chromium renders every panel with data marks (screenshot kept in
  tests/artifacts/); the page shows an unreachable Elasticsearch and recovers by itself.
* Report: the serving model's metrics against its baselines, and throughput from ES.

Everything this module writes goes to the session's private Elasticsearch names
(``elasticsearch.index_prefix``), dropped when the session ends.
"""

from __future__ import annotations

import random
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from data_loading.replay import replay
from recommender.clients import cassandra_session, elasticsearch_client
from recommender.contracts import RatingEvent
from recommender.dashboard import html_report, kibana, kibana_check, kibana_query, panel_queries
from recommender.dashboard.kibana_objects import object_id
from recommender.dashboard.panels import (
    PANELS,
    PREDICTIONS,
    RATINGS,
    THROUGHPUT,
    USER_TASTE,
    Source,
    panel,
)
from recommender.dashboard.routes import dashboard_settings, router
from recommender.ingest_job import start_ingest
from recommender.model import snapshot
from recommender.model.registry import ModelRegistry
from recommender.runtime import wait_for
from recommender.serve.main import create_app
from recommender.settings import Settings
from recommender.train import pipeline, profiles
from tests.support.elastic import documents
from tests.support.names import private
from tests.support.serving import serving

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
CHROMIUM = "/usr/bin/chromium"
NEW_USER = 950_001  # rates a few movies during the run: the first model never saw them
ANONYMOUS = 950_002  # has rated nothing: the popularity fallback
UNKNOWN_MOVIE = 99_999_999
FAVOURITES = {1: 5.0, 260: 4.5, 1196: 5.0, 2571: 4.0, 318: 4.5}
POPULAR = (356, 318, 296, 593, 2571, 260, 480, 110, 589, 527)
ML_SMALL_USERS = 610


@pytest.fixture(scope="module")
def es(stack, settings: Settings):
    client = elasticsearch_client(settings.elasticsearch, request_timeout=120)
    yield client
    client.close()


@dataclass(frozen=True)
class Run:
    """What the pipeline did in this module, and how to tell its documents apart."""

    settings: Settings  # private topics, the session keyspace, a registry of its own
    versions: tuple[str, str]  # served before and after the retraining
    request_prefix: str
    ingested_from_ms: int  # this session's ingest wrote ratings from then on
    taste_ids: list[str]

    @property
    def index_prefix(self) -> str:
        """The session's Elasticsearch names: the pipeline wrote only under it."""
        return self.settings.elasticsearch.index_prefix

    def own_documents(self) -> dict[str, dict[str, Any]]:
        """Per data view, a filter for the documents this session's pipeline wrote."""
        return {RATINGS.data_view_id: {"range": {"ingested_at": {
                    "gte": self.ingested_from_ms}}},
                PREDICTIONS.data_view_id: {"prefix": {"request_id": self.request_prefix}},
                USER_TASTE.data_view_id: {"ids": {"values": self.taste_ids}}}


def prediction_requests(prefix: str, rng: random.Random) -> list[dict[str, Any]]:
    """Pair and top-5 requests of known users, top-5 requests of the new user (fold-in) and
    of one who never rated (popular), and pairs with a movie nobody knows."""
    def known() -> int:
        return rng.randint(1, ML_SMALL_USERS)

    asked = [{"user_id": known(), "movie_id": rng.choice(POPULAR)} for _ in range(90)]
    asked += [{"user_id": known(), "k": 5} for _ in range(45)]
    asked += [{"user_id": NEW_USER, "k": 5}, {"user_id": ANONYMOUS, "k": 5}] * 5
    asked += [{"user_id": known(), "movie_id": UNKNOWN_MOVIE} for _ in range(5)]
    return [{"request_id": f"{prefix}{n}", **body} for n, body in enumerate(asked)]


def ask(api: TestClient, settings: Settings, requests: list[dict[str, Any]]) -> None:
    """Send the requests as the website does and wait until their predictions are indexed."""
    answer = api.post("/prediction-requests", json=requests)
    assert answer.status_code == 202, answer.text
    ids = answer.json()["request_ids"]
    wait_for(lambda: set(documents(settings, ids)) == set(ids),
             "every prediction to reach Elasticsearch")


def rate_now(spark, settings: Settings, source: str) -> Path:
    """The new user's ratings the way every rating arrives: replayed into the (private)
    ratings topic and ingested by the ingest job; returns replay's progress file."""
    now = int(time.time() * 1000)
    events = [RatingEvent(f"{source}:{NEW_USER}:{movie}:{now}", NEW_USER, movie, rating, now,
                          source=source) for movie, rating in FAVOURITES.items()]
    result = replay(settings, events, resume=False)
    start_ingest(spark, settings, available_now=True).awaitTermination()
    return Path(result.progress_file)


def retrain(spark, settings: Settings) -> tuple[str, list[str]]:
    """What ``recommender train`` does: train on Cassandra, gate and promote a version, then
    write the taste profiles (and their user-taste documents). Returns the version and the
    user-taste document ids."""
    keyspace = settings.cassandra.keyspace
    ratings = snapshot.read_cassandra(spark, keyspace).persist()
    movies = snapshot.read_movies_cassandra(spark, keyspace)
    try:
        result = pipeline.run(ratings, settings, pipeline.TrainOptions(),
                              source="cassandra")
        assert result.decision.accepted, result.decision
        taste_ids = [f"{r.user_id}:{r.genre}" for r in
                     profiles.taste_profiles(ratings, movies).select("user_id", "genre")
                     .collect()]
        artifacts = ModelRegistry.from_settings(settings.model).load(result.version)
        stats = profiles.build(ratings, movies, artifacts, settings)
    finally:
        ratings.unpersist()
    assert stats.taste_documents == stats.taste_rows == len(taste_ids), stats
    return result.version, taste_ids


@pytest.fixture(scope="module")
def pipeline_run(spark, ml_small, trained: Settings, es, run_id: str,
                 tmp_path_factory) -> Iterator[Run]:
    """Two batches of prediction requests, before and after a retraining that includes the
    new user's ratings; everything through the real jobs."""
    own = private(trained, "dashboards")
    models = tmp_path_factory.mktemp("dashboards") / "models"
    shutil.copytree(trained.model.models_dir, models)
    own = own.model_copy(update={"model": own.model.model_copy(update={"models_dir": models})})
    first = ModelRegistry.from_settings(own.model).current_version()
    prefix = f"it-{run_id}-dashboards-"
    rng = random.Random(7)
    progress = None
    try:
        progress = rate_now(spark, own, f"it-{run_id}")
        with serving(spark, own), TestClient(create_app(own)) as api:
            ask(api, own, prediction_requests(f"{prefix}a", rng))
            second, taste_ids = retrain(spark, own)
            ask(api, own, prediction_requests(f"{prefix}b", rng))
        yield Run(own, (first, second), prefix, ml_small.started_ms, taste_ids)
    finally:
        session = cassandra_session(own.cassandra, keyspace=own.cassandra.keyspace)
        session.execute("DELETE FROM ratings WHERE user_id = %s", (NEW_USER,))
        session.cluster.shutdown()
        if progress is not None:
            progress.unlink(missing_ok=True)


def test_kibana_visualizations_read_existing_fields_of_usable_types(es, pipeline_run):
    for stem, objects in kibana.load_dir().items():
        views = kibana_check.data_views(objects)
        for spec in kibana_check.vis_specs(objects):
            view = views[spec.data_view_id]
            fields = [op.field for op in (*spec.buckets, *spec.metrics) if op.field]
            caps = es.field_caps(index=pipeline_run.index_prefix + view.pattern,
                                 fields=[*fields, view.time_field or "_id"],
                                 ignore_unavailable=True, allow_no_indices=True)["fields"]
            assert kibana_check.field_problems(spec, view, caps) == [], (stem, spec.id)


def bucket_keys(response: dict[str, Any], level: int) -> set[Any]:
    """The keys of every bucket at ``level`` (0: outermost) of a translated visualization's
    answer."""
    nodes = [response["aggregations"]]
    for outer in range(level):
        nodes = [bucket for node in nodes for bucket in node[f"b{outer}"]["buckets"]]
    return {bucket["key"] for node in nodes for bucket in node[f"b{level}"]["buckets"]}


def test_kibana_visualizations_show_this_runs_pipeline_output(es, pipeline_run):
    """Over its dashboard's time range and limited to this run's documents (as a Kibana
    filter would), every visualization has data; the strategy pie has all three strategies
    and the model-version chart both versions."""
    own = pipeline_run.own_documents()
    answers = {}
    for objects in kibana.load_dir().values():
        views, ranges = kibana_check.data_views(objects), kibana_check.dashboard_time_ranges(
            objects)
        for spec in kibana_check.vis_specs(objects):
            answers[spec.id] = kibana_query.search(es, spec, views[spec.data_view_id],
                                                   ranges[spec.id], [own[spec.data_view_id]],
                                                   prefix=pipeline_run.index_prefix)
            assert kibana_query.has_data(spec, answers[spec.id]), (
                spec.id, answers[spec.id].get("hits"))
    assert set(answers) == {object_id(p) for p in PANELS}
    strategies = answers[object_id(panel("strategy_breakdown"))]
    assert bucket_keys(strategies, 0) == {"als", "fold-in", "popular"}
    versions = answers[object_id(panel("model_version_share"))]
    assert bucket_keys(versions, 1) == set(pipeline_run.versions)


def test_every_panel_and_the_report_throughput_return_data(es, pipeline_run):
    results = panel_queries.fetch_panels(es, [*PANELS, *THROUGHPUT],
                                         prefix=pipeline_run.index_prefix)
    problems = {r["id"]: r["status"] + f" {r['error'] or ''}" for r in results
                if r["status"] != "ok"}
    assert problems == {}
    shares = next(r for r in results if r["id"] == "model_version_share")["series"]
    assert {s["name"] for s in shares} >= set(pipeline_run.versions)


def test_user_taste_documents_name_the_neighbour_and_genres_both_have(es, pipeline_run):
    """What the Users dashboard counts, for user 1: a document per genre of its Cassandra
    profile (scores summing to 1), each naming the neighbour from similar_users and the
    same one to three genres that both of them have."""
    settings = pipeline_run.settings
    session = cassandra_session(settings.cassandra, keyspace=settings.cassandra.keyspace)
    try:
        [pair] = session.execute("SELECT neighbour_id FROM similar_users WHERE user_id = 1")
        genres = {user: {r.genre for r in session.execute(
            "SELECT genre FROM user_taste WHERE user_id = %s", (user,))}
            for user in (1, pair.neighbour_id)}
    finally:
        session.cluster.shutdown()
    hits = es.search(index=settings.elasticsearch.indices.user_taste,
                     query={"term": {"user_id": "1"}}, size=100)
    docs = [hit["_source"] for hit in hits["hits"]["hits"]]
    assert {d["genre"] for d in docs} == genres[1]
    assert sum(d["score"] for d in docs) == pytest.approx(1, abs=1e-3)
    assert {d["neighbour_id"] for d in docs} == {str(pair.neighbour_id)}
    [shared] = {frozenset(d["neighbour_genres"]) for d in docs}
    assert 1 <= len(shared) <= 3 and shared <= genres[1] & genres[pair.neighbour_id]


def test_an_empty_window_is_no_data_not_an_error(es, pipeline_run):
    future = int(time.time() * 1000) + 10 * 365 * 86_400_000
    results = panel_queries.fetch_panels(es, [p for p in PANELS if p.dashboard == "predictions"],
                                now_ms=future, prefix=pipeline_run.index_prefix)
    assert {r["status"] for r in results} == {"empty"}


def test_a_missing_index_is_no_data_not_an_error(es, run_id):
    """user-taste before its first write: the histogram's range request and its buckets."""
    missing = Source("missing", "Missing", f"it-{run_id}-no-such-index", None)
    panels = [replace(p, source=missing) for p in PANELS if p.dashboard == "users"]
    assert {r["status"] for r in panel_queries.fetch_panels(es, panels)} == {"empty"}


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


def draws(tag: str, attrs: dict[str, str | None]) -> bool:
    """Whether a ``.mark`` puts ink on the page: an SVG path needs a segment (a lone moveto
    draws nothing), a rect an area, a circle a radius."""
    if tag == "path":
        return bool(re.search(r"[LHVCSQTA]", (attrs.get("d") or "").upper()))
    if tag in ("rect", "circle"):
        sizes = ("width", "height") if tag == "rect" else ("r",)
        return all(float(attrs.get(size) or 0) > 0 for size in sizes)
    return True


class Panels(HTMLParser):
    """Each ``section[data-panel]``: its ``data-state`` and how many ``.mark`` it holds
    that draw something."""

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
        elif self.current and "mark" in (a.get("class") or "").split() and draws(tag, a):
            self.panels[self.current]["marks"] += 1

    handle_startendtag = handle_starttag

    def handle_endtag(self, tag):
        if tag == "section":
            self.current = None


def parse(dom: str) -> Panels:
    parser = Panels()
    parser.feed(dom)
    return parser


def test_dashboard_renders_every_panel_with_data_in_chromium(pipeline_run, settings,
                                                              tmp_path):
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


def test_dashboard_shows_elasticsearch_down_and_recovers(pipeline_run, settings, tmp_path):
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


def test_report_charts_the_serving_model_and_throughput(pipeline_run, es, tmp_path):
    out = tmp_path / "report.html"
    result = html_report.write(pipeline_run.settings, out, es)
    html = out.read_text()
    assert result.model_problem is None and result.throughput_problem is None
    model = result.model
    assert model["version"] == pipeline_run.versions[1]
    bars = len(model["metrics"]) * (1 + len(model["baseline_metrics"]))
    assert html.split('id="metrics"')[1].split("</div>")[0].count('class="mark"') == bars
    assert html.split('id="throughput"')[1].count('<path class="mark"') == 2
    assert "<script" not in html and not re.search(r"<link|(src|href)=", html)
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(out, ARTIFACTS / "report.html")
