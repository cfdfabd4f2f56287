"""Freshness of the speed layer: how long after a rating reaches Kafka the answers of
``/users/{id}/recommendations`` reflect it.

ml-latest-small in a private keyspace, the product's default model trained on it with its
movie vectors published, then ``recommender ingest`` (streaming, the default trigger) from a
private ratings topic and ``recommender serve``, each in its own process. Per probe: a user
the model knows and the movie at the top of their current list; a 5-star rating of it is
produced to the ratings topic at t0, and the API is asked every ``POLL_S`` until an answer
reflects it: the movie is gone from the list and the user is folded in (``fold-in``) from
their whole history, new rating included. Staleness is the start of the first reflecting
request minus t0: Kafka, the API's follower of the ratings topic (``serve/histories``) and the
request. Ingest stores the same rating in Cassandra meanwhile, which is what the predictor
reads.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import httpx
import numpy as np

from bench.common import (
    begin,
    child_env,
    envelope,
    log,
    percentiles,
    table,
    target,
    warm_until_steady,
)
from bench.fixtures import (
    ML_SMALL,
    copy_model,
    install_index_templates,
    ml_small,
    prepare_keyspace,
    trained_model,
    write_ratings,
)
from bench.monitor import RssMonitor
from bench.serve import start_api
from recommender.runtime import wait_for
from recommender.settings import Settings

TARGET_S = 5.0
POLL_S = 0.05
PROBE_TIMEOUT_S = 30.0
WARMUP_PROBES, MAX_WARMUP_ROUNDS = 5, 6


def run(settings: Settings, quick: bool) -> dict[str, Any]:
    from recommender.clients import elasticsearch_client, kafka_producer
    from recommender.model.registry import ModelRegistry
    from recommender.topics import ensure_topics
    from recommender.vectors import movie_infos, publish_movie_vectors

    bench_run, clock, private = begin(settings, "freshness")
    probes = 10 if quick else 40  # measured, each for a different user
    dataset = ml_small(private)
    prepare_keyspace(private, dataset)
    write_ratings(bench_run, private, dataset.ratings_frame, ML_SMALL)
    version = copy_model(trained_model(bench_run), private)
    artifacts = ModelRegistry.from_settings(private.model).load(version)
    es = elasticsearch_client(private.elasticsearch)
    install_index_templates(private)
    publish_movie_vectors(es, artifacts, movie_infos(dataset.movies()),
                          alias=private.elasticsearch.indices.movie_vectors,
                          replicas=private.elasticsearch.number_of_replicas)
    es.close()
    ensure_topics(private, private.kafka.ratings_topic, private.kafka.ratings_dlq_topic)
    ingest = bench_run.start([sys.executable, "-m", "recommender", "ingest"],
                             bench_run.tmp / "freshness" / "ingest.log", env=child_env(private))
    api = start_api(bench_run, private)
    producer = kafka_producer(private.kafka)
    users = iter(int(u) for u in np.random.default_rng(7).permutation(artifacts.user_ids))
    with RssMonitor() as rss:
        rss.track("ingest (Spark driver)", ingest.pid)
        rss.track("API (uvicorn, one process)", api["proc"].pid)
        first = probe(api["url"], producer, private, next(users), timeout_s=300)
        log(f"freshness: first probe (ingest's first batch) reflected after {first:.1f}s")

        def warm_round() -> float:
            median = float(np.median([probe(api["url"], producer, private, next(users))
                                      for _ in range(WARMUP_PROBES)]))
            log(f"freshness: warm-up round, median {median:.2f}s")
            return median

        warmup = warm_until_steady(warm_round, higher_is_better=False,
                                   max_rounds=MAX_WARMUP_ROUNDS)
        results = []
        for n in range(1, probes + 1):
            user = next(users)
            results.append(probe(api["url"], producer, private, user))
            log(f"freshness: probe {n}/{probes}: user {user}, {results[-1]:.2f}s")
    producer.close()
    staleness = percentiles(results)
    return envelope(
        "freshness", private, quick, clock,
        dataset={"name": ML_SMALL, "rows": len(dataset.ratings_frame), "probes": probes},
        config={"poll_s": POLL_S, "probe_timeout_s": PROBE_TIMEOUT_S,
                "trigger_interval": private.spark.trigger_interval,
                "model_version": version},
        metrics={"staleness_s": staleness, "probes_s": [round(r, 3) for r in results],
                 "first_probe_s": round(first, 2),
                 "warmup_round_medians_s": [round(w, 2) for w in warmup if w is not None]},
        targets=[target("slowest probe: rating produced -> /recommendations reflects it",
                        staleness["max"], TARGET_S, "<=", "s")],
        tables=[table("Staleness of /users/{id}/recommendations after a new rating (s)",
                      ["probes", "p50", "p95", "max"],
                      [[probes, staleness["p50"], staleness["p95"], staleness["max"]]])],
        rss={"freshness": rss},
        notes=["A probe is reflected when the rated movie has left the user's list and the "
               "answer's strategy is fold-in: the vectors were folded in from a history that "
               "holds the new rating. Polls every config.poll_s, so figures are upper bounds "
               "by up to that much.",
               "Not in the figures: the first probe, which waits for ingest's first "
               "micro-batch (the Spark job's start), and warm-up rounds of "
               f"{WARMUP_PROBES} probes until their median stops improving by 5% "
               "(metrics.warmup_round_medians_s), as the other benchmarks warm their JVMs."])


def probe(url: str, producer: Any, settings: Settings, user: int,
          timeout_s: float = PROBE_TIMEOUT_S) -> float:
    """Rate the user's top movie 5 stars through Kafka; seconds until the API reflects it."""
    from recommender.contracts import RatingEvent

    with httpx.Client(base_url=url, timeout=10) as client:
        top = client.get(f"/users/{user}/recommendations", params={"k": 10}).json()
        movie = int(top["items"][0]["movie_id"])
        now = int(time.time() * 1000)
        event = RatingEvent(event_id=f"bench:{user}:{movie}:{now}", user_id=user,
                            movie_id=movie, rating=5.0, event_time=now, source="bench")
        sent = time.perf_counter()
        producer.send(settings.kafka.ratings_topic, key=event.key(), value=event.to_json())
        producer.flush()
        asked = [sent]

        def reflected() -> bool:
            asked[0] = time.perf_counter()
            body = client.get(f"/users/{user}/recommendations", params={"k": 10}).json()
            return (body["strategy"] == "fold-in"
                    and movie not in {int(i["movie_id"]) for i in body["items"]})

        wait_for(reflected, f"user {user}'s rating of movie {movie} to show", timeout_s,
                 poll_s=POLL_S)
        return asked[0] - sent


if __name__ == "__main__":
    from bench.run_all import run_one

    run_one("freshness")
