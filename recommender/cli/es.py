"""``recommender es``: Elasticsearch templates, the movie-vectors index, and retention."""

from __future__ import annotations

import typer

from recommender.cli.common import JsonOption, console, exits_cleanly, print_json
from recommender.settings import get_settings

app = typer.Typer(help="Set up and maintain the Elasticsearch indices.", no_args_is_help=True)


@app.command()
@exits_cleanly
def setup(json: bool = JsonOption) -> None:
    """Install the index templates (ratings-*, predictions-*) and create the fixed indices.

    Existing ratings and predictions indices get the fields a newer release added, so they
    are accepted before the next daily index. Idempotent; every stage that writes
    to Elasticsearch also runs it on start, for the indices it writes.
    """
    from recommender.clients import elasticsearch_client
    from recommender.indices import setup as setup_indices
    from recommender.serve.backends import es_errors

    settings = get_settings()
    with es_errors(settings):
        created = setup_indices(elasticsearch_client(settings.elasticsearch),
                                settings.elasticsearch.indices,
                                replicas=settings.elasticsearch.number_of_replicas)
    if json:
        print_json({"created": created})
    else:
        console.print(f"templates installed; created {', '.join(created) or 'no new index'}")


@app.command("publish-vectors")
@exits_cleanly
def publish_vectors(
    version: str = typer.Option(None, "--version", help="Model version (default: CURRENT)."),
    alias: str = typer.Option(None, help="Alias to publish under (default: the settings' "
                              "movie-vectors alias, under elasticsearch.index_prefix)."),
    json: bool = JsonOption,
) -> None:
    """Index a model version's item factors for kNN and switch the movie-vectors alias to it.

    Builds `movie-vectors-<version>` with titles, years and genres (Cassandra movies table,
    else the dataset files), then moves the alias atomically and deletes older indices.
    Promotion and rollback do this themselves; use it after a manual change or a failure.
    """
    from recommender.vectors import publish_version

    settings = get_settings()
    version, index, count = publish_version(
        settings, version, alias=alias or settings.elasticsearch.indices.movie_vectors)
    if json:
        print_json({"index": index, "version": version, "movies": count})
    else:
        console.print(f"published {count} movie vectors of {version} as {index}")


@app.command()
@exits_cleanly
def retention(
    days: int = typer.Option(..., "--days", min=0, help="Keep this many days of predictions."),
    json: bool = JsonOption,
) -> None:
    """Delete predictions older than --days: whole daily predictions-YYYY.MM.DD indices (by
    the index's day), and the documents of latest-predictions predicted before that day."""
    from recommender.clients import elasticsearch_client
    from recommender.indices import delete_older_than, delete_predicted_before
    from recommender.serve.backends import es_errors

    settings = get_settings()
    es = elasticsearch_client(settings.elasticsearch)
    with es_errors(settings):
        names = settings.elasticsearch.indices
        deleted = delete_older_than(es, names.predictions_prefix, days)
        latest = delete_predicted_before(es, names.latest_predictions, days)
    if json:
        print_json({"deleted": deleted, "latest_deleted": latest})
    else:
        console.print(f"deleted {len(deleted)} index(es) older than {days} days: "
                      f"{', '.join(deleted) or '-'}; {latest} latest prediction(s)")
