"""``recommender stats``: users, activity, list diversity and profiles of the serving model."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer
from rich.table import Table

from recommender.cli.common import JsonOption, console, exits_cleanly, print_json
from recommender.settings import get_settings

if TYPE_CHECKING:
    from recommender.serving_stats import Distribution, Stats


@exits_cleanly
def stats(
    k: int = typer.Option(10, "--k", min=1, max=100, help="Length of the top lists judged "
                          "for coverage and top-1 uniqueness."),
    users: int = typer.Option(20_000, "--users", min=1, help="Compute top lists for at most "
                              "this many users (a seeded sample); the other numbers always "
                              "cover every user."),
    seed: int = typer.Option(42, "--seed", help="Seed of the --users sample."),
    json: bool = JsonOption,
) -> None:
    """Statistics of the users and of what the CURRENT model recommends to them.

    From Cassandra ratings: the number of users and ratings, and ratings per user
    (min/p50/p90/max/mean). From the model, with each user's top-k computed as the API
    computes it (rated movies excluded): catalogue coverage, the share of movies the model
    knows that appear in at least one list (low = everyone sees the same few movies), and the
    share of users whose top-1 movie is nobody else's (how personal the first slot is), and
    the listed movies' median number of ratings against the catalogue's median and their mean
    rating (a model that pushes obscure movies shows it there). From
    the profile tables written after each promotion: the share of users with a "users like
    you" neighbour, and per genre the distribution of taste scores (a user's share of rating
    mass in the genre; each user's scores sum to 1). Needs Spark and Cassandra.
    """
    from recommender.clients import spark_session
    from recommender.model.registry import ModelRegistry
    from recommender.serving_stats import collect

    settings = get_settings()
    artifacts = ModelRegistry.from_settings(settings.model).load()
    spark = spark_session(settings, app_name="recommender-stats")
    with console.status("reading ratings and profiles"):
        result = collect(spark, settings, artifacts, k=k, max_users=users, seed=seed)
    if json:
        print_json(result)
    else:
        show(result)


def show(s: Stats) -> None:
    console.print(f"[bold]model {s.model_version}[/], keyspace {s.keyspace}", highlight=False)
    summary = Table("", "value", show_header=False)
    summary.add_row("users (Cassandra ratings)", f"{s.users:,}")
    summary.add_row("ratings", f"{s.ratings:,}")
    summary.add_row("users the model has factors for", f"{s.users_with_factors:,}")
    summary.add_row("movies the model knows", f"{s.catalogue:,}")
    summary.add_row(f"catalogue coverage of top-{s.k} lists ({s.list_users:,} users)",
                    f"{s.coverage_at_k:.1%}")
    summary.add_row("users whose top-1 is unique", f"{s.unique_top1_share:.1%}")
    summary.add_row(f"median ratings of a top-{s.k} movie (catalogue median)",
                    f"{_num(s.lists.rec_median_count)} ({_num(s.lists.catalogue_median_count)})")
    summary.add_row(f"mean rating of the top-{s.k} movies", _num(s.lists.rec_mean_rating, 2))
    summary.add_row('users with a "users like you" neighbour', f"{s.neighbour_share:.1%}")
    summary.add_row("users with a taste profile", f"{s.taste_users:,}")
    console.print(summary)
    dist = Table("distribution", "n", "min", "p50", "p90", "max", "mean")
    _row(dist, "ratings per user", s.ratings_per_user)
    _row(dist, "strongest genre score per user", s.top_genre_score)
    for g in s.genre_taste:
        _row(dist, f"taste score: {g.genre}", g.scores)
    console.print(dist)


def _num(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _row(table: Table, label: str, d: Distribution) -> None:
    table.add_row(label, f"{d.count:,}", *("-" if v is None else f"{v:.3g}"
                                           for v in (d.min, d.p50, d.p90, d.max, d.mean)))
