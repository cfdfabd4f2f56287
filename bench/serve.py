"""Serving: the built-in shipper (predictions topic -> Elasticsearch) and the HTTP API.

1. Shipper: a private predictions topic pre-filled with predictions of the ml-latest-small model
   (real users, movies, titles, predicted ratings), shipped by ``recommender.shipper.Shipper`` into
   a private index with the real mapping; documents/s from the first to the last bulk request.
2. API: ``recommender serve`` in its own process (private index names), loaded from another
   process (``bench.loadgen``, asyncio): 200 requests/s on a fixed schedule to
   ``/users/{id}/predictions`` and ``/users/{id}/recommendations``, and the raw Elasticsearch
   search that ``/predictions`` wraps, with the same client and concurrency, so the difference
   is what the API adds. Then each at the highest rate a closed loop reaches.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson

from bench import common
from bench.fixtures import ML_SMALL, ml_small, serving_ml_small
from bench.monitor import RssMonitor, wait_for_quiet_stack
from recommender.runtime import wait_for
from recommender.settings import Settings

TARGET_DOCS_PER_S = 20_000
TARGET_P99_MS = 20.0
TARGET_LIVE_RPS = 1_000
TARGET_LIVE_CPU_MS = 2.0
TARGET_NEW_USER_P99_MS = 25.0
LIVE = "/users/{id}/recommendations"
LIVE_NEW = "/users/{id}/recommendations, new users (fold-in)"
NEW_USERS, NEW_USER_RATINGS, NEW_USER_BASE = 200, 5, 2_000_000_000
RATE = 200
RATINGS_PER_S = 20  # ratings produced while /recommendations is loaded: answers must change
OPEN_CONCURRENCY = 32  # connections for the fixed-rate runs: enough that none waits for one
CLOSED_CONCURRENCY = 8


def sizes(quick: bool) -> dict[str, Any]:
    if quick:
        return {"predictions": 50_000, "load_s": 15,
                "saturation_s": 8, "warmup_s": 10, "max_warmup_rounds": 3}
    return {"predictions": 200_000, "load_s": 60, "saturation_s": 30,
            "warmup_s": 15, "max_warmup_rounds": 10}


def run(settings: Settings, quick: bool) -> dict[str, Any]:
    from recommender.clients import elasticsearch_client
    from recommender.model.registry import ModelRegistry
    from recommender.topics import ensure_topics
    from recommender.vectors import movie_infos, publish_movie_vectors

    bench_run = common.workspace(settings)
    clock = common.Clock()
    size = sizes(quick)
    private, _, version = serving_ml_small(bench_run, "serve")
    artifacts = ModelRegistry.from_settings(private.model).load(version)
    movies = movie_infos(ml_small(private).movies())
    # The warm-up ships into the measured indices: the point is a warm index, not a new one.
    warm = bench_run.settings("serve-warmup", cassandra={"keyspace": private.cassandra.keyspace},
                              elasticsearch={"index_prefix": private.elasticsearch.index_prefix})
    for topics in (private, warm):
        ensure_topics(topics, topics.kafka.predictions_topic, topics.kafka.predictions_dlq_topic)
    ensure_topics(private, private.kafka.ratings_topic)  # the API follows it (RatingStream)
    n = size["predictions"]
    es = elasticsearch_client(private.elasticsearch)
    settled: dict[str, float] = {}
    names = private.elasticsearch.indices
    feed = PredictionFeed(artifacts, movies)
    shipped, ship_rss = measure_shipper(private, warm, feed, n, size, settled)
    shipped["cpu_bound_ceiling_documents_per_s"] = ship_rss.ceiling(shipped["documents"])
    es.indices.refresh(index=[names.predictions_alias, names.latest_predictions])
    shipped["history_index_count"] = es.count(index=names.predictions_alias)["count"]
    publish_movie_vectors(es, artifacts, movies, alias=names.movie_vectors,
                          replicas=private.elasticsearch.number_of_replicas)
    api = start_api(bench_run, private)
    users = [int(u) for u in artifacts.user_ids]
    newcomers = add_new_users(private, artifacts, NEW_USERS)
    try:
        with RssMonitor() as api_rss:
            api_rss.track("API (uvicorn, one process)", api["proc"].pid)
            api_rss.track_stack(private)
            loads = api_loads(bench_run, private, api["url"], names.latest_predictions, users,
                              newcomers, size, api_rss, api["proc"].pid, settled)
    finally:
        remove_users(private, newcomers)
    es.close()
    by = {(r["name"], r["mode"]): r for r in loads}
    return common.envelope(
        "serve", private, quick, clock,
        dataset={"predictions": n, "users": len(users),
                 "predictions_per_user": round(n / len(users)),
                 "model": f"explicit ALS on {ML_SMALL}"},
        config={**size, "rate": RATE, "open_loop_connections": OPEN_CONCURRENCY,
                "closed_loop_in_flight": CLOSED_CONCURRENCY, "shipper_max_records": 5000,
                "seconds_waited_for_a_quiet_stack": settled},
        metrics={"shipper": shipped, "api": loads},
        targets=serve_targets(shipped, by),
        tables=serve_tables(shipped, feed, loads, by),
        rss={"shipper": ship_rss, "API": api_rss},
        notes=SERVE_NOTES,
    )


def serve_targets(shipped: dict[str, Any],
                  by: dict[tuple[str, str], Any]) -> list[dict[str, Any]]:
    api_p99 = by[("/users/{id}/predictions", "fixed")]["latency_ms"]["p99"]
    live_fixed, live_closed = by[(LIVE, "fixed")], by[(LIVE, "closed")]
    new_fixed = by[(LIVE_NEW, "fixed")]
    return [
        common.target("shipper documents/s into Elasticsearch (2 per prediction)",
                      shipped["documents_per_s"], TARGET_DOCS_PER_S, ">=", "docs/s"),
        common.target(f"/users/{{id}}/predictions p99 at {RATE} req/s", api_p99, TARGET_P99_MS,
                      "<=", "ms"),
        common.target(f"{LIVE} p99 at {RATE} req/s", live_fixed["latency_ms"]["p99"],
                      TARGET_P99_MS, "<=", "ms"),
        common.target(f"{LIVE} closed-loop throughput", live_closed["achieved_rps"],
                      TARGET_LIVE_RPS, ">=", "req/s"),
        common.target(f"{LIVE} CPU per request (API + Elasticsearch + Cassandra) at {RATE} req/s",
                      round(sum(live_fixed["cpu_ms_per_request"].values()), 2),
                      TARGET_LIVE_CPU_MS, "<=", "ms"),
        common.target(f"{LIVE_NEW} p99 at {RATE} req/s", new_fixed["latency_ms"]["p99"],
                      TARGET_NEW_USER_P99_MS, "<=", "ms"),
    ]


def serve_tables(shipped: dict[str, Any], feed: PredictionFeed, loads: list[dict[str, Any]],
                 by: dict[tuple[str, str], Any]) -> list[dict[str, Any]]:
    rows = [[r["name"], "200 req/s" if r["mode"] == "fixed" else
             f"closed loop, {CLOSED_CONCURRENCY} in flight", r["requests"], r["ok"],
             r["achieved_rps"], *[r["latency_ms"][p] for p in ("p50", "p95", "p99", "max")]]
            for r in loads]
    cpu_rows = [[r["name"], r["mode"], *r["cpu_ms_per_request"].values(),
                 r["cpu_bound_ceiling_rps"],
                 ", ".join(str(w) for w in r["warmup_cpu_ms_per_request"]) or "-"]
                for r in loads]
    overhead = []
    for mode in ("fixed", "closed"):
        api_run = by[("/users/{id}/predictions", mode)]
        raw = by[("Elasticsearch search behind /predictions", mode)]
        overhead.append([mode, *[_diff(api_run["latency_ms"][p], raw["latency_ms"][p])
                                 for p in ("p50", "p99")],
                         _ratio(api_run["achieved_rps"], raw["achieved_rps"])])
    return [
        common.table("Shipper", ["measure", "value"], [
            ["predictions measured (after the warm-up ones)", shipped["predictions"]],
            ["predictions indexed", shipped["indexed"]],
            ["documents written (history + latest)", shipped["documents"]],
            ["predictions/s (first to last bulk)", shipped["predictions_per_s"]],
            ["documents/s (first to last bulk)", shipped["documents_per_s"]],
            ["documents/s (run() start, incl. ES check and group join)",
             shipped["documents_per_s_incl_start"]],
            ["bulk requests", shipped["batches"]],
            ["CPU-bound ceiling on an idle host, docs/s (estimate: documents x cores / CPU "
             "s of shipper, Elasticsearch, Kafka)",
             shipped["cpu_bound_ceiling_documents_per_s"]],
            ["warm-up rounds (not measured, the same predictions again): documents/s",
             ", ".join(f"{r['documents_per_s'] or 0:,}" for r in shipped["warmup_rounds"])],
            ["warm-up rounds: Elasticsearch CPU µs per document",
             ", ".join(str(r["elasticsearch_cpu_us_per_document"])
                       for r in shipped["warmup_rounds"])],
            ["history index count == every prediction shipped",
             shipped["history_index_count"] == feed.produced]]),
        common.table("API and raw Elasticsearch under load (latency in ms, from the scheduled "
                     "start)", ["endpoint", "load", "requests", "200 OK", "achieved req/s", "p50",
                                "p95", "p99", "max"], rows),
        common.table("CPU per request (ms) while each run lasted, and the CPU-bound ceiling on an "
                     "idle host (requests x cores / CPU s of API, Elasticsearch, Cassandra)",
                     ["endpoint", "load", "API", "Elasticsearch", "Cassandra", "ceiling req/s",
                      "warm-up rounds before (CPU ms per request, all three)"],
                     cpu_rows),
        common.table("What the API adds to the raw search", ["load", "p50 +ms", "p99 +ms",
                                                             "throughput API / raw"], overhead),
    ]


SERVE_NOTES = [
    "Each measurement starts once Kafka, Cassandra and Elasticsearch together use "
    "under 0.2 cores and the whole host under 0.5 "
    "(config.seconds_waited_for_a_quiet_stack): merges of what the previous step "
    "wrote are not billed to the next.",
    "Each prediction is indexed twice (its daily history index and "
    "latest-predictions); documents/s counts both, predictions/s is half of it.",
    "Warm-up, not measured, until the figure stops improving by 5% on the best "
    "earlier round (at most config.max_warmup_rounds): the shipper re-ships the same "
    "config.predictions other predictions with a new consumer group each round "
    "until Elasticsearch's CPU per document stops falling "
    "(metrics.shipper.warmup_rounds; from a cold start it falls for millions of "
    "documents), "
    "each endpoint in rounds of config.warmup_s of its fixed-rate load "
    "(warmup_cpu_ms_per_request: API + Elasticsearch + Cassandra CPU per request) "
    "before its first measured run (Elasticsearch's JIT is cold after a start).",
    "Both the API and the raw-search runs go through the same load-generator process "
    "(asyncio, keep-alive HTTP/1.1) at the same rate and concurrency; the client's "
    "own overhead is in both.",
    "At a fixed rate above what the server sustains, requests queue in the client "
    "and latency grows with the run's length: compare the achieved rate first.",
    "/recommendations reads a user's ratings from Cassandra once, keeps them current "
    "from the ratings topic (api.history_cache_users) and scores every movie in the API "
    "process (api.in_process_max_movies; Elasticsearch kNN beyond); an answer is given "
    "again while the user's ratings and the model are unchanged. During every "
    f"/recommendations run {RATINGS_PER_S} ratings/s of the run's users go to the ratings "
    "topic (ratings_produced_during_run): each makes its user's next answer a new "
    "fold-in, the rest are kept answers, as page views between two ratings. Its raw "
    "reference is a Cassandra read of the user's ratings plus the in-process scoring, "
    f"what every request cost before the cache. New users have {NEW_USER_RATINGS} "
    "ratings each in Cassandra.",
    "The API runs with uvicorn's access log at info level, as `recommender serve`."]


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a - b, 2)


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if not a or not b else round(a / b, 3)


class PredictionFeed:
    """Pair predictions as the predictor writes them, for random (user, movie) pairs; the
    predictions of each ``produce`` call have request ids of their own."""

    def __init__(self, artifacts: Any, movies: dict[int, Any]) -> None:
        self.artifacts, self.movies = artifacts, movies
        self.rng = np.random.default_rng(5)
        self.produced = 0

    def produce(self, settings: Settings, n: int) -> None:
        """``n`` new predictions into ``settings``' predictions topic."""
        from recommender.clients import kafka_producer

        artifacts = self.artifacts
        users = self.rng.integers(0, len(artifacts.user_ids), n)
        items = self.rng.integers(0, len(artifacts.item_ids), n)
        rating = artifacts.rating  # what a predicted rating is
        scores = np.einsum("ij,ij->i", rating.user_factors[users], rating.item_factors[items])
        now = int(time.time() * 1000)
        producer = kafka_producer(settings.kafka, linger_ms=50, batch_size=512 * 1024)
        topic = settings.kafka.predictions_topic
        for i, (u, m, score) in enumerate(zip(artifacts.user_ids[users].tolist(),
                                              artifacts.item_ids[items].tolist(),
                                              scores.tolist(), strict=True),
                                          start=self.produced):
            title, year, genres = self.movies.get(m, (None, None, []))
            producer.send(topic, key=f"ship-{i}".encode(), value=orjson.dumps({
                "request_id": f"ship-{i}", "user_id": u, "movie_id": m, "rank": None,
                "predicted_rating": round(min(max(score, 0.5), 5.0), 3),
                "score": round(score, 4), "title": title, "year": year,
                "genres": list(genres), "model_version": artifacts.version,
                "strategy": "als", "requested_at": now - 50 - i % 1000,
                "predicted_at": now + i % 1000}))
        producer.flush(timeout=300)
        producer.close()
        self.produced += n


