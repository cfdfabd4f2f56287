"""``recommender simulate``: offline experiments on the trained model before users see it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from recommender.cli.common import JsonOption, console, exits_cleanly, print_json, progress_bar
from recommender.settings import get_settings

if TYPE_CHECKING:
    from recommender.simulate.ab import AbReport
    from recommender.simulate.confidence import Estimate

app = typer.Typer(help="Offline experiments: compare what users would get from the model, "
                  "from popularity and from random picks, on ratings the model never saw.",
                  no_args_is_help=True)


@app.command("ab")
@exits_cleanly
def ab(
    policy: list[str] = typer.Option(
        ["model", "popularity", "random"], "--policy", "-p",
        help="A policy to compare (repeat the option): model (CURRENT), `model:<version>` (any "
        "registered version with the same split, e.g. a refused candidate), popularity, "
        "random. random is always added: every uplift is measured against it."),
    users: int = typer.Option(
        5000, "--users", min=1, help="Simulate at most this many users (a seeded sample; "
        "all users with held-out ratings when there are fewer)."),
    patience: int = typer.Option(
        5, "--patience", min=1, help="A user leaves after this many served movies in a row "
        "that they do not like (not watched, or rated below --like-threshold)."),
    max_length: int = typer.Option(
        50, "--max-length", min=1, help="A session ends after this many movies anyway. Above "
        "30 (the feed's top list) the feed's genre and popularity fallbacks come into play."),
    like_threshold: float = typer.Option(
        4.0, "--like-threshold", min=0.5, max=5.0, help="A consumed movie is liked when its "
        "held-out rating is at least this (4.0 = the training evaluation's relevance)."),
    resamples: int = typer.Option(2000, "--resamples", min=100,
                                  help="Bootstrap replicates behind each 95% interval."),
    seed: int = typer.Option(42, "--seed", help="Seed of the user sample, the feed's random "
                             "picks, the random policy and the bootstrap."),
    ratings_csv: Path | None = typer.Option(
        None, "--ratings-csv", dir_okay=False, show_default=False,
        help="Read the ratings from this MovieLens ratings.csv (movies.csv beside it) instead "
        "of the source recorded in the model's metadata. Must be the data it was trained on."),
    chart: Path | None = typer.Option(
        None, "--chart", dir_okay=False, show_default=False,
        help="Also write the comparison as a self-contained SVG file."),
    json: bool = JsonOption,
) -> None:
    """Simulate feed sessions for real users and compare policies with 95% intervals.

    Each user is a real user of the ratings the CURRENT model was trained from, cut by the
    train/held-out split recorded in the model's metadata: the training side is what the
    system knows, the held-out side (which the model never saw) decides how the user
    responds. Every policy's top list is served through the API's session feed (random pick
    from the top 30, no repeats, genre then popularity fallback). A served movie the user
    rated in the held-out data is consumed with that rating; anything else is skipped; the
    user leaves after --patience unliked movies in a row.

    Reported per policy, as mean over users [95% interval]: liked movies per session (the
    reward), hit rate, mean rating of consumed movies, session length; then the reward's
    uplift over random with a paired interval. "beats random" means the reward interval lies
    entirely above random's. Needs Spark and the ratings source (Cassandra by default).
    """
    from recommender.clients import spark_session
    from recommender.simulate import ab as sim
    from recommender.simulate.session import Rules

    settings = get_settings()
    options = sim.Options(policies=tuple(policy), max_users=users, resamples=resamples,
                          seed=seed, ratings_csv=ratings_csv,
                          rules=Rules(patience, max_length, like_threshold))
    spark = spark_session(settings, app_name="recommender-simulate")
    with progress_bar(transient=True) as bar:
        task = bar.add_task("reading ratings", total=None, rate="")
        report = sim.run(spark, settings, options, tick=lambda: bar.advance(task),
                         on_users=lambda n, p: bar.update(task, description="sessions",
                                                          total=n * p))
    if chart is not None:
        from recommender.simulate.chart import render

        chart.write_text(render(report))
    if json:
        print_json(report)
    else:
        show(report)
    if chart is not None:
        console.print(f"wrote {chart}")


def show(report: AbReport) -> None:
    """The report as a table, a column per policy, and the protocol in one line."""
    from recommender.simulate.ab import LABELS, METRICS, REWARD

    table = Table(title=f"A/B simulation: {report.users} users, CURRENT {report.current_version}")
    table.add_column("mean over users\n[95% interval]")
    for p in report.policies:
        table.add_column(p.name, no_wrap=True)
    for metric in METRICS:
        table.add_row(LABELS[metric], *(_cell(p.metrics[metric]) for p in report.policies))
    table.add_row("reward uplift vs random",
                  *(_cell(p.uplift[REWARD], signed=True) for p in report.policies))
    table.add_row("relative uplift", *("-" if p.relative_uplift is None
                                       else f"{p.relative_uplift:+.0%}"
                                       for p in report.policies))
    table.add_row("verdict", *("[bold green]beats random[/]" if p.beats_random else ""
                               for p in report.policies))
    console.print(table)
    rules, split = report.rules, report.split
    console.print(f"{report.ci_method} ({report.resamples} resamples). Sessions: top "
                  f"{report.top_n} + fallback, drop-off after {rules.patience} unliked in a "
                  f"row, max {rules.max_length}, liked = rating >= {rules.like_threshold:g}. "
                  f"Held out: {split['method']} split, {split['test_fraction']:.0%}, seed "
                  f"{split['seed']}.", highlight=False)


def _cell(est: Estimate, signed: bool = False) -> str:
    if est.mean is None:
        return "-"
    fmt = "{:+.3f}" if signed else "{:.3f}"
    if est.low is None or est.high is None:
        return fmt.format(est.mean)
    return f"{fmt.format(est.mean)}\n[{fmt.format(est.low)}, {fmt.format(est.high)}]"
