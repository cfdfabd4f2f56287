"""The HTTP API against the real stack: Kafka, Cassandra and Elasticsearch, no mocks.

A small model (random factors over ml-latest-small's movies, real rating counts) is saved
through the registry and its vectors published under private index names; Cassandra gets a
private keyspace with two users' real ratings. Then kNN recommendations must equal the
model's own in-process ranking, and every endpoint is checked for its contract.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import hypothesis
import numpy as np
import orjson
import pytest
import schemathesis
from fastapi.testclient import TestClient

from data_loading.datasets import Dataset, locate
from recommender.clients import cassandra_session, elasticsearch_client, kafka_consumer
from recommender.contracts import (
    CASSANDRA_TABLES,
    LATEST_PREDICTIONS_MAPPING,
    PREDICTIONS_MAPPING,
    IndexNames,
    keyspace_cql,
)
from recommender.indices import bulk_index, predictions_index
from recommender.model.artifacts import ModelArtifacts
from recommender.model.foldin import (
    fold_in,
    predicted_ratings,
    recommend,
    recommend_popular,
    similar_items,
    trained_vectors,
)
from recommender.model.registry import ModelRegistry
from recommender.serve.main import create_app
from recommender.settings import ApiSettings, Settings
from recommender.shipper import to_actions
from recommender.vectors import publish_movie_vectors
from tests.support.models import make_artifacts, rating_rows
from tests.support.names import remember

KNOWN, NEW, NOBODY = 1, 2, 999_999  # in the model / rated but not in it / no history
RANK = 10


def save_model(registry: ModelRegistry, dataset: Dataset, seed: int) -> ModelArtifacts:
    """Random factors for every catalogue movie, real training counts, user 2 left out.
    Lists mix in the predicted rating (``rating_weight``), as trained versions do, so the
    kNN index holds the concatenated vectors; every user was fitted on all their ratings."""
    frame = dataset.ratings_frame
    items = np.array(sorted(m.movie_id for m in dataset.movies()), dtype=np.int64)
    counts = frame.groupby("movie_id").size().reindex(items, fill_value=0).to_numpy()
    users = np.unique(frame["user_id"].to_numpy()).astype(np.int64)
    users = users[users != NEW]
    rng = np.random.default_rng(seed)
    version = registry.new_version()
    artifacts = make_artifacts(
        items, users, rng.normal(0, 0.6, (len(items), RANK)),
        rng.normal(0.2, 0.6, (len(users), RANK)),
        rating_items=rating_rows(rng.normal(0, 0.3, (len(items), RANK)), np.ones(len(items)),
                                 rng.normal(0, 0.3, len(items))),
        rating_users=rating_rows(rng.normal(0, 0.3, (len(users), RANK)),
                                 3.5 + rng.normal(0, 0.3, len(users)), np.ones(len(users))),
        item_counts=counts, version=version, ranking_params={"rating_weight": 0.1})
    fitted = frame.groupby("user_id").size().reindex(users).to_numpy(np.int64)
    artifacts = replace(artifacts, user_counts=fitted)
    with registry.staging(version) as tmp:
        artifacts.save(tmp, {"metrics": {"ndcg_at_10": 0.1, "rmse": 0.9}, "created_at": version})
    registry.publish(version, force=True)
    return artifacts


@pytest.fixture(scope="module")
def dataset(data_dir: Path) -> Dataset:
    return locate("ml-latest-small", data_dir, download=False)


@pytest.fixture(scope="module")
def api_settings(settings: Settings) -> Settings:
    """The session settings with a keyspace of this module's own: ``rated`` drops it at the
    end, which must not take the ratings other modules ingested into the session's one."""
    own = f"{settings.cassandra.keyspace}_api"
    return remember(settings.model_copy(update={
        "cassandra": settings.cassandra.model_copy(update={"keyspace": own}),
        "elasticsearch": settings.elasticsearch.model_copy(
            update={"index_prefix": f"{settings.elasticsearch.index_prefix}api-"})}))


@pytest.fixture(scope="module")
def model(api_settings: Settings, dataset: Dataset) -> ModelArtifacts:
    return save_model(ModelRegistry.from_settings(api_settings.model), dataset, seed=7)


