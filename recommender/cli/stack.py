"""``recommender stack``: the embedded Kafka, Cassandra and Elasticsearch, single-node or
as a local cluster with a Spark standalone master and workers."""

from __future__ import annotations

import typer
from rich.table import Table

from recommender.cli.common import JsonOption, console, exits_cleanly, print_json
from recommender.errors import StackError
from recommender.settings import Settings, get_settings
from recommender.stack import manager

app = typer.Typer(help="Run Kafka, Cassandra and Elasticsearch as local processes (no Docker): "
                  "one node each, or --nodes 3 for a local cluster of each plus Spark "
                  "standalone.", no_args_is_help=True)

SecureOption = typer.Option(
    None, "--secure/--plain", show_default=False,
    help="The secure stack (SASL/TLS, authentication, a least-privilege account per "
    "component) or the plain one. [default: stack.secure, RECOMMENDER_STACK__SECURE]")
NodesOption = typer.Option(
    None, "--nodes", min=1, max=9, show_default=False,
    help="Nodes of each server: 1 is the embedded single-node stack; 3 is a local cluster "
    "(Kafka, Cassandra and Elasticsearch on 127.0.0.1-3, a Spark master and 2 workers) in its "
    "own state dir and ports. [default: stack.nodes, RECOMMENDER_STACK__NODES]")


def settings_for(secure: bool | None, nodes: int | None = None) -> Settings:
    """The process settings, with the stack mode the command line asked for."""
    settings = get_settings()
    asked = {k: v for k, v in {"secure": secure, "nodes": nodes}.items() if v is not None}
    if not asked:
        return settings
    try:
        stack = type(settings.stack).model_validate({**settings.stack.model_dump(
            exclude_unset=True), **asked})
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
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
def up(secure: bool | None = SecureOption, nodes: int | None = NodesOption,
       json: bool = JsonOption) -> None:
    """Fetch (first time, from Maven Central), start and wait for every service.

    Idempotent: a running healthy service is reused. All-or-nothing: if a port is taken or a
    service does not come up, what this call started is stopped again and the exit code is
    non-zero. The secure stack also generates its secrets (first time), creates the
    components' accounts, and provisions the configured topics, keyspace and index templates
    with each component's rights on them; `recommender stack env --secure --as COMPONENT`
    then prints a component's settings. `--nodes 3` starts the local cluster, which first
    checks that its servers fit in the memory available; `recommender stack env --nodes 3`
    then prints the settings that point every job at it.
    """
    from recommender.stack.provision import provision

    settings = settings_for(secure, nodes)
    statuses = manager.up(settings.stack, on_event=announce)
    if settings.stack.secure:
        provision(settings, on_event=announce)
    print_json(statuses) if json else show(statuses)


@app.command()
@exits_cleanly
def down(secure: bool | None = SecureOption, nodes: int | None = NodesOption) -> None:
    """Stop the services `stack up` started (by pid); other processes are never touched."""
    if manager.down(settings_for(secure, nodes).stack, on_event=announce) == 0:
        console.print("nothing is running")


@app.command()
@exits_cleanly
def status(secure: bool | None = SecureOption, nodes: int | None = NodesOption,
           json: bool = JsonOption) -> None:
    """Show each server process: role, up, version, endpoint, pid, data directory and log."""
    statuses = manager.status(settings_for(secure, nodes).stack)
    print_json(statuses) if json else show(statuses)


@app.command()
@exits_cleanly
def env(
    secure: bool | None = SecureOption,
    nodes: int | None = NodesOption,
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

    stack = settings_for(secure, nodes).stack
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
    table = Table("service", "role", "up", "version", "endpoint", "pid", "log")
    for s in statuses:
        table.add_row(s.name, s.role, "[green]yes[/]" if s.up else "[red]no[/]", s.version,
                      f"{s.host}:{s.port}", str(s.pid or "-"), s.log_file)
    console.print(table)
