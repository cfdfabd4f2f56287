"""``recommender predict`` and ``recommender rollover``."""

from __future__ import annotations

import logging

import typer

from recommender.cli.common import JsonOption, console, exits_cleanly, print_json
from recommender.settings import get_settings


@exits_cleanly
def predict(
    instance: str = typer.Option("main", help="Instance name: its checkpoint and state live "
                                 "under spark.checkpoint_dir/predict/INSTANCE."),
    model: str = typer.Option(None, "--model", help="Serve this version until it becomes "
                              "CURRENT, then follow CURRENT (used by rollover)."),
    from_group: bool = typer.Option(False, "--from-group", help="A new checkpoint starts at "
                                    "the predictor group's committed offsets, not the earliest."),
    allow_no_model: bool = typer.Option(False, "--allow-no-model", help="With no promoted "
                                        "model, serve only the popularity fallback."),
) -> None:
    """Answer prediction requests from Kafka with enriched predictions, in micro-batches.

    Reads kafka.requests_topic (at most spark.max_offsets_per_trigger per batch, every
    spark.trigger_interval), writes kafka.predictions_topic. Follows the registry's CURRENT
    model without restarting. Bad requests go to kafka.requests_dlq_topic with a reason.
    SIGTERM/Ctrl-C stops it after the running micro-batch.
    """
    from recommender.predict.service import run_predictor

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    settings = get_settings()
    console.print(f"predictor {instance}: {settings.kafka.requests_topic} -> "
                  f"{settings.kafka.predictions_topic}")
    run_predictor(settings, instance=instance, version=model, from_group=from_group,
                  allow_no_model=allow_no_model)


@exits_cleanly
def rollover(
    to: str = typer.Option(None, "--to", help="Model version (default: the newest one)."),
    timeout: float = typer.Option(300.0, help="Seconds the successor has to catch up."),
    json: bool = JsonOption,
) -> None:
    """Replace the running predictor(s) with a new one, with no gap and nothing lost.

    Starts a successor from the predictor group's committed offsets, waits until it has
    caught up with every running predictor, stops them after their current micro-batch and
    promotes the version. Requests answered twice during the overlap carry the same
    request_id, so Elasticsearch keeps one document per request.
    """
    from recommender.predict.rollover import rollover as do_rollover

    report = do_rollover(get_settings(), to, timeout_s=timeout)
    if json:
        print_json(report)
    else:
        console.print(f"rolled over to {report.version}: instance {report.successor} caught up "
                      f"in {report.caught_up_s:.1f}s; stopped {report.predecessors or 'none'}")