def measure_shipper(settings: Settings, warm: Settings, feed: PredictionFeed, n: int,
                    size: dict[str, Any], settled: dict[str, float]
                    ) -> tuple[dict[str, Any], RssMonitor]:
    """The product's shipper over ``n`` new predictions, once Elasticsearch is warm.

    Warm-up: ``n`` other predictions, in ``warm``'s topic, shipped again and again by a new
    consumer group each round (re-deliveries, which overwrite the same documents) until
    Elasticsearch's CPU per document stops falling (``warm_until_steady``). Then the measured
    shipper, in the product's group, over predictions produced after the warm-up; its rate
    runs from the first poll that returned records to the last acknowledgement.
    """
    from recommender.shipper import Shipper

    def ship(on: Settings, group_id: str) -> Any:
        shipper = Shipper(on, group_id=group_id)
        return shipper.run(stop_when=lambda: shipper.stats.indexed + shipper.stats.dead_letters
                           >= n, idle_exit_s=60)

    def span_s(stats: Any) -> float:
        return (stats.last_ack or 0.0) - (stats.first_poll or 0.0)

    def docs_per_s(stats: Any) -> int | None:
        span = span_s(stats)
        return round(stats.documents / span) if span > 0 else None

    rounds: list[dict[str, Any]] = []

    def warm_round() -> float | None:
        with RssMonitor() as rss:
            rss.track_stack(settings)
            stats = ship(warm, f"{warm.kafka.shipper_group}-{len(rounds)}")
        es_us = 1e6 * rss.cpu().get("elasticsearch", 0.0) / max(stats.documents, 1)
        rounds.append({"documents_per_s": docs_per_s(stats),
                       "elasticsearch_cpu_us_per_document": round(es_us, 1)})
        common.log(f"shipper warm-up round: {rounds[-1]}")
        return es_us or None

    common.log(f"producing {n:,} predictions for the warm-up into {warm.kafka.predictions_topic}")
    feed.produce(warm, n)
    common.warm_until_steady(warm_round, higher_is_better=False,
                             max_rounds=size["max_warmup_rounds"])
    common.log(f"producing {n:,} predictions into {settings.kafka.predictions_topic}")
    feed.produce(settings, n)
    settled["before shipper"] = wait_for_quiet_stack(settings)
    with RssMonitor() as rss:
        rss.track("shipper (bench process, python)", os.getpid(), children=False)
        rss.track_stack(settings)
        stats = ship(settings, settings.kafka.shipper_group)
    span = span_s(stats)
    since_start = (stats.last_ack or stats.started) - stats.started
    result = {"predictions": n, "warmup_rounds": rounds, "indexed": stats.indexed,
              "documents": stats.documents, "dead_letters": stats.dead_letters,
              "batches": stats.batches, "es_retries": stats.es_retries,
              "seconds": round(span, 2),
              "predictions_per_s": round(stats.indexed / span) if span > 0 else None,
              "documents_per_s": docs_per_s(stats),
              "documents_per_s_incl_start": round(stats.documents / since_start)
              if since_start > 0 else None}
    common.log(f"shipper: {result}")
    return result, rss


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_api(bench_run: Any, settings: Settings) -> dict[str, Any]:
    """``recommender serve`` in its own process, on the settings' private names."""
    port = free_port()
    log_file = bench_run.tmp / "serve" / "api.log"
    proc = bench_run.start([sys.executable, "-m", "recommender", "serve", "--port", str(port)],
                           log_file, env=common.child_env(settings))
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"the API exited with {proc.returncode}: "
                               f"{log_file.read_text(errors='replace')[-2000:]}")
        try:  # both routes once: the model, the catalogue and the connections are loaded
            return all(httpx.get(f"{url}/users/1/{route}", timeout=10).status_code == 200
                       for route in ("predictions", "recommendations"))
        except httpx.HTTPError:
            return False

    waited = wait_for(answers, "the API to answer", 180)
    common.log(f"API on {url} answered after {waited:.1f}s")
    return {"proc": proc, "url": url}


