"""What every command shares: settings, JSON output, progress bars, and the one place that
turns a ``RecommenderError`` into a message and an exit code."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from dataclasses import asdict, is_dataclass
from typing import Any, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from recommender.errors import ExitStatus, RecommenderError

P = ParamSpec("P")
R = TypeVar("R")

console = Console(stderr=True)
JsonOption = typer.Option(False, "--json", help="Print machine-readable JSON on stdout.")


def exits_cleanly(func: Callable[P, R]) -> Callable[P, R]:
    """Map domain errors to their exit status with a one-line message instead of a traceback."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except RecommenderError as exc:
            console.print(f"[bold red]error:[/] {exc}", highlight=False)
            raise typer.Exit(int(exc.exit_status)) from None
        except KeyboardInterrupt:
            console.print("interrupted")
            raise typer.Exit(130) from None

    return wrapper


def print_json(value: Any) -> None:
    """Dataclasses and lists of them as JSON on stdout."""
    sys.stdout.write(json.dumps(_plain(value), indent=2, default=str) + "\n")


def _plain(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def progress_bar(transient: bool = False) -> Progress:
    """A progress bar with a rate column; ``task.fields['rate']`` is shown when set."""
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn(),
        console=console, transient=transient,
    )


__all__ = ["ExitStatus", "JsonOption", "console", "exits_cleanly", "print_json", "progress_bar"]
