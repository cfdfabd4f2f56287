"""The speed layer end to end: ratings posted to the API reach Cassandra through the real
streaming ingest, and the next answers of the API and of the streaming predictor are folded
in from them, with no retrain in between."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from bench.fixtures import install_index_templates
from data_loading.datasets import Dataset, locate
from data_loading.metadata import load_metadata
from recommender.cassandra_schema import ensure_schema
from recommender.clients import cassandra_session, elasticsearch_client, kafka_producer
from recommender.ingest_job import start_ingest
from recommender.model import snapshot
from recommender.model.artifacts import ModelArtifacts
from recommender.model.foldin import fold_in, recommend
from recommender.model.registry import ModelRegistry
from recommender.predict.job import Predictor
from recommender.runtime import wait_for
from recommender.serve.main import create_app
from recommender.settings import Settings
from recommender.vectors import publish_movie_vectors
from tests.support.names import private, remember
from tests.support.topics import collect

NEW_USER, KNOWN_USER = 900_301, 3
FIRST, SECOND = "Horror", "Animation"
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
WITHIN_S = 10.0  # how long the API's answer may take to follow (bench/freshness measures it)


@dataclass
class Live:
    settings: Settings
    api: TestClient
    model: ModelArtifacts
    dataset: Dataset
    session: Any  # one Cassandra session for the module's reads (tests poll with it)


def train_side(spark, settings: Settings, model: ModelArtifacts, user: int) -> list[tuple]:
    """The user's ratings on the training side of the model's split: what its factors for
    the user were fitted on, so the user starts on the trained vectors (``als``)."""
    evaluation = model.metadata["evaluation"]
    ratings = snapshot.read_cassandra(spark, settings.cassandra.keyspace).where(
        f"user_id = {user}")
    train, _ = snapshot.split(ratings, evaluation["split"], evaluation["test_fraction"],
                              evaluation["seed"])
    rows = [(r.user_id, r.movie_id, r.rating) for r in train.collect()]
    assert len(rows) == int(model.user_counts[model.user_row(user)])
    return rows


@pytest.fixture(scope="module")
def live(spark, trained: Settings, data_dir) -> Iterator[Live]:
    """Ingest and the predictor streaming in this process, the API beside them, all on a
    keyspace, topics and indices of this module's own; the known user's fitted ratings
    copied in."""
    own = private(trained, "speed", own_keyspace=True)
    own = remember(own.model_copy(update={"elasticsearch": own.elasticsearch.model_copy(
        update={"index_prefix": f"{own.elasticsearch.index_prefix}speed-"})}))
    dataset = locate("ml-latest-small", data_dir)
    model = ModelRegistry(own.model.models_dir).load(
        ModelRegistry(own.model.models_dir).current_version())
    session = cassandra_session(own.cassandra)
    ensure_schema(session, own)
    insert = session.prepare(f"INSERT INTO {own.cassandra.keyspace}.ratings "
                             "(user_id, movie_id, rating) VALUES (?, ?, ?)")
    for row in train_side(spark, trained, model, KNOWN_USER):
        session.execute(insert, row)
    load_metadata(own, dataset)
    install_index_templates(own)
    es = elasticsearch_client(own.elasticsearch)
    publish_movie_vectors(es, model, dataset.movies(),
                          alias=own.elasticsearch.indices.movie_vectors)
    es.close()
    ingest = start_ingest(spark, own, query_name=f"ingest-speed-{uuid.uuid4().hex[:6]}")
    predictor = Predictor(spark, own)
    query = predictor.start()
    try:
        with TestClient(create_app(own)) as api:
            histories = api.app.state.context.recommender.histories
            wait_for(lambda: histories.live, "the API to follow the ratings topic",
                     timeout_s=60, poll_s=0.2)
            yield Live(own, api, model, dataset, session)
    finally:
        query.stop()
        predictor.close()
        ingest.stop()
        session.cluster.shutdown()


def genre_movies(live: Live, genre: str, user: int) -> list[int]:
    """The five most-rated movies of ``genre`` the model knows and the user has not rated."""
    rated = set(history(live, user))
    of_genre = {m.movie_id for m in live.dataset.movies() if genre in m.genres}
    rows = [r for r in live.model.popularity_order
            if int(live.model.item_ids[r]) in of_genre - rated]
    return [int(live.model.item_ids[r]) for r in rows[:5]]


def history(live: Live, user: int) -> dict[int, float]:
    rows = live.session.execute(f"SELECT movie_id, rating FROM {live.settings.cassandra.keyspace}"
                                ".ratings WHERE user_id = %s", (user,))
    return {int(r.movie_id): float(r.rating) for r in rows}


def top_k_prediction(live: Live, user: int) -> list[dict]:
    """A top-10 request through the predictor's topics; its answer, best first."""
    request_id = f"speed-{uuid.uuid4().hex[:8]}"
    producer = kafka_producer(live.settings.kafka)
    producer.send(live.settings.kafka.requests_topic, key=str(user).encode(), value=json.dumps(
        {"request_id": request_id, "user_id": user, "k": 10,
         "requested_at": int(time.time() * 1000)}).encode())
    producer.flush()
    producer.close()
    records = collect(live.settings, live.settings.kafka.predictions_topic,
                      lambda rs: any(r["request_id"] == request_id for r in rs), timeout_s=60)
    return sorted((r for r in records if r["request_id"] == request_id),
                  key=lambda r: r["rank"])


