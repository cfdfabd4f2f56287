"""The product's jobs as separate processes on a benchmark's private names, so each has its own
JVM and its memory and CPU are measured apart from the benchmark process.

    python -m bench.jobs ingest [--once]   # the ingest job; --once drains the topic, then exits
    python -m bench.jobs ship              # the predictions shipper
    python -m bench.jobs train             # prints the new version's metadata

Settings, private Elasticsearch names (``elasticsearch.index_prefix``) included, come from
``RECOMMENDER_*`` variables (``recommender.settings.as_env``).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import threading


def ingest(once: bool) -> None:
    """``recommender ingest``; ``once`` drains what is in the topic and exits."""
    from recommender.ingest_job import run_ingest
    from recommender.settings import get_settings

    settings = get_settings()
    run_ingest(settings, available_now=once)


def ship() -> None:
    from recommender.settings import get_settings
    from recommender.shipper import Shipper

    settings = get_settings()
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    Shipper(settings).run(stopping.is_set)


def train() -> None:
    """The training pipeline from Cassandra into the private registry, without the side
    effects on shared names (profiles, the movie-vectors alias) that ``recommender train``
    has; the result is printed as one JSON line."""
    import time

    from recommender.clients import spark_session
    from recommender.model import snapshot
    from recommender.model.registry import ModelRegistry
    from recommender.settings import get_settings
    from recommender.train import pipeline

    settings = get_settings()
    spark = spark_session(settings, app_name="recommender-bench-train")
    started = time.perf_counter()
    ratings = snapshot.read_cassandra(spark, settings.cassandra.keyspace)
    result = pipeline.run(ratings, settings, pipeline.TrainOptions(),
                          source="cassandra", registry=ModelRegistry.from_settings(settings.model),
                          on_event=lambda m: logging.info("%s", m))
    print(json.dumps({"version": result.version, "wall_s": round(time.perf_counter() - started, 2),
                      "metadata": result.metadata}, default=str), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.jobs", description=__doc__.split(
        "\n")[0])
    sub = parser.add_subparsers(dest="job", required=True)
    ingest_parser = sub.add_parser("ingest", help="the streaming ingest job")
    ingest_parser.add_argument("--once", action="store_true",
                               help="drain the topic, then exit")
    sub.add_parser("ship", help="the predictions shipper")
    sub.add_parser("train", help="one training run from Cassandra")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.job == "ingest":
        ingest(args.once)
    elif args.job == "ship":
        ship()
    else:
        train()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
