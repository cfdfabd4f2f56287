"""``recommender demo``: the whole pipeline, live, in one command."""

from __future__ import annotations

import threading
import time

import typer
from rich.live import Live
from rich.table import Table

from recommender.cli.common import console, exits_cleanly
from recommender.settings import Settings, get_settings


@exits_cleanly
def demo(
    duration: float = typer.Option(None, help="Seconds to run the live view, then exit 0 "
                                   "(the jobs keep running; stop them with --stop)."),
    dataset: str = typer.Option("ml-latest-small", help="MovieLens name or a directory "
                                "in its layout (e.g. from `recommender generate`)."),
    rate: float = typer.Option(2000.0, help="Ratings replayed per second."),
    requests: float = typer.Option(20.0, help="Simulated website prediction requests/s."),
    train_after: int = typer.Option(50_000, help="Train the first model once this many "
                                    "ratings are ingested."),
    stop: bool = typer.Option(False, "--stop", help="Stop every job the demo started, and "
                              "the stack if the demo started it."),
) -> None:
    """Run the pipeline end to end on MovieLens and watch it work.

    Brings the stack up, loads movie metadata, starts ingest, shipper and API as supervised
    background jobs (restarted if they die), replays ratings, trains and promotes a first
    model once enough ratings arrived, starts the predictor and sends simulated website
    requests. The live view shows events/s, predictor lag, predictions/s, request ->
    prediction latency and the model version.
    """
    from recommender.launcher import DemoOptions, run_demo, stop_demo

    settings = get_settings()
    if stop:
        stop_demo(settings, console.print)
        return
    options = DemoOptions(dataset=dataset, rate=rate, requests_per_s=requests,
                          train_after=train_after, duration_s=duration)
    run_demo(settings, options, console.print, live_view(settings, duration))
    api = f"http://{settings.api.host}:{settings.api.port}"
    console.print(f"\n[bold]The pipeline is running.[/] Look at:\n"
                  f"  try it         {api}/  (pick a user, rate movies, watch the list "
                  f"follow)\n"
                  f"  API docs       {api}/docs\n"
                  f"  dashboard      {api}/dashboard\n"
                  f"  predictions    {api}/users/1/predictions\n"
                  f"  Kibana         import kibana_dashboards/ with `recommender dashboards "
                  f"install --kibana-url URL` (docker-compose)\n"
                  f"Stop everything with `recommender demo --stop`.")


def live_view(settings: Settings, duration: float | None):
    def view(supervisor, stop: threading.Event) -> None:
        from recommender.launcher import PREDICTOR, background_jobs, record_summary
        from recommender.monitor import MemoryWatch, PipelineMonitor
        from recommender.stack import manager

        monitor = PipelineMonitor(settings)
        servers = [s.pid for s in manager.status(settings.stack) if s.pid]
        memory = MemoryWatch(lambda: [*servers, *supervisor.running().values()])
        jobs = background_jobs(settings)
        ends = time.monotonic() + duration if duration else None
        try:
            with Live(console=console, refresh_per_second=1) as live:
                while ends is None or time.monotonic() < ends:
                    watched = jobs + ([PREDICTOR] if supervisor.pid(PREDICTOR.name) else [])
                    restarted = supervisor.keep_alive(watched)
                    sample = monitor.sample()
                    live.update(render(monitor, sample, supervisor, restarted, memory))
                    if stop.wait(2.0):
                        break
        finally:
            path = record_summary(settings, monitor.previous, memory.peak_bytes)
            console.print(f"peak resident memory of all processes (stack included): "
                          f"{memory.peak_bytes / GIB:.2f} GiB; summary in {path}")

    return view


GIB = 1024**3


def render(monitor, sample, supervisor, restarted: list[str], memory) -> Table:
    rates = monitor.rates
    latency = sample.latency_ms
    fmt = lambda v: "-" if v is None else f"{v:,.0f}"  # noqa: E731
    table = Table(title="recommender pipeline", show_header=False)
    table.add_row("ratings replayed/s", fmt(rates.ratings_per_s))
    table.add_row("ratings in Elasticsearch", fmt(sample.ratings_indexed))
    table.add_row("prediction requests/s", fmt(rates.requests_per_s))
    table.add_row("predictor lag (requests)", fmt(sample.predictor_lag))
    table.add_row("predictions/s", fmt(rates.predictions_per_s))
    table.add_row("predictions in Elasticsearch", fmt(sample.predictions_indexed))
    table.add_row("latency p50/p95/p99 ms (1 min)",
                  " / ".join(fmt(latency.get(p)) for p in ("p50", "p95", "p99")))
    table.add_row("model version", sample.model_version or "(training pending)")
    now = memory.sample()
    table.add_row("memory, all processes (now / peak)",
                  f"{now / GIB:.2f} / {memory.peak_bytes / GIB:.2f} GiB")
    table.add_row("jobs", ", ".join(f"{n}:{p}" for n, p in supervisor.running().items()))
    if restarted:
        table.add_row("restarted", ", ".join(restarted))
    return table