def es_search(settings: Settings, index: str) -> dict[str, Any]:
    """The request ``store.user_predictions`` sends, with ``{user}`` for the user id, to the
    first node of ``elasticsearch.urls`` that answers (the load generator talks to one)."""
    from recommender.clients import try_urls
    from recommender.serve.queries import LATEST_ORDER, ONLY_SOURCES
    from recommender.serve.schemas import DEFAULT_K

    headers = {}
    es = settings.elasticsearch
    if es.api_key:
        headers["Authorization"] = f"ApiKey {es.api_key.get_secret_value()}"
    elif es.username:
        import base64

        token = f"{es.username}:{es.password.get_secret_value() if es.password else ''}"
        headers["Authorization"] = f"Basic {base64.b64encode(token.encode()).decode()}"

    def answering(url: str) -> str:
        httpx.get(url, headers=headers, timeout=10)
        return url.rstrip("/")

    node = try_urls(es.urls, answering, (httpx.TransportError,))
    return {"url": f"{node}/{index}/_search?ignore_unavailable=true"
                   f"&filter_path={','.join(ONLY_SOURCES)}"
                   "&allow_no_indices=true", "method": "POST", "headers": headers,
            "body": {"query": {"term": {"user_id": "{user}"}}, "sort": LATEST_ORDER,
                     "size": DEFAULT_K}}


