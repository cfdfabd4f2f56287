"""``recommender generate``: synthetic MovieLens-shaped ratings from a planted taste model,
to Kafka or to CSV files, for load tests beyond MovieLens's size and for model checks."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from recommender.cli.common import JsonOption, console, exits_cleanly, print_json, progress_bar
from recommender.contracts import RatingEvent
from recommender.errors import InvalidRequest
from recommender.settings import Settings, get_settings

if TYPE_CHECKING:
    from data_loading.synthetic import Catalogue


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
    from data_loading.synthetic import Catalogue
    from data_loading.synthetic import generate as synthesize

    mode = Output(output).value
    if mode == "csv" and directory is None:
        raise InvalidRequest("--output csv needs a DIRECTORY argument to write into")
    settings = get_settings()
    dataset = locate(catalogue or settings.data.dataset, data_dir)
    movies = Catalogue.from_dataset(dataset)
    events = synthesize(movies, users, seed, first_user=first_user)
    with progress_bar() as bar:
        task = bar.add_task(f"{users:,} users -> {mode}", total=None, rate="")
        if mode == "kafka":
            source = f"synthetic-seed{seed}-users{first_user}-{first_user + users - 1}"
            summary, sent, seconds = _to_kafka(settings, events, topic, source, rate,
                                               lambda n, per_s: bar.update(task, completed=n,
                                                                           rate=per_s))
        else:
            assert directory is not None
            about = {"seed": seed, "users": users, "first_user": first_user,
                     "catalogue": dataset.name}
            summary, sent, seconds = _to_csv(events, directory, movies, about,
                                             lambda n, per_s: bar.update(task, completed=n,
                                                                         rate=per_s))
    if json:
        print_json(summary)
    else:
        console.print(f"{sent:,} ratings of {users:,} synthetic users -> "
                      f"{directory if mode == 'csv' else 'Kafka'} in {seconds:.1f} s "
                      f"({sent / seconds if seconds else 0:,.0f} events/s)")


Shown = Callable[[int, str], None]  # events so far, and their rate as text


def _rate(n: int, seconds: float) -> str:
    return f"{n / seconds:,.0f} events/s" if seconds > 0 else ""


def _to_kafka(settings: Settings, events: Iterator[RatingEvent], topic: str | None,
              source: str, rate: float, show: Shown) -> tuple[object, int, float]:
    """Replay the events into the ratings topic (resumable, like ``load ratings``)."""
    from data_loading.replay import replay

    result = replay(settings, events, topic or settings.kafka.ratings_topic, source=source,
                    rate=rate, progress=lambda p: show(p.sent, _rate(p.sent, p.elapsed_s)))
    return result, result.sent, result.seconds


def _to_csv(events: Iterator[RatingEvent], directory: Path, movies: Catalogue,
            about: dict[str, object], show: Shown) -> tuple[object, int, float]:
    """Write the MovieLens-shaped CSV files and ``synthetic.json`` (``about``)."""
    from data_loading.synthetic import write_csv

    start = time.monotonic()
    sent = write_csv(_counting(events, lambda n, s: show(n, _rate(n, s))), directory, movies,
                     about)
    seconds = time.monotonic() - start
    return ({"directory": str(directory), "ratings": sent, "seconds": seconds,
             "events_per_s": sent / seconds if seconds else 0.0}, sent, seconds)


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
