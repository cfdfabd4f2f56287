"""The ``recommender`` command: one sub-command per pipeline stage. This module only
assembles; each command group lives in its own module of this package."""

from __future__ import annotations

import typer

from recommender.cli import demo, generate, ingest, load, predict, ship, stack

app = typer.Typer(
    name="recommender",
    help="Real-time movie recommendations: Kafka -> Spark -> Cassandra/Elasticsearch.\n\n"
    "Start with `recommender stack up`, then `recommender demo`. Settings come from "
    "RECOMMENDER_* environment variables or recommender.toml (see README).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(stack.app, name="stack")
app.add_typer(load.app, name="load")
app.command("generate")(generate.generate)
app.command()(ingest.ingest)
app.command()(predict.predict)
app.command()(predict.rollover)
app.command()(ship.ship)
app.command()(demo.demo)


def main() -> None:
    app()