def api_loads(bench_run: Any, settings: Settings, url: str, latest_index: str, users: list[int],
              newcomers: list[int], size: dict[str, Any], rss: RssMonitor, api_pid: int,
              settled: dict[str, float]) -> list[dict[str, Any]]:
    """Every endpoint at the fixed rate, then in a closed loop, each once the stack is quiet;
    before its first run each endpoint gets rounds of ``warmup_s`` of the same load, not
    measured, until the CPU it costs per request stops falling (``warm_until_steady``: the
    JITs of Elasticsearch and the stack are cold after a start);
    per run also the CPU the API, Elasticsearch and Cassandra spent per request (the load
    generator's own CPU excluded)."""
    served_by = ["API", "elasticsearch", "cassandra"]

    def measured(spec: dict[str, Any], monitors: list[RssMonitor]
                 ) -> tuple[dict[str, Any], dict[str, float]]:
        rate = RATINGS_PER_S if spec["url"] == live else 0
        with RssMonitor() as run_rss, RatingStream(settings, spec["users"], rate) as stream:
            run_rss.track("API", api_pid)
            run_rss.track_stack(settings)
            result = loadgen(bench_run, spec, [*monitors, run_rss])
        result["ratings_produced_during_run"] = stream.sent
        cpu, served = run_rss.cpu(), max(result["requests"], 1)
        result["cpu_bound_ceiling_rps"] = run_rss.ceiling(result["requests"], served_by)
        return result, {label: round(1000 * cpu.get(label, 0.0) / served, 2)
                        for label in served_by}

    live = f"{url}/users/{{user}}/recommendations"
    endpoints = [("/users/{id}/predictions", {"url": f"{url}/users/{{user}}/predictions"}),
                 ("Elasticsearch search behind /predictions", es_search(settings, latest_index)),
                 (LIVE, {"url": live}), (LIVE_NEW, {"url": live, "users": newcomers})]
    out = []
    for mode in ("fixed", "closed"):
        for name, request in endpoints:
            spec = {"users": users, **request, "warmup_s": 2.0,
                    "rate": RATE if mode == "fixed" else None,
                    "duration_s": size["load_s"] if mode == "fixed" else size["saturation_s"],
                    "concurrency": OPEN_CONCURRENCY if mode == "fixed" else CLOSED_CONCURRENCY}
            warm: list[float | None] = []
            if mode == "fixed":  # the first run of this endpoint: warm the JITs first
                def warm_round(spec: dict[str, Any] = spec, name: str = name) -> float:
                    _, cpu = measured({**spec, "duration_s": size["warmup_s"]}, [])
                    common.log(f"{name} warm-up round: {cpu} CPU ms per request")
                    return round(sum(cpu.values()), 2)

                warm = common.warm_until_steady(warm_round, higher_is_better=False,
                                                max_rounds=size["max_warmup_rounds"])
            settled[f"before {name} ({mode})"] = wait_for_quiet_stack(settings)
            result, cpu_ms = measured(spec, [rss])
            result.update(name=name, mode=mode, cpu_ms_per_request=cpu_ms,
                          warmup_cpu_ms_per_request=warm)
            common.log(f"{name} [{mode}]: {result['achieved_rps']} req/s, {result['statuses']}, "
                       f"latency {result['latency_ms']}")
            out.append(result)
    return out


