"""``recommender ingest``: the streaming job from the ratings topic to Cassandra and ES."""

from __future__ import annotations

import logging

import typer

from recommender.cli.common import console, exits_cleanly
from recommender.settings import get_settings


@exits_cleanly
def ingest(
    once: bool = typer.Option(
        False, "--once", help="Drain what is in the topic now (Trigger.AvailableNow), then exit."
    ),
) -> None:
    """Stream rating and tag events from Kafka into Cassandra and the ratings-* ES indices.

    Malformed events (bad JSON, missing fields, rating outside 0.5-5, unknown event_type) go
    to the ratings dead-letter topic with their bytes, offset and reason; the job keeps
    running. Progress is checkpointed under spark.checkpoint_dir/ingest: a restarted job
    resumes where it stopped and, thanks to idempotent writes, duplicates nothing.
    """
    from recommender.ingest_job import run_ingest

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    settings = get_settings()
    console.print(f"ingest: {settings.kafka.ratings_topic} -> Cassandra "
                  f"{settings.cassandra.keyspace}.ratings and Elasticsearch ratings-*")
    run_ingest(settings, available_now=once)
