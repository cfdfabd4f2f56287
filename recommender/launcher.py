"""The all-in-one launcher: the whole pipeline alive on one machine with one command.

Stack up -> indices, topics, schema -> movie metadata -> ingest, shipper and API as
supervised background jobs -> ratings replayed at a fixed rate -> the first model trained
and promoted as soon as enough ratings arrived -> the predictor -> simulated website
requests -> a live terminal view. Every job is a plain ``recommender`` sub-command, so the
demo runs exactly what an operator would run by hand.
"""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from recommender.errors import DatasetError, RecommenderError
from recommender.settings import Settings, as_env
from recommender.supervisor import Job, Supervisor

if TYPE_CHECKING:
    from recommender.monitor import Sample


@dataclass(frozen=True)
class DemoOptions:
    dataset: str = "ml-latest-small"
    rate: float = 2000.0
    requests_per_s: float = 20.0
    train_after: int = 50_000
    duration_s: float | None = None


def run_dir(settings: Settings) -> Path:
    return settings.stack.state_dir.parent / "demo"


def background_jobs(settings: Settings) -> list[Job]:
    api = settings.api
    return [Job("ingest", ("ingest",)), Job("ship", ("ship",)),
            Job("serve", ("serve", "--host", api.host, "--port", str(api.port)))]


PREDICTOR = Job("predict", ("predict",))
STACK_MARKER = "stack-started-by-demo"


def prepare(settings: Settings, say: Callable[[str], None]) -> None:
    """Stack, Elasticsearch templates, topics and Cassandra schema: all idempotent."""
    from recommender.cassandra_schema import ensure_schema
    from recommender.clients import cassandra_session, elasticsearch_client
    from recommender.indices import setup as setup_indices
    from recommender.stack import manager
    from recommender.topics import ensure_topics

    already_up = all(s.up for s in manager.status(settings.stack))
    manager.up(settings.stack, on_event=say)
    if not already_up:  # --stop takes down only a stack this demo started
        run_dir(settings).mkdir(parents=True, exist_ok=True)
        (run_dir(settings) / STACK_MARKER).touch()
    setup_indices(elasticsearch_client(settings.elasticsearch), settings.elasticsearch.indices,
                  replicas=settings.elasticsearch.number_of_replicas)
    k = settings.kafka
    ensure_topics(settings, k.ratings_topic, k.ratings_dlq_topic, k.requests_topic,
                  k.requests_dlq_topic, k.predictions_topic, k.predictions_dlq_topic)
    session = cassandra_session(settings.cassandra)
    try:
        ensure_schema(session, settings)
    finally:
        session.cluster.shutdown()


def load_dataset(settings: Settings, name: str, say: Callable[[str], None]):
    from data_loading.datasets import locate
    from data_loading.metadata import load_metadata

    try:
        dataset = locate(name, settings.data.data_dir)
    except DatasetError as exc:
        raise DatasetError(
            f"{exc}\nNo MovieLens at hand? Generate a synthetic one instead:\n"
            "  recommender generate --users 2000 --output csv /tmp/synthetic\n"
            "  recommender demo --dataset /tmp/synthetic") from None
    say(f"dataset {dataset.name}: loading movie metadata into Cassandra and Elasticsearch")
    load_metadata(settings, dataset)
    return dataset


def send_requests(settings: Settings, users: list[int], per_s: float,
                  stop: threading.Event) -> None:
    """A website's traffic: mostly top-10 lists, some single-movie predictions, a few users
    nobody has seen (cold start)."""
    import orjson

    from recommender.clients import kafka_producer

    producer = kafka_producer(settings.kafka)
    rng = random.Random(7)
    movies = [1, 260, 296, 318, 356, 480, 527, 593, 1196, 2571]
    try:
        while not stop.is_set():
            tick = time.monotonic()
            for _ in range(max(1, int(per_s))):
                user = rng.choice(users) if rng.random() > 0.05 else rng.randint(10**6, 2 * 10**6)
                body = {"request_id": uuid.uuid4().hex, "user_id": user,
                        "requested_at": int(time.time() * 1000)}
                body.update({"k": 10} if rng.random() < 0.7 else {"movie_id": rng.choice(movies)})
                producer.send(settings.kafka.requests_topic, key=str(user).encode(),
                              value=orjson.dumps(body))
            producer.flush()
            stop.wait(max(0.0, 1.0 - (time.monotonic() - tick)))
    finally:
        producer.close()