@pytest.fixture(scope="module")
def rated(api_settings: Settings, stack, dataset: Dataset) -> Iterator[dict[int, dict[int, float]]]:
    """Users 1 and 2 with their real ratings, plus profiles for user 1, in Cassandra."""
    frame = dataset.ratings_frame
    ratings = {u: {int(m): float(r) for m, r in frame.loc[frame.user_id == u,
                                                          ["movie_id", "rating"]].to_numpy()}
               for u in (KNOWN, NEW)}
    session = cassandra_session(api_settings.cassandra)
    ks = api_settings.cassandra.keyspace
    session.execute(keyspace_cql(ks, 1))
    for table in ("ratings", "movies", "user_taste", "similar_users"):
        session.execute(CASSANDRA_TABLES[table].format(ks=ks))
    insert = session.prepare(f"INSERT INTO {ks}.ratings (user_id, movie_id, rating) "
                             "VALUES (?, ?, ?)")
    for user, movies in ratings.items():
        for movie, rating in movies.items():
            session.execute(insert, (user, movie, rating))
    session.execute(f"INSERT INTO {ks}.user_taste (user_id, genre, score, percentile, ratings) "
                    "VALUES (%s, %s, %s, %s, %s)", (KNOWN, "Drama", 0.2, 50.0, 40))
    session.execute(f"INSERT INTO {ks}.user_taste (user_id, genre, score, percentile, ratings) "
                    "VALUES (%s, %s, %s, %s, %s)", (KNOWN, "Action", 0.4, 90.0, 60))
    session.execute(f"INSERT INTO {ks}.similar_users (user_id, neighbour_id, similarity, "
                    "suggested_movie_id, model_version) VALUES (%s, %s, %s, %s, %s)",
                    (KNOWN, 42, 0.9, 260, "v-test"))
    yield ratings
    session.execute(f"DROP KEYSPACE IF EXISTS {ks}")
    session.cluster.shutdown()


@pytest.fixture(scope="module")
def names(api_settings: Settings, stack, model: ModelArtifacts,
          dataset: Dataset) -> IndexNames:
    """The module's private index names (dropped when the session ends), with the model's
    vectors published under its movie-vectors alias."""
    names = api_settings.elasticsearch.indices
    es = elasticsearch_client(api_settings.elasticsearch)
    publish_movie_vectors(es, model, dataset.movies(), alias=names.movie_vectors)
    es.close()
    return names


