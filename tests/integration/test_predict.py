"""The real-time predictor against the real stack: requests in, enriched predictions out."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict

import pytest

from recommender.clients import cassandra_session, kafka_producer
from recommender.model.foldin import (
    fold_in,
    predict_pair,
    predicted_ratings,
    recommend,
    user_vectors,
)
from recommender.model.registry import ModelRegistry
from recommender.predict.job import Predictor
from recommender.predict.rollover import rollover, running_instances, stop_instance
from recommender.settings import Settings, as_env
from tests.support.names import private
from tests.support.topics import collect

TOY_STORY = 1
NEW_USER, NO_HISTORY_USER = 900_001, 900_002


def send(settings: Settings, requests: list[dict | bytes]) -> None:
    producer = kafka_producer(settings.kafka)
    for req in requests:
        value = req if isinstance(req, bytes) else json.dumps(
            {"requested_at": int(time.time() * 1000), **req}).encode()
        producer.send(settings.kafka.requests_topic, key=b"k", value=value)
    producer.flush()
    producer.close()


def answered(ids: set[str]):
    return lambda records: ids <= {r["request_id"] for r in records}


@pytest.fixture(scope="module")
def version(trained: Settings) -> str:
    return ModelRegistry(trained.model.models_dir).current_version()


@pytest.fixture(scope="module")
def live(spark, trained):
    """A predictor running in this process on its own topics, with a new user and a
    history-less user prepared in Cassandra. The new user's ratings are deleted afterwards:
    the keyspace is the session's, whose ratings other tests compare with the model's."""
    own = private(trained, "live", max_offsets_per_trigger=2000)
    session = cassandra_session(own.cassandra, keyspace=own.cassandra.keyspace)
    for movie, rating in ((TOY_STORY, 5.0), (260, 5.0), (1196, 4.5)):
        session.execute("INSERT INTO ratings (user_id, movie_id, rating) VALUES (%s, %s, %s)",
                        (NEW_USER, movie, rating))
    predictor = Predictor(spark, own)
    query = predictor.start()
    try:
        yield own, predictor
    finally:
        query.stop()
        session.execute("DELETE FROM ratings WHERE user_id = %s", (NEW_USER,))
        session.cluster.shutdown()


def test_pair_and_top_k_requests_are_answered_with_enrichment(live, version):
    settings, _ = live
    send(settings, [{"request_id": "pair", "user_id": 1, "movie_id": TOY_STORY},
                    {"request_id": "top", "user_id": 1, "k": 5, "exclude": [2571]}])
    records = collect(settings, settings.kafka.predictions_topic, answered({"pair", "top"}))
    [pair] = [r for r in records if r["request_id"] == "pair"]
    assert (pair["title"], pair["year"]) == ("Toy Story", 1995)
    assert "Animation" in pair["genres"]
    artifacts = ModelRegistry(settings.model.models_dir).load(version)
    history = user_history(settings, 1)
    # a fifth of user 1's ratings were held out of fitting: the speed layer folds them in
    vectors, strategy = user_vectors(artifacts, 1, history)
    assert strategy == "fold-in"
    # the pair is the rating model's prediction (mu + b_u + b_i + x . y, clipped)
    assert pair["predicted_rating"] == pytest.approx(predict_pair(artifacts, vectors, TOY_STORY),
                                                     abs=1e-4)
    assert (pair["strategy"], pair["model_version"], pair["rank"]) == (strategy, version, None)
    assert pair["requested_at"] <= pair["predicted_at"]
    top = sorted((r for r in records if r["request_id"] == "top"), key=lambda r: r["rank"])
    assert [r["rank"] for r in top] == [1, 2, 3, 4, 5]
    scores = [r["score"] for r in top]
    assert scores == sorted(scores, reverse=True)
    seen = set(history) | {2571}
    assert not {r["movie_id"] for r in top} & seen
    assert all(r["title"] and r["model_version"] == version for r in top)
    # ordered by the ranking model, each row carrying the rating model's stars
    want = recommend(artifacts, vectors, 5, exclude=seen)
    assert [r["movie_id"] for r in top] == [m for m, _ in want]
    assert scores == pytest.approx([score for _, score in want], abs=1e-4)
    assert [r["predicted_rating"] for r in top] == pytest.approx(
        predicted_ratings(artifacts, vectors, [m for m, _ in want]).tolist(), abs=1e-4)


def user_history(settings: Settings, user_id: int) -> dict[int, float]:
    session = cassandra_session(settings.cassandra, keyspace=settings.cassandra.keyspace)
    rows = session.execute("SELECT movie_id, rating FROM ratings WHERE user_id = %s",
                           (user_id,))
    history = {r.movie_id: r.rating for r in rows}
    session.cluster.shutdown()
    return history


HORROR = (1997, 1387, 2710, 1258, 1982)  # The Exorcist, Jaws, Blair Witch, The Shining, Halloween


def test_a_known_users_new_ratings_change_their_answers_in_the_next_batch(live, version):
    """The speed layer: ratings stored after training fold the user in from their whole
    history, for top-k and pair requests alike; nothing waits for a retrain."""
    settings, _ = live
    user = 3
    artifacts = ModelRegistry(settings.model.models_dir).load(version)
    assert artifacts.user_row(user) is not None
    send(settings, [{"request_id": "before", "user_id": user, "k": 10}])
    before = collect(settings, settings.kafka.predictions_topic, answered({"before"}))
    session = cassandra_session(settings.cassandra, keyspace=settings.cassandra.keyspace)
    new = [m for m in HORROR if m not in user_history(settings, user)]
    try:
        for movie in new:
            session.execute("INSERT INTO ratings (user_id, movie_id, rating) "
                            "VALUES (%s, %s, 5.0)", (user, movie))
        send(settings, [{"request_id": "after", "user_id": user, "k": 10},
                        {"request_id": "after-pair", "user_id": user, "movie_id": TOY_STORY}])
        records = collect(settings, settings.kafka.predictions_topic,
                          answered({"after", "after-pair"}))
        history = user_history(settings, user)
    finally:
        for movie in new:
            session.execute("DELETE FROM ratings WHERE user_id = %s AND movie_id = %s",
                            (user, movie))
        session.cluster.shutdown()
    folded = fold_in(artifacts, history)
    top = sorted((r for r in records if r["request_id"] == "after"), key=lambda r: r["rank"])
    assert {r["strategy"] for r in top} == {"fold-in"}
    assert [r["movie_id"] for r in top] == [m for m, _ in recommend(artifacts, folded, 10, history)]
    assert not {r["movie_id"] for r in top} & set(new)
    assert [r["movie_id"] for r in top] != [
        r["movie_id"] for r in sorted((r for r in before if r["request_id"] == "before"),
                                      key=lambda r: r["rank"])]
    [pair] = [r for r in records if r["request_id"] == "after-pair"]
    assert pair["predicted_rating"] == pytest.approx(predict_pair(artifacts, folded, TOY_STORY),
                                                     abs=1e-4)


def test_cold_start_paths_fold_in_popular_and_unknown_movie(live):
    settings, _ = live
    send(settings, [{"request_id": "new", "user_id": NEW_USER, "k": 3},
                    {"request_id": "none", "user_id": NO_HISTORY_USER, "k": 3},
                    {"request_id": "ghost", "user_id": 1, "movie_id": 99_999_999}])
    records = collect(settings, settings.kafka.predictions_topic,
                      answered({"new", "none", "ghost"}))
    by_id = defaultdict(list)
    for r in records:
        by_id[r["request_id"]].append(r)
    assert {r["strategy"] for r in by_id["new"]} == {"fold-in"}
    assert not {r["movie_id"] for r in by_id["new"]} & {TOY_STORY, 260, 1196}
    assert {r["strategy"] for r in by_id["none"]} == {"popular"}
    assert len(by_id["none"]) == 3
    [ghost] = by_id["ghost"]
    assert ghost["predicted_rating"] is None and "unknown movie_id" in ghost["reason"]


BAD_REQUESTS = {
    b"nope": "malformed JSON",
    b'{"request_id": "b1", "user_id": 1}': "movie_id or k",
    b'{"request_id": "b2", "user_id": 1, "k": -3}': "k must be between",
    b'{"request_id": "b3", "user_id": 1, "k": 100000}': "k must be between",
    b'{"request_id": "b4", "user_id": "x", "k": 3}': "wrong type",
    b'{"request_id": "b5", "user_id": 1, "k": 3, "movieId": 5}': "unknown field",
    b'{"request_id": "b6", "user_id": 1, "movie_id": 3, "k": 3}': "not both",
    b'{"user_id": 1, "k": 3}': "missing field: request_id",
    (b'{"request_id": "b7", "user_id": 1, "k": 3, "exclude": ['
     + b",".join(b"%d" % i for i in range(1, 2002)) + b"]}"): "exclude lists at most",
}


def test_malformed_requests_go_to_the_dead_letter_topic(live):
    settings, _ = live
    send(settings, [*BAD_REQUESTS, {"request_id": "after-bad", "user_id": 1, "k": 1}])
    collect(settings, settings.kafka.predictions_topic, answered({"after-bad"}))
    letters = collect(settings, settings.kafka.requests_dlq_topic,
                      lambda rs: len(rs) >= len(BAD_REQUESTS))
    assert len(letters) == len(BAD_REQUESTS)
    for letter in letters:
        expected = BAD_REQUESTS[letter["raw"].encode()]
        assert expected in letter["reason"], (letter["raw"][:80], letter["reason"])


def test_hot_reload_switches_model_version_without_restart(live, version):
    settings, _ = live
    registry = ModelRegistry(settings.model.models_dir)
    successor = registry.new_version()
    shutil.copytree(registry.version_dir(version), registry.path(successor))
    meta_path = registry.path(successor) / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "version": successor}))
    registry.promote(successor, force=True)
    try:
        send(settings, [{"request_id": "after-promote", "user_id": 1, "movie_id": TOY_STORY}])
        records = collect(settings, settings.kafka.predictions_topic, answered({"after-promote"}))
        [after] = [r for r in records if r["request_id"] == "after-promote"]
        assert after["model_version"] == successor
    finally:
        registry.promote(version, force=True)


def predictor_process(settings: Settings, log, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "recommender", "predict", *args],
                            env=as_env(settings), stdout=open(log, "ab"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def test_killed_predictor_restarted_answers_every_request(trained, tmp_path):
    settings = private(trained, "kill", max_offsets_per_trigger=2000)
    ids = [f"k{i}" for i in range(3000)]
    send(settings, [{"request_id": i, "user_id": 1 + n % 600, "movie_id": TOY_STORY}
                    for n, i in enumerate(ids)])
    log = tmp_path / "predict.log"
    job = predictor_process(settings, log)
    collect(settings, settings.kafka.predictions_topic, lambda rs: len(rs) > 0, timeout_s=300)
    job.send_signal(signal.SIGKILL)
    job.wait()
    job = predictor_process(settings, log)
    try:
        records = collect(settings, settings.kafka.predictions_topic, answered(set(ids)),
                          timeout_s=300)
    finally:
        job.send_signal(signal.SIGTERM)
        job.wait(timeout=120)
    assert {r["request_id"] for r in records} == set(ids)


def test_rollover_under_steady_load_answers_everything_and_switches_version(
        trained, version, tmp_path):
    settings = private(trained, "roll", max_offsets_per_trigger=2000)
    registry = ModelRegistry(settings.model.models_dir)
    target = registry.new_version()
    shutil.copytree(registry.version_dir(version), registry.path(target))
    meta_path = registry.path(target) / "metadata.json"
    meta_path.write_text(json.dumps({**json.loads(meta_path.read_text()), "version": target}))
    old = predictor_process(settings, tmp_path / "old.log", "--instance", "old")
    sent: list[str] = []
    switched_at: list[int] = []
    stop = threading.Event()

    def steady_stream() -> None:
        n = 0
        while not stop.is_set():
            batch = [f"r{n + i}" for i in range(20)]
            send(settings, [{"request_id": i, "user_id": 1, "movie_id": TOY_STORY}
                            for i in batch])
            sent.extend(batch)
            n += len(batch)
            time.sleep(0.2)

    stream = threading.Thread(target=steady_stream)
    try:
        stream.start()
        collect(settings, settings.kafka.predictions_topic, lambda rs: len(rs) > 0,
                timeout_s=300)
        report = rollover(settings, target, timeout_s=400)
        switched_at.append(len(sent))
        time.sleep(10)
    finally:
        stop.set()
        if stream.is_alive():
            stream.join()
        if old.poll() is None:
            old.terminate()
    assert report.predecessors == ["old"] and report.version == target
    records = collect(settings, settings.kafka.predictions_topic, answered(set(sent)),
                      timeout_s=300)
    final = {}
    for r in sorted(records, key=lambda r: r["_kafka_ts"]):
        final[r["request_id"]] = r
    assert set(final) == set(sent)
    after_switch = sent[switched_at[0]:]
    assert after_switch, "no request was sent after the switch"
    assert {final[i]["model_version"] for i in after_switch} == {target}
    assert registry.current_version() == target
    for state in running_instances(settings):
        stop_instance(state)
    registry.promote(version, force=True)