def ingested_since(settings: Settings, since_ms: int) -> int:
    """Ratings this demo run has ingested (other runs' documents in ratings-* do not count)."""
    from recommender.clients import elasticsearch_client

    es = elasticsearch_client(settings.elasticsearch, request_timeout=5)
    try:
        ratings = f"{settings.elasticsearch.indices.ratings_prefix}*"
        return es.count(index=ratings, ignore_unavailable=True,
                        query={"range": {"ingested_at": {"gte": since_ms}}})["count"]
    except Exception:  # noqa: BLE001 - not there yet: keep waiting
        return 0
    finally:
        es.close()


def train_first_model(settings: Settings, supervisor: Supervisor, options: DemoOptions,
                      say: Callable[[str], None], stop: threading.Event) -> None:
    """Wait for ``train_after`` ingested ratings, train and promote, start the predictor."""
    from recommender.model.registry import ModelRegistry

    if ModelRegistry(settings.model.models_dir).current_version() is None:
        since_ms = int(time.time() * 1000)
        while not stop.is_set():
            if ingested_since(settings, since_ms) >= options.train_after:
                break
            stop.wait(3)
        if stop.is_set():
            return
        say(f"{options.train_after}+ ratings ingested: training the first model")
        # with taste profiles and similar users: the Users dashboard and /users/{id}/similar
        supervisor.start(Job("train", ("train",)))
        while supervisor.pid("train") and not stop.is_set():
            stop.wait(2)
    if ModelRegistry(settings.model.models_dir).current_version() is None:
        say(f"training did not promote a model; see {supervisor.log_file('train')}")
        return
    supervisor.start(PREDICTOR)
    say("predictor started")


def record_summary(settings: Settings, last: Sample | None, peak_rss_bytes: int) -> Path:
    """What the run reached, as JSON beside the job logs: the benchmark report and operators
    read it after the fact."""
    summary = {"finished_at": int(time.time() * 1000), "peak_rss_bytes": peak_rss_bytes,
               "last_sample": None if last is None else asdict(last)}
    path = run_dir(settings) / "summary.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2))
    return path


def stop_demo(settings: Settings, say: Callable[[str], None]) -> None:
    from recommender.stack import manager

    stopped = Supervisor(run_dir(settings)).stop_all()
    say(f"stopped jobs: {', '.join(stopped) or 'none were running'}")
    marker = run_dir(settings) / STACK_MARKER
    if marker.exists():
        manager.down(settings.stack, on_event=say)
        marker.unlink()
    else:
        say("the stack was already running before the demo: left running")


def run_demo(settings: Settings, options: DemoOptions, say: Callable[[str], None],
             view: Callable[[Supervisor, threading.Event], None]) -> None:
    """Start everything, then hand over to ``view`` until the duration ends or Ctrl-C."""
    from data_loading.replay import replay

    prepare(settings, say)
    dataset = load_dataset(settings, options.dataset, say)
    supervisor = Supervisor(run_dir(settings), env=as_env(settings))
    jobs = background_jobs(settings)
    for job in jobs:
        say(f"{job.name}: pid {supervisor.start(job)}, log {supervisor.log_file(job.name)}")
    stop = threading.Event()
    users = sorted({int(u) for u in dataset.ratings_frame["user_id"].unique()})
    threads = [
        threading.Thread(target=replay, name="replay", daemon=True, args=(
            settings, dataset.ratings()), kwargs={"rate": options.rate, "resume": False}),
        threading.Thread(target=train_first_model, name="train", daemon=True,
                         args=(settings, supervisor, options, say, stop)),
        threading.Thread(target=send_requests, name="requests", daemon=True,
                         args=(settings, users, options.requests_per_s, stop)),
    ]
    for thread in threads:
        thread.start()
    try:
        view(supervisor, stop)
    finally:
        stop.set()
        for thread in threads[1:]:
            thread.join(timeout=30)
    if not supervisor.pid(PREDICTOR.name):
        raise RecommenderError("the demo ended before a model was trained and the predictor "
                               f"started; see the logs in {run_dir(settings)}")
