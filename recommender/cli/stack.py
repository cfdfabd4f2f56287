"""``recommender stack``: the embedded Kafka, Cassandra and Elasticsearch."""

from __future__ import annotations

import typer
from rich.table import Table

from recommender.cli.common import JsonOption, console, exits_cleanly, print_json
from recommender.settings import get_settings
from recommender.stack import manager

app = typer.Typer(help="Run Kafka, Cassandra and Elasticsearch as local processes (no Docker).",
                  no_args_is_help=True)


@app.command()
@exits_cleanly
def fetch() -> None:
    """Download the Kafka, Cassandra, Elasticsearch and Spark connector jars from Maven Central.

    Needs Maven and the network once; everything is cached under the stack cache directory
    and the local Maven repository, and later commands run offline.
    """
    manager.fetch(get_settings().stack, on_event=lambda m: console.print(m))


@app.command()
@exits_cleanly
def up(json: bool = JsonOption) -> None:
    """Fetch (first time, from Maven Central), start and wait for every service.

    Idempotent: a running healthy service is reused. All-or-nothing: if a port is taken or a
    service does not come up, what this call started is stopped again and the exit code is
    non-zero.
    """
    statuses = manager.up(get_settings().stack, on_event=lambda m: console.print(m))
    print_json(statuses) if json else show(statuses)


@app.command()
@exits_cleanly
def down() -> None:
    """Stop the services `stack up` started (by pid); other processes are never touched."""
    if manager.down(get_settings().stack, on_event=lambda m: console.print(m)) == 0:
        console.print("nothing is running")


@app.command()
@exits_cleanly
def status(json: bool = JsonOption) -> None:
    """Show each service: up, version, endpoint, pid, data directory and log file."""
    statuses = manager.status(get_settings().stack)
    print_json(statuses) if json else show(statuses)


def show(statuses: list) -> None:
    table = Table("service", "up", "version", "endpoint", "pid", "log")
    for s in statuses:
        table.add_row(s.name, "[green]yes[/]" if s.up else "[red]no[/]", s.version,
                      f"{s.host}:{s.port}", str(s.pid or "-"), s.log_file)
    console.print(table)
