"""``recommender serve``: the HTTP API."""

from __future__ import annotations

import typer

from recommender.cli.common import console, exits_cleanly
from recommender.settings import get_settings


@exits_cleanly
def serve(
    host: str = typer.Option(None, help="Bind address (default: api.host)."),
    port: int = typer.Option(None, help="Port (default: api.port)."),
    log_level: str = typer.Option("info", help="uvicorn log level."),
) -> None:
    """Serve the HTTP API (OpenAPI docs at /docs, schema at /openapi.json).

    One process: listening sessions and the model cache live in memory, so scale out with
    sticky routing on the session id rather than with more workers per process. Starts even
    while a backend is down; /health (503) says which.
    """
    import uvicorn

    from recommender.serve.main import create_app

    settings = get_settings()
    host, port = host or settings.api.host, port or settings.api.port
    console.print(f"API on http://{host}:{port} (docs at /docs)")
    uvicorn.run(create_app(settings), host=host, port=port, log_level=log_level)
