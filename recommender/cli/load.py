"""``recommender load``: MovieLens ratings into Kafka, movie metadata into Cassandra and
Elasticsearch."""

from __future__ import annotations

from pathlib import Path

import typer

from recommender.cli.common import JsonOption, console, exits_cleanly, print_json, progress_bar
from recommender.settings import get_settings

app = typer.Typer(help="Load MovieLens: ratings into Kafka (`ratings`), movies and tags into "
                  "Cassandra and Elasticsearch (`metadata`). Run `metadata` first.",
                  no_args_is_help=True)

DatasetOption = typer.Option(
    None, "--dataset", "-d", show_default=False,
    help="MovieLens release: ml-latest-small (100,836 ratings; the default), ml-100k, ml-1m, "
    "ml-20m, ml-25m, ml-latest; or a directory holding ratings.csv and movies.csv, such as "
    "the output of `recommender generate --output csv`. [env: RECOMMENDER_DATA__DATASET]")
DataDirOption = typer.Option(
    None, "--data-dir", file_okay=False, show_default=False,
    help="Folder that holds `<dataset>/` (e.g. ../shared/data). Without it the dataset is looked "
    "up in the user cache and otherwise downloaded once from GroupLens and checked against its "
    "sha256. [env: RECOMMENDER_DATA__DATA_DIR]")


@app.command()
@exits_cleanly
def ratings(
    dataset: str | None = DatasetOption,
    data_dir: Path | None = DataDirOption,
    topic: str | None = typer.Option(
        None, "--topic", show_default=False,
        help="Kafka topic to produce to; created with the configured partition count if "
        "missing. [default: the ratings topic, RECOMMENDER_KAFKA__RATINGS_TOPIC]"),
    rate: float = typer.Option(
        0, "--rate", min=0,
        help="Events per second; 0 sends as fast as Kafka acknowledges. Use e.g. 200 to "
        "watch the pipeline and dashboards update live."),
    speedup: float | None = typer.Option(
        None, "--speedup", min=0.000001, show_default=False,
        help="Keep the original time gaps between ratings, divided by this factor "
        "(86400: one day of MovieLens per second). A single wait never exceeds 2 s, so "
        "months without ratings do not stall the replay. Combines with --rate as a cap."),
    limit: int | None = typer.Option(
        None, "--limit", min=1, show_default=False,
        help="Send at most this many events in this run; run again to send the next ones."),
    no_resume: bool = typer.Option(
        False, "--no-resume",
        help="Start from the first event even if an earlier run already delivered some. "
        "By default a rerun skips the events Kafka acknowledged before (recorded per topic "
        "and dataset in the state directory), so an interrupted load can simply be rerun."),
    include_tags: bool = typer.Option(
        False, "--include-tags",
        help="Interleave the dataset's tags (event_type 'tag', no rating) with the ratings, "
        "in time order. Only the CSV releases have tags."),
    json: bool = JsonOption,
) -> None:
    """Replay a MovieLens dataset's ratings into Kafka in timestamp order.

    Each rating becomes one RatingEvent (JSON, key = user id). Events are in the order they
    happened, so a replay is the history of the site played back; the same dataset always
    gives the same events with the same ids, which makes reruns harmless downstream.
    """
    from data_loading.datasets import locate
    from data_loading.replay import ReplayProgress, replay

    settings = get_settings()
    located = locate(dataset or settings.data.dataset, data_dir)
    stream = located.events(include_tags=include_tags)
    topic = topic or settings.kafka.ratings_topic
    with progress_bar() as bar:
        task = bar.add_task(f"{located.name} -> {topic}", total=None, rate="")
        sized = False

        def show(p: ReplayProgress) -> None:
            nonlocal sized
            if not sized:  # the skip count is known once replay has read the progress file
                todo = max(len(stream) - p.skipped, 0)
                bar.update(task, total=min(todo, limit) if limit else todo)
                sized = True
            per_s = f"{p.sent / p.elapsed_s:,.0f} events/s" if p.elapsed_s > 0 else ""
            bar.update(task, completed=p.sent, rate=per_s)

        result = replay(settings, stream, topic, source=located.name + ("+tags" if include_tags
                                                                        else ""),
                        rate=rate, speedup=speedup, limit=limit, resume=not no_resume,
                        progress=show)
    if json:
        print_json(result)
        return
    console.print(f"sent {result.sent:,} events of {located.name} to {topic} in "
                  f"{result.seconds:.1f} s ({result.events_per_s:,.0f} events/s)")
    if result.skipped:
        console.print(f"skipped {result.skipped:,} events an earlier run already delivered "
                      "(--no-resume sends them again)")
    if not result.exhausted:
        console.print(f"stopped at --limit {limit}; run again to send the next events")


@app.command()
@exits_cleanly
def metadata(
    dataset: str | None = DatasetOption,
    data_dir: Path | None = DataDirOption,
    index: str | None = typer.Option(
        None, "--index", show_default=False,
        help="Elasticsearch index for the movie documents. [default: movies, the index the "
        "API and the Kibana dashboards read]"),
    json: bool = JsonOption,
) -> None:
    """Write movies (title, year, genres, IMDb/TMDb ids) and tags to Cassandra and index the
    movies, with their tags and rating count and mean, in Elasticsearch.

    Creates the keyspace, tables and index when missing. Idempotent: rows and documents are
    keyed by movie id, so a rerun overwrites them.
    """
    from data_loading.datasets import locate
    from data_loading.metadata import load_metadata

    settings = get_settings()
    located = locate(dataset or settings.data.dataset, data_dir)
    with console.status(f"loading {located.name} metadata"):
        result = load_metadata(settings, located,
                               index=index or settings.elasticsearch.indices.movies,
                               on_event=lambda msg: console.print(msg))
    if json:
        print_json(result)
    else:
        console.print(f"{result.movies:,} movies and {result.tags:,} tags of {located.name} loaded "
                      f"in {result.seconds:.1f} s")