class RatingStream:
    """Ratings of random users produced to the ratings topic at ``rate`` per second while
    the block runs, as a site's users go on rating: each invalidates the API's kept answer
    for its user, so the next request folds the user in again (0: none)."""

    def __init__(self, settings: Settings, users: list[int], rate: float) -> None:
        import threading

        self.settings, self.users, self.rate, self.sent = settings, users, rate, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RatingStream:
        if self.rate:
            self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        if self.rate:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        from recommender.clients import kafka_producer
        from recommender.contracts import RatingEvent

        rng = np.random.default_rng(13)
        topic = self.settings.kafka.ratings_topic
        producer = kafka_producer(self.settings.kafka)
        started = time.monotonic()
        try:
            while not self._stop.wait(0.05):
                due = int((time.monotonic() - started) * self.rate)
                for _ in range(due - self.sent):
                    user = int(rng.choice(self.users))
                    movie, stars = int(rng.integers(1, 2_000)), float(rng.integers(1, 11)) / 2
                    now = int(time.time() * 1000)
                    event = RatingEvent(f"bench:{user}:{movie}:{now}", user, movie, stars, now,
                                        source="bench")
                    producer.send(topic, key=event.key(), value=event.to_json())
                    self.sent += 1
        finally:
            producer.flush(30)
            producer.close()


