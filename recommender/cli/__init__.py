"""The ``recommender`` command: one sub-command per pipeline stage, listed in pipeline order.
This module only assembles; each command group lives in its own module of this package."""

from __future__ import annotations

import typer

from recommender.cli import (
    dashboards,
    demo,
    es,
    generate,
    ingest,
    load,
    predict,
    report,
    serve,
    ship,
    simulate,
    stack,
    stats,
    train,
)

app = typer.Typer(
    name="recommender",
    help="Real-time movie recommendations: Kafka -> Spark -> Cassandra/Elasticsearch.\n\n"
    "New here? `recommender demo` runs everything. Settings come from RECOMMENDER_* "
    "environment variables or recommender.toml (see README).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",  # help paragraphs re-flow to the terminal width
)
app.command()(demo.demo)
app.add_typer(stack.app, name="stack")
app.add_typer(load.app, name="load")
app.command("generate")(generate.generate)
app.command()(ingest.ingest)
app.command()(train.train)
app.add_typer(train.models, name="models")
app.add_typer(simulate.app, name="simulate")
app.command()(stats.stats)
app.command()(predict.predict)
app.command()(predict.rollover)
app.command()(ship.ship)
app.add_typer(es.app, name="es")
app.command()(serve.serve)
app.add_typer(dashboards.app, name="dashboards")
app.command()(report.report)


def main() -> None:
    app()
