"""The demo as a newcomer runs it: ``recommender demo --duration N`` on ml-latest-small in a
child process, checked from the outside afterwards.

Checks: the command exits 0; the API answers ``/users/{id}/predictions`` with predictions the
demo's own requests produced, and serves the ``/dashboard`` page with data; ``recommender
demo --stop`` leaves none of the demo's processes behind. Measures: the peak resident memory
of all processes together (stack, jobs with their Spark JVMs and Python workers, the demo
itself) as the demo's live view sampled it, and how long the first model took.

It runs on the real default topics, keyspace, indices and models directory (it is the demo),
so it refuses to start while another demo's jobs are running.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

from bench.common import Clock, envelope, log, table, target, workspace
from bench.monitor import RssMonitor
from recommender.settings import Settings, as_env

DURATION_S = {True: 240, False: 420}
MEMORY_BUDGET_GIB = 12.0
GIB = 1024**3


def run(settings: Settings, quick: bool) -> dict[str, Any]:
    from recommender.launcher import run_dir
    from recommender.supervisor import Supervisor

    bench_run = workspace(settings)
    clock = Clock()
    demo_dir = run_dir(settings)
    if Supervisor(demo_dir).running():
        raise RuntimeError(f"a demo is already running ({demo_dir}); stop it with "
                           "`recommender demo --stop` first")
    duration = DURATION_S[quick]
    env = {**os.environ, **as_env(settings)}
    output = bench_run.tmp / "demo-output.txt"
    started_ms = int(time.time() * 1000)
    with RssMonitor(interval_s=1.0) as rss:
        rss.track_stack(settings)
        rss.track("demo and its jobs", os.getpid(), children=True)
        log(f"recommender demo --duration {duration} (output in {output})")
        with open(output, "wb") as out:
            demo = subprocess.run([sys.executable, "-m", "recommender", "demo", "--duration",
                                   str(duration)], env=env, stdout=out, stderr=subprocess.STDOUT,
                                  timeout=duration + 1200, check=False)
    wall_s = time.monotonic() - clock.t0
    summary = json.loads((demo_dir / "summary.json").read_text())
    jobs = Supervisor(demo_dir).running()
    checks = check_api(settings, started_ms)
    processes = job_processes(list(jobs.values()))  # before --stop: orphans stay findable
    log(f"stopping the demo's jobs {sorted(jobs)} ({len(processes)} processes)")
    subprocess.run([sys.executable, "-m", "recommender", "demo", "--stop"], env=env,
                   check=False, timeout=300, capture_output=True)
    left = [{"pid": p.pid, "name": p.name()} for p in processes if alive(p)]
    peak_gib = summary["peak_rss_bytes"] / GIB
    rows = [["exit code of `recommender demo --duration`", demo.returncode],
            ["wall time (s)", round(wall_s, 1)],
            ["model version at the end", (summary.get("last_sample") or {}).get("model_version")],
            ["predictions in Elasticsearch at the end",
             (summary.get("last_sample") or {}).get("predictions_indexed")],
            ["user asked through the API", checks["user_id"]],
            ["predictions the API returned for that user", checks["predictions"]],
            ["/dashboard page status", checks["dashboard_status"]],
            ["dashboard panels with data", f"{checks['panels_with_data']} of {checks['panels']}"],
            ["peak RSS of all processes, GiB (demo's own sampling)", round(peak_gib, 2)],
            ["demo processes left after --stop", len(left)]]
    return envelope(
        "demo", settings, quick, clock,
        dataset={"name": "ml-latest-small"},
        config={"duration_s": duration},
        metrics={"exit_code": demo.returncode, "wall_s": round(wall_s, 1),
                 "peak_rss_gib": round(peak_gib, 2), "summary": summary, "api": checks,
                 "left_after_stop": left},
        targets=[target("demo exits 0", demo.returncode, 0, "==", ""),
                 target("predictions visible through the API", checks["predictions"], 1, ">="),
                 target("processes left after --stop", len(left), 0, "==", ""),
                 target("peak RSS of all processes (stack included)", peak_gib,
                        MEMORY_BUDGET_GIB, "<=", "GiB")],
        tables=[table("Demo run", ["check", "value"], rows)],
        rss=rss,
        notes=["The peak is the demo's own figure (every 2 s, the sum over the stack's servers, "
               "the supervised jobs with their Spark JVMs and Python workers, and the demo "
               "process); the per-process peaks below come from this benchmark's sampler."])


def check_api(settings: Settings, since_ms: int) -> dict[str, Any]:
    """Ask the API the way the website does, for a user this demo run predicted for."""
    import httpx

    from recommender.clients import elasticsearch_client

    es = elasticsearch_client(settings.elasticsearch)
    try:
        alias = settings.elasticsearch.indices.predictions_alias
        hits = es.search(index=alias, size=1, sort=[{"predicted_at": "desc"}],
                         query={"range": {"predicted_at": {"gte": since_ms}}})["hits"]["hits"]
    finally:
        es.close()
    user_id = int(hits[0]["_source"]["user_id"]) if hits else None
    api = f"http://{settings.api.host}:{settings.api.port}"
    with httpx.Client(base_url=api, timeout=30) as client:
        predictions = 0
        if user_id is not None:
            answer = client.get(f"/users/{user_id}/predictions")
            predictions = len(answer.json().get("predictions", [])) if answer.is_success else 0
        page = client.get("/dashboard")
        data = client.get("/dashboard/data")
    panels = data.json().get("panels", []) if data.is_success else []
    with_data = sum(1 for p in panels if p.get("status") == "ok")
    return {"user_id": user_id, "predictions": predictions,
            "dashboard_status": page.status_code, "panels": len(panels),
            "panels_with_data": with_data}


def job_processes(pids: list[int]) -> list[Any]:
    """The demo's job processes with every descendant (Spark JVMs, Python workers)."""
    import psutil

    found = []
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            found += [proc, *proc.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
    return found


def alive(proc: Any) -> bool:
    import psutil

    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