def add_new_users(settings: Settings, artifacts: Any, n: int) -> list[int]:
    """``n`` users the model does not know, each with ``NEW_USER_RATINGS`` ratings of popular
    movies in Cassandra (seeded): the API folds each in on every request."""
    from recommender.clients import cassandra_session

    rng = np.random.default_rng(11)
    pool = artifacts.item_ids[artifacts.popularity_order[:500]]
    ids = [NEW_USER_BASE + i for i in range(n)]
    session = cassandra_session(settings.cassandra, settings.cassandra.keyspace)
    insert = session.prepare("INSERT INTO ratings (user_id, movie_id, rating) VALUES (?, ?, ?)")
    for user in ids:
        for movie in rng.choice(pool, NEW_USER_RATINGS, replace=False):
            session.execute(insert, (user, int(movie), float(rng.choice([3.0, 4.0, 5.0]))))
    session.cluster.shutdown()
    return ids


def remove_users(settings: Settings, ids: list[int]) -> None:
    from recommender.clients import cassandra_session

    session = cassandra_session(settings.cassandra, settings.cassandra.keyspace)
    for user in ids:
        session.execute("DELETE FROM ratings WHERE user_id = %s", (user,))
    session.cluster.shutdown()


def loadgen(bench_run: Any, spec: dict[str, Any], monitors: list[RssMonitor]) -> dict[str, Any]:
    """One ``bench.loadgen`` process; its JSON summary."""
    work = bench_run.tmp / "serve" / f"load-{time.monotonic_ns()}"
    work.mkdir(parents=True)
    (work / "spec.json").write_text(json.dumps(spec))
    proc = subprocess.Popen([sys.executable, "-m", "bench.loadgen", str(work / "spec.json"),
                             str(work / "out.json")], env=common.child_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for rss in monitors:
        rss.track("load generator (asyncio)", proc.pid)
    out, _ = proc.communicate(timeout=spec["duration_s"] + 300)
    if proc.returncode != 0:
        raise RuntimeError(f"the load generator failed ({proc.returncode}): {out[-2000:]}")
    return json.loads(Path(work / "out.json").read_text())


if __name__ == "__main__":
    from bench.run_all import run_one

    run_one("serve")
