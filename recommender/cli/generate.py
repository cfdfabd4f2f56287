"""``recommender generate``: synthetic MovieLens-shaped ratings from a planted taste model,
to Kafka or to CSV files, for load tests beyond MovieLens's size and for model checks."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from enum import StrEnum
from pathlib import Path

import typer

from recommender.cli.common import JsonOption, console, exits_cleanly, print_json, progress_bar
from recommender.contracts import RatingEvent
from recommender.errors import InvalidRequest
from recommender.settings import get_settings


class Output(StrEnum):
    kafka = "kafka"
    csv = "csv"


@exits_cleanly
def generate(
    users: int = typer.Option(
        ..., "--users", "-n", min=1,
        help="How many synthetic users to generate. Memory stays constant (one user at a "
        "time), so 10,000,000 is fine; each rates ~20 movies on average (heavy-tailed)."),
    seed: int = typer.Option(
        0, "--seed", min=0,
        help="Random seed. The same seed and options always give the same events, and "
        "data_loading.synthetic.planted_taste(catalogue, user, seed) gives a user's truth."),
    output: Output = typer.Option(
        Output.kafka, "--output", "-o",
        help="kafka: produce to the ratings topic (resumable like `load ratings`). "
        "csv: write ratings.csv, movies.csv, links.csv and synthetic.json into DIRECTORY, "
        "loadable later with `recommender load ratings --dataset DIRECTORY`."),
    directory: Path | None = typer.Argument(
        None, file_okay=False, show_default=False,
        help="Output folder for --output csv (created if missing)."),
    rate: float = typer.Option(
        0, "--rate", min=0, help="With --output kafka: events per second; 0 = as fast as "
        "possible."),
    topic: str | None = typer.Option(
        None, "--topic", show_default=False,
        help="With --output kafka: topic to produce to. [default: the ratings topic]"),
    first_user: int = typer.Option(
        1_000_001, "--first-user", min=1,
        help="Id of the first synthetic user; the default keeps them apart from MovieLens "
        "users (ml-25m's largest id is 162,541) when both go to the same topic."),
    catalogue: str | None = typer.Option(
        None, "--catalogue", show_default=False,
        help="Dataset whose movies are rated and whose rating counts set their popularity. "
        "[default: RECOMMENDER_DATA__DATASET, ml-latest-small]"),
    data_dir: Path | None = typer.Option(
        None, "--data-dir", file_okay=False, show_default=False,
        help="Folder that holds the catalogue dataset. [env: RECOMMENDER_DATA__DATA_DIR]"),
    json: bool = JsonOption,
) -> None:
    """Generate ratings of synthetic users with known tastes, to Kafka or CSV.

    Each user gets a taste over genres, a popularity bias and an activity level; ratings come
    from a low-rank model of that taste, so a trained model can be checked against the truth.
    Timestamps increase through the stream.
    """
    from data_loading.datasets import locate
    from data_loading.replay import ReplayProgress, replay
    from data_loading.synthetic import Catalogue, write_csv
    from data_loading.synthetic import generate as synthesize

    mode = Output(output).value
    if mode == "csv" and directory is None:
        raise InvalidRequest("--output csv needs a DIRECTORY argument to write into")
    settings = get_settings()
    ds = locate(catalogue or settings.data.dataset, data_dir)
    cat = Catalogue.from_dataset(ds)
    events = synthesize(cat, users, seed, first_user=first_user)
    source = f"synthetic-seed{seed}-users{first_user}-{first_user + users - 1}"
    with progress_bar() as bar:
        task = bar.add_task(f"{users:,} users -> {mode}", total=None, rate="")
        if mode == "kafka":
            def show(p: ReplayProgress) -> None:
                per_s = f"{p.sent / p.elapsed_s:,.0f} events/s" if p.elapsed_s > 0 else ""
                bar.update(task, completed=p.sent, rate=per_s)

            result = replay(settings, events, topic or settings.kafka.ratings_topic,
                            source=source, rate=rate, progress=show)
            summary: object = result
            sent, seconds = result.sent, result.seconds
        else:
            assert directory is not None
            counted = _counting(events, lambda n, s: bar.update(
                task, completed=n, rate=f"{n / s:,.0f} events/s" if s > 0 else ""))
            start = time.monotonic()
            sent = write_csv(counted, directory, cat, {
                "seed": seed, "users": users, "first_user": first_user, "catalogue": ds.name})
            seconds = time.monotonic() - start
            summary = {"directory": str(directory), "ratings": sent, "seconds": seconds,
                       "events_per_s": sent / seconds if seconds else 0.0}
    if json:
        print_json(summary)
    else:
        console.print(f"{sent:,} ratings of {users:,} synthetic users -> "
                      f"{directory if mode == 'csv' else 'Kafka'} in {seconds:.1f} s "
                      f"({sent / seconds if seconds else 0:,.0f} events/s)")


def _counting(events: Iterator[RatingEvent],
              report: Callable[[int, float], None]) -> Iterator[RatingEvent]:
    """Pass events through, calling ``report(count, seconds)`` every 10,000 and at the end."""
    start, count = time.monotonic(), 0
    for event in events:
        yield event
        count += 1
        if count % 10_000 == 0:
            report(count, time.monotonic() - start)
    report(count, time.monotonic() - start)