def rate_and_follow(live: Live, user: int, genre: str) -> list[int]:
    """Post five 5-star ratings of ``genre``; once the API's answer is folded in from them,
    both answers must be the model's own top-10 of the folded-in vectors: the list."""
    movies = genre_movies(live, genre, user)
    for movie in movies:
        response = live.api.post("/ratings", json={"user_id": user, "movie_id": movie,
                                                   "rating": 5.0})
        assert response.status_code == 202, response.text

    def folded_in() -> bool:
        body = live.api.get(f"/users/{user}/recommendations", params={"k": 10}).json()
        return body["strategy"] == "fold-in" and not set(movies) & {
            i["movie_id"] for i in body["items"]} and set(movies) <= set(history(live, user))

    wait_for(folded_in, f"user {user}'s {genre} ratings to reach the API's answer",
             timeout_s=WITHIN_S, poll_s=0.2)
    answer = live.api.get(f"/users/{user}/recommendations", params={"k": 10}).json()
    predicted = top_k_prediction(live, user)
    current = history(live, user)
    want = [m for m, _ in recommend(live.model, fold_in(live.model, current), 10,
                                    exclude=current)]
    assert [i["movie_id"] for i in answer["items"]] == want
    assert [r["movie_id"] for r in predicted] == want
    assert {r["strategy"] for r in predicted} == {"fold-in"}
    return want


@pytest.mark.parametrize("user", [NEW_USER, KNOWN_USER], ids=["new user", "known user"])
def test_posted_ratings_move_both_answers_within_seconds_without_a_retrain(live, user):
    start = live.api.get(f"/users/{user}/recommendations", params={"k": 10}).json()
    assert start["strategy"] == ("popular" if user == NEW_USER else "als")
    before = [i["movie_id"] for i in start["items"]]
    version = start["model_version"]
    after_first = rate_and_follow(live, user, FIRST)
    assert after_first != before
    after_second = rate_and_follow(live, user, SECOND)
    assert after_second != after_first
    final = live.api.get(f"/users/{user}/recommendations", params={"k": 10}).json()
    assert final["model_version"] == version  # no retrain in between


