"""The product's jobs as separate processes on a benchmark's private names, so each has its own
JVM and its memory and CPU are measured apart from the benchmark process.

    python -m bench.jobs ingest --prefix P [--once]   # ratings documents into P-ratings-*
    python -m bench.jobs ship --prefix P              # predictions into P's private index
    python -m bench.jobs train                        # prints the new version's metadata

Settings come from ``RECOMMENDER_*`` variables (``recommender.settings.as_env``).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import threading

from bench.fixtures import private_predictions_index, private_ratings_indices


def ingest(prefix: str, once: bool) -> None:
    """``recommender ingest`` writing its Elasticsearch documents to private indices;
    ``once`` drains what is in the topic and exits."""
    from recommender.ingest import run_ingest
    from recommender.settings import get_settings

    settings = get_settings()
    with private_ratings_indices(settings, prefix):
        run_ingest(settings, available_now=once)


def ship(prefix: str) -> None:
    from recommender.settings import get_settings
    from recommender.ship import Shipper

    settings = get_settings()
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    with private_predictions_index(settings, prefix) as (_index, _alias, targets):
        Shipper(settings, targets=targets).run(stopping.is_set)


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
    ingest_parser.add_argument("--prefix", required=True)
    ingest_parser.add_argument("--once", action="store_true",
                               help="drain the topic, then exit")
    ship_parser = sub.add_parser("ship", help="the predictions shipper")
    ship_parser.add_argument("--prefix", required=True)
    sub.add_parser("train", help="one training run from Cassandra")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.job == "ingest":
        ingest(args.prefix, args.once)
    elif args.job == "ship":
        ship(args.prefix)
    else:
        train()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
