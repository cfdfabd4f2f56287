"""``recommender dashboards``: the Kibana saved objects (install, export, build)."""

from __future__ import annotations

from pathlib import Path

import typer

from recommender.cli.common import JsonOption, console, exits_cleanly, print_json
from recommender.dashboard import kibana

app = typer.Typer(help="Kibana dashboards for ratings, predictions and users "
                  "(kibana_dashboards/*.ndjson). The built-in one is at /dashboard of "
                  "`recommender serve`.", no_args_is_help=True)

KibanaUrl = typer.Option("http://localhost:5601", "--kibana-url", envvar="KIBANA_URL",
                         help="Kibana's base URL (with the space path, e.g. .../s/ops).")
ApiKey = typer.Option(None, "--api-key", envvar="KIBANA_API_KEY",
                      help="Kibana API key, when security is on.")
Directory = typer.Option(kibana.DEFAULT_DIR, "--dir", envvar="KIBANA_DASHBOARDS_DIR",
                         help="Where the *.ndjson files are.", file_okay=False)


@app.command()
@exits_cleanly
def install(kibana_url: str = KibanaUrl, api_key: str = ApiKey, directory: Path = Directory,
            json: bool = JsonOption) -> None:
    """Import every *.ndjson file into Kibana (overwrite: re-running updates in place)."""
    files = sorted(directory.glob("*.ndjson"))
    if not files:
        raise kibana.KibanaError(f"no *.ndjson files in {directory}")
    result = kibana.install(kibana_url, files, api_key)
    if json:
        print_json(result)
    else:
        console.print(f"imported {result.get('successCount', 0)} objects from "
                      f"{len(files)} files into {kibana_url}")


@app.command()
@exits_cleanly
def export(kibana_url: str = KibanaUrl, api_key: str = ApiKey,
           directory: Path = Directory) -> None:
    """Write the recommender dashboards, with everything they use, back to the files."""
    for path in kibana.export(kibana_url, directory, api_key):
        console.print(f"wrote {path}")


@app.command()
@exits_cleanly
def build(directory: Path = Directory) -> None:
    """Regenerate the files from the panel definitions (recommender/dashboard/panels.py)."""
    for path in kibana.build(directory):
        console.print(f"wrote {path}")
