"""``recommender stack``: the embedded Kafka, Cassandra and Elasticsearch."""

from __future__ import annotations

import typer
from rich.table import Table

from recommender.cli.common import JsonOption, console, exits_cleanly, print_json
from recommender.errors import StackError
from recommender.settings import Settings, get_settings
from recommender.stack import manager

app = typer.Typer(help="Run Kafka, Cassandra and Elasticsearch as local processes (no Docker).",
                  no_args_is_help=True)

SecureOption = typer.Option(
    None, "--secure/--plain", show_default=False,
    help="The secure stack (SASL/TLS, authentication, a least-privilege account per "
    "component) or the plain one. [default: stack.secure, RECOMMENDER_STACK__SECURE]")


def settings_for(secure: bool | None) -> Settings:
    """The process settings, with the stack mode the command line asked for."""
    settings = get_settings()
    if secure is None:
        return settings
    stack = settings.stack.model_copy(update={"secure": secure})
    return settings.model_copy(update={"stack": stack})


def announce(message: str) -> None:
    console.print(message)


@app.command()
@exits_cleanly
def fetch() -> None:
    """Download the Kafka, Cassandra, Elasticsearch and Spark connector jars from Maven Central.

    Needs Maven and the network once; everything is cached under the stack cache directory
    and the local Maven repository, and later commands run offline.
    """
    manager.fetch(get_settings().stack, on_event=announce)


@app.command()
@exits_cleanly
def up(secure: bool | None = SecureOption, json: bool = JsonOption) -> None:
    """Fetch (first time, from Maven Central), start and wait for every service.

    Idempotent: a running healthy service is reused. All-or-nothing: if a port is taken or a
    service does not come up, what this call started is stopped again and the exit code is
    non-zero. The secure stack also generates its secrets (first time), creates the
    components' accounts, and provisions the configured topics, keyspace and index templates
    with each component's rights on them; `recommender stack env --secure --as COMPONENT`
    then prints a component's settings.
    """
    from recommender.stack.provision import provision

    settings = settings_for(secure)
    statuses = manager.up(settings.stack, on_event=announce)
    if settings.stack.secure:
        provision(settings, on_event=announce)
    print_json(statuses) if json else show(statuses)


@app.command()
@exits_cleanly
def down(secure: bool | None = SecureOption) -> None:
    """Stop the services `stack up` started (by pid); other processes are never touched."""
    if manager.down(settings_for(secure).stack, on_event=announce) == 0:
        console.print("nothing is running")


@app.command()
@exits_cleanly
def status(secure: bool | None = SecureOption, json: bool = JsonOption) -> None:
    """Show each service: up, version, endpoint, pid, data directory and log file."""
    statuses = manager.status(settings_for(secure).stack)
    print_json(statuses) if json else show(statuses)


@app.command()
@exits_cleanly
def env(
    secure: bool | None = SecureOption,
    account: str = typer.Option(
        None, "--as", show_default=False,
        help="Component whose credentials to include: loader, ingest, trainer, predictor, "
        "shipper or api. Without it: endpoints and CA only."),
) -> None:
    """Print `export RECOMMENDER_...` lines that point a process at this stack.

    Secrets are referenced by file path (`*_FILE` settings), never printed. Use as
    `eval "$(recommender stack env --secure --as ingest)"`.
    """
    from recommender.stack.connect import env_lines

    stack = settings_for(secure).stack
    try:
        lines = env_lines(stack, account)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--as") from None
    print("\n".join(lines))


@app.command()
@exits_cleanly
def provision(secure: bool | None = SecureOption) -> None:
    """Create the configured topics, keyspace, tables and index templates on the secure stack
    and grant each component its rights on them (`stack up --secure` does it for the names
    configured then; run this after renaming topics or the keyspace)."""
    from recommender.stack.provision import provision as provision_names

    settings = settings_for(secure)
    if not settings.stack.secure:
        raise StackError("only the secure stack has accounts to provision: add --secure or "
                         "set RECOMMENDER_STACK__SECURE=true")
    provision_names(settings, on_event=announce)


def show(statuses: list) -> None:
    table = Table("service", "up", "version", "endpoint", "pid", "log")
    for s in statuses:
        table.add_row(s.name, "[green]yes[/]" if s.up else "[red]no[/]", s.version,
                      f"{s.host}:{s.port}", str(s.pid or "-"), s.log_file)
    console.print(table)