def test_bad_ratings_are_refused_and_nothing_is_written(live):
    bad = [{"user_id": NEW_USER + 1, "movie_id": 99_999_999, "rating": 4.0},  # unknown movie
           {"user_id": NEW_USER + 1, "movie_id": 1, "rating": 5.5},
           {"user_id": NEW_USER + 1, "movie_id": 1, "rating": 3.7},
           {"user_id": NEW_USER + 1, "movie_id": 1},
           {"user_id": NEW_USER + 1, "movie_id": 1, "rating": 4.0, "extra": 1}]
    for body in bad:
        response = live.api.post("/ratings", json=body)
        assert response.status_code == 422, (body, response.text)
    unknown = live.api.post("/ratings", json=bad[0]).json()
    assert "not in the catalogue" in json.dumps(unknown)
    good = live.api.post("/ratings", json={"user_id": NEW_USER + 1, "movie_id": 1,
                                           "rating": 4.5})
    assert good.status_code == 202
    wait_for(lambda: history(live, NEW_USER + 1) == {1: 4.5},
             "the one good rating to be the user's only stored rating", timeout_s=30)


def test_the_catalogue_search_finds_movies_by_title_words_and_prefix(live):
    body = live.api.get("/movies", params={"q": "toy story"}).json()
    titles = [m["title"] for m in body["movies"]]
    assert titles and all("Toy Story" in t for t in titles[:3])
    typed = live.api.get("/movies", params={"q": "shawsh"}).json()["movies"]
    assert typed[0]["title"].startswith("Shawshank Redemption")
    assert live.api.get("/movies", params={"q": ""}).status_code == 422


def test_the_page_and_its_assets_are_served(live):
    page = live.api.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert 'lang="en"' in page.text and 'name="viewport"' in page.text
    for asset in ("app.js", "app.css"):
        assert live.api.get(f"/page/{asset}").status_code == 200
    assert live.api.get("/page/secrets.txt").status_code == 422
    assert "/ratings" in live.api.get("/openapi.json").json()["paths"]


@pytest.fixture()
def served(live) -> Iterator[str]:
    """The same app behind a real HTTP server, for the browser."""
    import socket
    import threading

    import uvicorn

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(live.settings), host="127.0.0.1",
                                           port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, "the page's server to start", timeout_s=60, poll_s=0.2)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_a_person_rates_movies_on_the_page_and_sees_the_list_change(served):
    """Headless Chromium (Debian's) drives the page as a person would: a new user, two
    ratings found through the search box, and the recommendations shown change.

    The answer for the user shown at page load is held back until the new user's list is
    drawn: arriving late, it must not replace that list (it once did, in CI)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 390, "height": 1400})  # a phone
            held = []
            page.route("**/users/1/recommendations*", lambda route: held.append(route))
            page.goto(served)
            page.wait_for_function("document.querySelector('#user-id').value === '1'")
            page.fill("#user-id", str(NEW_USER + 2))
            page.click("text=Show this user")
            page.wait_for_function("document.querySelector('#live-meta').textContent"
                                   f".includes('user {NEW_USER + 2} · strategy popular')")
            before = page.locator("#live .title").all_text_contents()
            assert len(held) == 1, "the page-load answer was not asked for"
            page.wait_for_function("document.querySelector('#status').textContent"
                                   f".includes('Showing user {NEW_USER + 2}')")
            with page.expect_response("**/users/1/recommendations*"):
                held[0].continue_()
            page.wait_for_timeout(500)  # time for the late answer to be drawn, if it were
            assert page.locator("#live .title").all_text_contents() == before
            assert "strategy popular" in page.text_content("#live-meta")
            for query, title in (("toy story", "Toy Story"), ("finding nemo", "Finding Nemo")):
                page.fill("#query", query)
                page.click("#search button")
                page.wait_for_selector(f"#results li:first-child .title:has-text('{title}')")
                page.evaluate("document.querySelector('#status').textContent = ''")
                page.locator("#results .rate-button").first.click()
                try:
                    page.wait_for_function("document.querySelector('#status').textContent"
                                           ".includes('updated')", timeout=30_000)
                except PlaywrightTimeout:
                    pytest.fail(f"after rating {title}: {page.text_content('#status')!r}")
            after = page.locator("#live .title").all_text_contents()
            assert "strategy fold-in" in page.text_content("#live-meta")
            assert after != before and len(after) == 10
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "page.png"), full_page=True)
        finally:
            browser.close()
