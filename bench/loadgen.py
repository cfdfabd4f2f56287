"""A small HTTP load generator, run as its own process so that it does not share an
interpreter (or a GIL) with the server it measures::

    python -m bench.loadgen SPEC.json OUT.json

The spec: ``url`` (with ``{user}``), ``method`` (GET or POST), optional ``body`` (JSON in which
the string ``"{user}"`` is replaced), ``users`` (ids drawn round-robin from a shuffled list),
``duration_s``, ``concurrency`` (connections, and requests in flight at most), ``warmup_s``
(requests started earlier are not counted) and ``rate``: requests per second on a fixed
schedule (open loop; latency counts from the scheduled start, so a client or server that falls
behind shows up as latency instead of silently sending less), or null for a closed loop that
sends as fast as ``concurrency`` allows (the maximum throughput).
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    users = list(spec["users"])
    random.Random(11).shuffle(users)
    rate, duration = spec.get("rate"), float(spec["duration_s"])
    warmup, concurrency = float(spec.get("warmup_s", 2.0)), int(spec["concurrency"])
    body = json.dumps(spec["body"]) if spec.get("body") is not None else None
    method = spec.get("method", "GET")
    headers = dict(spec.get("headers") or {})
    if body:
        headers["Content-Type"] = "application/json"
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    errors: list[str] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    gate = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30.0) as client:
        start = time.perf_counter()
        counted_from = start + warmup

        async def one(i: int, scheduled: float) -> None:
            user = users[i % len(users)]
            url = spec["url"].replace("{user}", str(user))
            content = body.replace('"{user}"', str(user)) if body else None
            async with gate:
                try:
                    response = await client.request(method, url, content=content,
                                                    headers=headers)
                    status = str(response.status_code)
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                    if len(errors) < 5:
                        errors.append(repr(exc))
            done = time.perf_counter()
            if scheduled >= counted_from:
                latencies.append((done - scheduled) * 1000)
                statuses[status] = statuses.get(status, 0) + 1

        tasks: list[asyncio.Task] = []
        if rate:
            i = 0
            end = start + duration
            while True:
                scheduled = start + i / rate
                if scheduled >= end:
                    break
                delay = scheduled - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(one(i, scheduled)))
                i += 1
            await asyncio.gather(*tasks)
        else:
            counter = iter(range(10**9))

            async def worker() -> None:
                while time.perf_counter() - start < duration:
                    await one(next(counter), time.perf_counter())

            await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - counted_from
    arr = np.asarray(latencies)
    ok = statuses.get("200", 0)
    pct = (np.percentile(arr, [50, 95, 99]).round(2).tolist() if arr.size else [None] * 3)
    return {"url": spec["url"], "rate": rate, "concurrency": concurrency,
            "requests": int(arr.size), "ok": ok, "statuses": statuses, "errors": errors,
            "achieved_rps": round(arr.size / elapsed, 1) if elapsed > 0 else None,
            "latency_ms": {"p50": pct[0], "p95": pct[1], "p99": pct[2],
                           "max": round(float(arr.max()), 2) if arr.size else None,
                           "mean": round(float(arr.mean()), 2) if arr.size else None}}


def main(argv: list[str]) -> int:
    spec = json.loads(Path(argv[0]).read_text())
    result = asyncio.run(run(spec))
    Path(argv[1]).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