@pytest.fixture(scope="module")
def client(api_settings: Settings, names: IndexNames, rated) -> Iterator[TestClient]:
    with TestClient(create_app(api_settings)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def uncached_client(api_settings: Settings, names: IndexNames, rated) -> Iterator[TestClient]:
    """The API reading Cassandra on every request (``api.history_cache_users = 0``): what
    it serves follows ratings written to Cassandra by any path, not only the topic."""
    api = api_settings.api.model_copy(update={"history_cache_users": 0})
    with TestClient(create_app(api_settings.model_copy(update={"api": api}))) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def knn_client(api_settings: Settings, names: IndexNames, rated) -> Iterator[TestClient]:
    """The API as it serves a catalogue too large to score in-process: Elasticsearch kNN."""
    api = api_settings.api.model_copy(update={"in_process_max_movies": 0})
    with TestClient(create_app(api_settings.model_copy(update={"api": api}))) as test_client:
        yield test_client


def ids(items: list[dict]) -> list[int]:
    return [item["movie_id"] for item in items]


def assert_same_ranking(got: list[dict], want: list[tuple[int, float]]) -> None:
    """Same movies in the same order, except that near-equal scores may swap."""
    assert len(got) == len(want)
    for item, (movie, score) in zip(got, want, strict=True):
        assert item["movie_id"] == movie or abs(item["score"] - score) < 1e-5, (item, movie)
        assert item["score"] == pytest.approx(score, abs=1e-4)


# --- live recommendations -------------------------------------------------------------------


@pytest.mark.parametrize("path", ["in-process", "knn"])
@pytest.mark.parametrize("k", [10, 100])
def test_live_recommendations_equal_the_models_ranking(client, knn_client, model, rated, k,
                                                       path):
    api = client if path == "in-process" else knn_client
    body = api.get(f"/users/{KNOWN}/recommendations", params={"k": k}).json()
    assert body["strategy"] == "als" and body["model_version"] == model.version
    vectors = trained_vectors(model, KNOWN)
    want = recommend(model, vectors, k, exclude=rated[KNOWN])  # the ranking model's order
    assert_same_ranking(body["items"], want)
    assert not set(ids(body["items"])) & set(rated[KNOWN])
    first = body["items"][0]
    assert first["title"] and first["genres"] and first["rank"] == 1
    # the stars are the rating model's, not the ranking score
    stars = predicted_ratings(model, vectors, ids(body["items"]))
    assert [i["predicted_rating"] for i in body["items"]] == pytest.approx(stars.tolist(),
                                                                           abs=1e-5)
    assert first["predicted_rating"] != pytest.approx(min(max(first["score"], 0.5), 5.0))


def test_a_known_users_new_ratings_change_the_next_recommendations(uncached_client, model,
                                                                   rated, api_settings):
    """The speed layer: ratings stored after training fold the user in from their whole
    history on the next request, without a retrain. (Through the ratings topic, with the
    history cache on: ``test_speed_layer``.)"""
    client = uncached_client
    horror = [m for m in (1997, 1387, 2710, 1258, 1982) if m not in rated[KNOWN]]
    before = client.get(f"/users/{KNOWN}/recommendations", params={"k": 10}).json()
    session = cassandra_session(api_settings.cassandra, api_settings.cassandra.keyspace)
    try:
        for movie in horror:
            session.execute("INSERT INTO ratings (user_id, movie_id, rating) "
                            "VALUES (%s, %s, 5.0)", (KNOWN, movie))
        body = client.get(f"/users/{KNOWN}/recommendations", params={"k": 10}).json()
    finally:
        for movie in horror:
            session.execute("DELETE FROM ratings WHERE user_id = %s AND movie_id = %s",
                            (KNOWN, movie))
        session.cluster.shutdown()
    history = {**rated[KNOWN], **dict.fromkeys(horror, 5.0)}
    assert (before["strategy"], body["strategy"]) == ("als", "fold-in")
    assert_same_ranking(body["items"], recommend(model, fold_in(model, history), 10,
                                                 exclude=history))
    assert ids(body["items"]) != ids(before["items"])
    assert not set(ids(body["items"])) & set(horror)


def test_new_user_is_folded_in_from_cassandra_ratings(client, model, rated):
    body = client.get(f"/users/{NEW}/recommendations", params={"k": 20}).json()
    assert body["strategy"] == "fold-in"
    want = recommend(model, fold_in(model, rated[NEW]), 20, exclude=rated[NEW])
    assert_same_ranking(body["items"], want)


def test_user_without_history_gets_popular_movies(client, model):
    body = client.get(f"/users/{NOBODY}/recommendations", params={"k": 15}).json()
    assert body["strategy"] == "popular"
    assert ids(body["items"]) == [m for m, _ in recommend_popular(model, 15)]
    # no vectors: each star is the rating model's movie bias, mu + b_i
    assert [i["predicted_rating"] for i in body["items"]] == pytest.approx(
        predicted_ratings(model, None, ids(body["items"])).tolist(), abs=1e-5)


@pytest.mark.parametrize("path", ["in-process", "knn"])
def test_genre_and_exclude_filters_apply_on_both_paths(client, knn_client, model, rated,
                                                       dataset, path):
    api = client if path == "in-process" else knn_client
    plain = ids(api.get(f"/users/{KNOWN}/recommendations", params={"k": 5}).json()["items"])
    body = api.get(f"/users/{KNOWN}/recommendations",
                   params={"k": 10, "genre": "Comedy", "exclude": plain}).json()
    assert len(body["items"]) == 10 and body["genre"] == "Comedy"
    assert all("Comedy" in item["genres"] for item in body["items"])
    comedies = {m.movie_id for m in dataset.movies() if "Comedy" in m.genres}
    ranked = recommend(model, trained_vectors(model, KNOWN), len(model.item_ids),
                       exclude=set(rated[KNOWN]) | set(plain) | (set(model.item_index) - comedies))
    assert_same_ranking(body["items"], ranked[:10])


# --- sessions --------------------------------------------------------------------------------


def test_session_never_repeats_and_falls_back_within_the_genre(client, rated):
    top30 = ids(client.get(f"/users/{KNOWN}/recommendations", params={"k": 30}).json()["items"])
    sid = f"s-{uuid.uuid4().hex[:8]}"
    served = [client.get(f"/sessions/{sid}/next", params={"user_id": KNOWN}).json()
              for _ in range(40)]
    movies = [s["movie"]["movie_id"] for s in served]
    assert len(set(movies)) == 40, "a movie was served twice in one session"
    assert sorted(movies[:30]) == sorted(top30) and {s["source"] for s in served[:30]} == {"top"}
    genre = served[29]["movie"]["genres"][0]
    for item in served[30:]:
        assert item["source"] == "genre-fallback" and item["genre"] == genre
        assert genre in item["movie"]["genres"]
        assert item["movie"]["movie_id"] not in rated[KNOWN]
    assert served[-1]["served"] == 40
    other = client.get(f"/sessions/{sid}/next", params={"user_id": NEW})
    assert other.status_code == 422 and other.json()["error"] == "invalid request"


# --- prediction requests ---------------------------------------------------------------------


@pytest.mark.parametrize("body", [
    {"user_id": 1, "movie_id": 2, "k": 3},
    {"user_id": 1},
    {"user_id": 0, "k": 5},
    {"user_id": 1, "k": 0},
    {"user_id": 1, "k": 101},
    {"user_id": 1, "k": 5, "exclude": list(range(1, 1002))},
    {"user_id": 1, "k": 5, "surprise": True},
    [],
    [{"user_id": 1, "k": 5}, {"user_id": -3, "k": 5}],
])
def test_invalid_prediction_requests_are_422_json(client, body):
    response = client.post("/prediction-requests", json=body)
    assert response.status_code == 422, response.text
    payload = response.json()
    assert payload["error"] == "invalid request" and payload["detail"]


def test_prediction_requests_reach_the_topic(client, api_settings):
    given = uuid.uuid4().hex
    response = client.post("/prediction-requests", json=[
        {"user_id": 7, "k": 5, "exclude": [1, 2]}, {"user_id": 8, "movie_id": 260,
                                                    "request_id": given}])
    assert response.status_code == 202, response.text
    request_ids = response.json()["request_ids"]
    assert request_ids[1] == given and len(request_ids[0]) == 32
    consumer = kafka_consumer(api_settings.kafka, api_settings.kafka.requests_topic, group_id=None,
                              consumer_timeout_ms=10_000)
    got = {}
    for record in consumer:
        value = json.loads(record.value)
        got[value["request_id"]] = (record.key, value)
        if set(request_ids) <= set(got):
            break
    consumer.close()
    key, first = got[request_ids[0]]
    assert key == b"7" and first["k"] == 5 and first["exclude"] == [1, 2]
    assert abs(first["requested_at"] - time.time() * 1000) < 60_000
    assert got[given][1]["movie_id"] == 260 and got[given][1]["k"] is None


def test_write_endpoints_require_the_api_key_when_set(api_settings, names, rated):
    locked = api_settings.model_copy(update={"api": ApiSettings.model_validate(
        {**api_settings.api.model_dump(), "api_key": "s3cret"})})
    with TestClient(create_app(locked)) as c:
        body = {"user_id": 1, "k": 3}
        assert c.post("/prediction-requests", json=body).status_code == 401
        assert c.post("/prediction-requests", json=body,
                      headers={"X-API-Key": "wrong"}).status_code == 401
        ok = c.post("/prediction-requests", json=body, headers={"X-API-Key": "s3cret"})
        assert ok.status_code == 202


def test_predictions_are_read_back_from_elasticsearch(client, api_settings, names):
    """Indexed as the shipper does (its bulk lines, into private indices), read by the API."""
    es = elasticsearch_client(api_settings.elasticsearch)
    index = predictions_index(names, 2000)  # the day of every document below
    es.indices.create(index=index, mappings=PREDICTIONS_MAPPING,
                      aliases={names.predictions_alias: {}})
    es.indices.create(index=names.latest_predictions, mappings=LATEST_PREDICTIONS_MAPPING)
    rid = uuid.uuid4().hex
    assert client.get(f"/prediction-requests/{rid}").status_code == 404

    def doc(request_id, movie, rank, rating, at, answer_size=3, version="v"):
        return {"request_id": request_id, "user_id": 5, "movie_id": movie, "rank": rank,
                "predicted_rating": rating, "score": rating, "title": f"m{movie}",
                "year": 2000, "genres": ["Drama"], "model_version": version, "strategy": "als",
                "requested_at": at - 5, "predicted_at": at, "answer_size": answer_size}

    def ship(*docs):
        lines = [to_actions(orjson.dumps(d), None, names) for d in docs]
        assert bulk_index(es, b"".join(line for action in lines for line in action)) == []
        es.indices.refresh(index=f"{index},{names.latest_predictions}")

    # a refresh between two of the shipper's bulks: two of the three rows are visible
    ship(doc(rid, 10, 1, 4.5, 2000), doc(rid, 11, 2, 4.0, 2000))
    partial = client.get(f"/prediction-requests/{rid}")
    assert partial.status_code == 404 and "2 of 3" in partial.json()["detail"]
    # the same request answered earlier by the previous model (a rollover's overlap): that
    # complete answer is served while the newer one is half-indexed, and never mixed into it
    ship(*(doc(rid, movie, rank, 3.5, 1500, answer_size=2, version="old")
           for rank, movie in enumerate((20, 21), start=1)))
    earlier = client.get(f"/prediction-requests/{rid}").json()["predictions"]
    assert [(p["movie_id"], p["model_version"]) for p in earlier] == [(20, "old"), (21, "old")]
    # movie 12's newest prediction is 3.0; the older 5.0 arrives last and must not replace it.
    # "none" was shipped before answer_size existed: it counts as the whole answer.
    legacy = {k: v for k, v in doc("none", 13, None, None, 2000).items() if k != "answer_size"}
    ship(doc(rid, 12, 3, 3.0, 2000), doc("older", 12, 1, 5.0, 1000, answer_size=1), legacy)
    by_request = client.get(f"/prediction-requests/{rid}").json()
    assert [(p["rank"], p["movie_id"]) for p in by_request["predictions"]] == [
        (1, 10), (2, 11), (3, 12)]
    assert client.get("/prediction-requests/none").json()["predictions"][0]["movie_id"] == 13
    top = client.get("/users/5/predictions", params={"k": 2}).json()["predictions"]
    assert [(p["movie_id"], p["predicted_rating"]) for p in top] == [(10, 4.5), (11, 4.0)]
    latest = client.get("/users/5/predictions", params={"k": 10}).json()["predictions"]
    assert [(p["movie_id"], p["predicted_rating"]) for p in latest] == [
        (10, 4.5), (11, 4.0), (20, 3.5), (21, 3.5), (12, 3.0),
        (13, None)]  # no rating (unknown movie) comes last
    assert es.count(index=index)["count"] == 7  # the history keeps every prediction


# --- profiles, similar movies ----------------------------------------------------------------


def test_profiles_from_cassandra(client):
    taste = client.get(f"/users/{KNOWN}/taste").json()
    assert [g["genre"] for g in taste["genres"]] == ["Action", "Drama"]
    assert client.get(f"/users/{KNOWN}/similar-users").json()["neighbour_id"] == 42
    missing = client.get(f"/users/{NOBODY}/taste")
    assert missing.status_code == 404 and "taste" in missing.json()["detail"]


def test_similar_movies_match_the_model(client, model):
    body = client.get("/movies/1/similar", params={"k": 5}).json()
    assert ids(body["items"]) == [m for m, _ in similar_items(model, 1, 5)]
    assert client.get("/movies/2147483000/similar").status_code == 404


# --- operations ------------------------------------------------------------------------------


def test_health_and_metrics(client, model):
    health = client.get("/health")
    assert health.status_code == 200, health.text
    body = health.json()
    assert body["model_version"] == model.version == body["vectors_version"]
    assert all(check["ok"] for check in body["checks"].values())
    text = client.get("/metrics").text
    assert 'route="/users/{user_id}/recommendations"' in text
    assert "recommender_api_request_duration_seconds_bucket" in text


def test_elasticsearch_down_is_a_quick_503(api_settings, names, rated):
    down = api_settings.model_copy(update={"elasticsearch": api_settings.elasticsearch.model_copy(
        update={"url": "http://127.0.0.1:1"})})
    with TestClient(create_app(down)) as c:
        c.get("/health")  # first call pays for thread pools and the Cassandra connection
        started = time.monotonic()
        response = c.get(f"/users/{KNOWN}/recommendations")
        assert time.monotonic() - started < 2.0, "a down Elasticsearch must fail fast"
        assert response.status_code == 503 and "Elasticsearch" in response.json()["detail"]
        assert response.json()["error"] == "service unavailable"
        started = time.monotonic()
        health = c.get("/health")
        assert time.monotonic() - started < 5.0
        assert health.status_code == 503 and not health.json()["checks"]["elasticsearch"]["ok"]
        assert health.json()["checks"]["kafka"]["ok"] and health.json()["checks"]["cassandra"]["ok"]


def test_model_reload_follows_current(api_settings, dataset, names, rated, tmp_path):
    """A promotion is served without restart: CURRENT and the published alias move."""
    isolated = remember(api_settings.model_copy(update={
        "model": api_settings.model.model_copy(update={"models_dir": tmp_path / "models"}),
        "elasticsearch": api_settings.elasticsearch.model_copy(
            update={"index_prefix": f"{names.prefix}reload-"})}))
    registry = ModelRegistry.from_settings(isolated.model)
    alias = isolated.elasticsearch.indices
    es = elasticsearch_client(api_settings.elasticsearch)
    first = save_model(registry, dataset, seed=1)
    publish_movie_vectors(es, first, dataset.movies(), alias=alias.movie_vectors)
    with TestClient(create_app(isolated)) as c:
        assert c.get(f"/users/{KNOWN}/recommendations").json()["model_version"] == first.version
        second = save_model(registry, dataset, seed=2)
        assert c.get("/health").json()["model_version"] == second.version
        publish_movie_vectors(es, second, dataset.movies(), alias=alias.movie_vectors)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            body = c.get(f"/users/{KNOWN}/recommendations").json()
            if body["model_version"] == second.version:
                break
        assert body["model_version"] == second.version
        assert list(es.indices.get_alias(name=alias.movie_vectors)) == [
            f"{alias.movie_vectors}-{second.version}".lower()]


# --- the whole schema ------------------------------------------------------------------------


MINE = [
    ("GET", "/users/{user_id}/predictions"), ("GET", "/users/{user_id}/recommendations"),
    ("GET", "/users/{user_id}/similar-users"), ("GET", "/users/{user_id}/taste"),
    ("POST", "/prediction-requests"), ("GET", "/prediction-requests/{request_id}"),
    ("GET", "/movies/{movie_id}/similar"), ("GET", "/movies"), ("POST", "/ratings"),
    ("GET", "/sessions/{session_id}/next"),
    ("GET", "/health"), ("GET", "/metrics"),
]


@pytest.fixture(scope="module")
def api_schema(client):
    return schemathesis.openapi.from_asgi("/openapi.json", client.app)


OPERATIONS = sorted((method.upper(), path) for path, ops in
                    create_app(Settings()).openapi()["paths"].items() for method in ops)


def test_every_api_operation_is_documented_and_fuzzed():
    assert set(MINE) <= set(OPERATIONS)


@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_openapi_operation_has_no_server_errors(api_schema, method, path):
    """Schemathesis-generated requests (valid and invalid) never get a 5xx and every answer
    matches the documented status codes, content types and response schemas."""
    from schemathesis.checks import (
        content_type_conformance,
        not_a_server_error,
        response_schema_conformance,
        status_code_conformance,
    )

    checks = [not_a_server_error, status_code_conformance, content_type_conformance,
              response_schema_conformance]

    @hypothesis.given(case=api_schema[path][method].as_strategy())
    @hypothesis.settings(max_examples=50, deadline=None, database=None,
                         suppress_health_check=list(hypothesis.HealthCheck))
    def fuzz(case):
        case.call_and_validate(checks=checks)

    fuzz()
