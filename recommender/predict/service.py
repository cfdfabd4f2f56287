"""Running one predictor instance until it is told to stop (SIGTERM or SIGINT)."""

from __future__ import annotations

import signal
from typing import Any

from recommender.settings import Settings
from recommender.streaming import run_query


def run_predictor(settings: Settings, *, instance: str = "main", version: str | None = None,
                  from_group: bool = False, allow_no_model: bool = False) -> None:
    """Start the query and block; a SIGTERM stops it between micro-batches, never mid-batch."""
    from recommender.clients import cassandra_session, spark_session
    from recommender.predict.job import Predictor
    from recommender.predict.rollover import committed_offsets
    from recommender.topics import ensure_topics

    kafka = settings.kafka
    ensure_topics(settings, kafka.requests_topic, kafka.requests_dlq_topic,
                  kafka.predictions_topic)
    # histories and movies come from Cassandra: wait for it rather than exit mid-restart
    cassandra_session(settings.cassandra, wait_s=settings.cassandra.connect_wait_s
                      ).cluster.shutdown()
    spark = spark_session(settings, app_name=f"recommender-predict-{instance}")
    predictor = Predictor(spark, settings, instance=instance, pinned_version=version,
                          allow_no_model=allow_no_model)
    query = predictor.start(committed_offsets(settings) if from_group else None)
    asked_after: list[int] = []  # the number of finished batches when a stop was asked

    def ask_to_stop(signum: int, _frame: Any) -> None:
        asked_after.append(predictor.state.batches)

    signal.signal(signal.SIGTERM, ask_to_stop)
    signal.signal(signal.SIGINT, ask_to_stop)

    def between_batches() -> bool:
        """Idle, or a batch finished since the stop was asked. Batches that take longer than
        the trigger interval run back to back and the query is never seen idle. A batch that
        started in between may be cut short: nothing is lost (the checkpoint does not record
        it), and what a successor or a restart answers again Elasticsearch keeps once, by
        request id."""
        return bool(asked_after) and (not query.status["isTriggerActive"]
                                      or predictor.state.batches > asked_after[0])

    try:
        run_query(query, stop_when=between_batches, poll_s=0.2)
    finally:
        predictor.close()
        spark.stop()
