"""``recommender report``: a static HTML summary of the model and the pipeline."""

from __future__ import annotations

from pathlib import Path

import typer

from recommender.cli.common import console, exits_cleanly
from recommender.settings import get_settings


@exits_cleanly
def report(
    output: Path = typer.Option(Path("recommender-report.html"), "--output", "-o",
                                envvar="REPORT_OUTPUT", help="The HTML file to write.",
                                dir_okay=False),
) -> None:
    """Write one self-contained HTML file: the serving model's metrics against the baselines
    (from its metadata.json) and ratings/predictions per minute over the last hour (from
    Elasticsearch). What is missing (no model yet, Elasticsearch down) is said in the file
    and here; the file is written either way.
    """
    from recommender.dashboard.html_report import write

    result = write(get_settings(), output)
    for problem in (result.model_problem, result.throughput_problem):
        if problem:
            console.print(f"[yellow]warning:[/] {problem}", highlight=False)
    console.print(f"wrote {output}")
