"""``recommender ship``: the predictions topic into Elasticsearch (Logstash's job, built in)."""

from __future__ import annotations

import logging
import signal
from typing import Any

import typer

from recommender.cli.common import console, exits_cleanly
from recommender.settings import get_settings


@exits_cleanly
def ship(
    group: str = typer.Option(None, help="Consumer group (default kafka.shipper_group); "
                              "processes in the same group share the partitions."),
    idle_exit: float = typer.Option(None, help="Exit after this many idle seconds."),
) -> None:
    """Index predictions into the daily predictions-* indices, exactly once per document.

    Offsets are committed after Elasticsearch acknowledged each batch; documents are keyed
    by request_id (+movie_id), so re-deliveries overwrite. Waits and retries while
    Elasticsearch is down; rejected documents go to kafka.predictions_dlq_topic.
    """
    from recommender.shipper import Shipper
    from recommender.topics import ensure_topics

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    settings = get_settings()
    ensure_topics(settings, settings.kafka.predictions_topic, settings.kafka.predictions_dlq_topic)
    stopping = {"asked": False}

    def ask_to_stop(signum: int, _frame: Any) -> None:
        stopping["asked"] = True

    signal.signal(signal.SIGTERM, ask_to_stop)
    signal.signal(signal.SIGINT, ask_to_stop)
    stats = Shipper(settings, group_id=group).run(lambda: stopping["asked"], idle_exit)
    console.print(f"shipped {stats.indexed} predictions ({stats.per_s(stats.indexed):,.0f}/s) "
                  f"as {stats.documents} documents ({stats.per_s(stats.documents):,.0f}/s), "
                  f"{stats.dead_letters} dead letters, {stats.es_retries} Elasticsearch retries")
