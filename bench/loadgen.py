"""A small HTTP load generator, run as its own process so that it shares no interpreter (or
GIL) with the server it measures::

    python -m bench.loadgen SPEC.json OUT.json

The spec: ``url`` (with ``{user}``), ``method`` (GET or POST), optional ``headers`` and ``body``
(JSON in which the string ``"{user}"`` is replaced), ``users`` (ids taken round-robin from a
shuffled list), ``duration_s``, ``concurrency`` (keep-alive connections, so also requests in
flight at most), ``warmup_s`` (requests scheduled earlier are not counted) and ``rate``:
requests per second on a fixed schedule (open loop: latency counts from the scheduled start,
so a client or server that falls behind shows up as latency instead of silently sending less),
or null for a closed loop that sends as fast as ``concurrency`` allows (maximum throughput).

The client is a minimal HTTP/1.1 keep-alive client on asyncio streams rather than httpx: on
this 2-core host httpx spent more CPU than the API it was measuring (175 CPU-s against the
API's 115 in a first run), which starved the server and distorted both numbers.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

TIMEOUT_S = 30.0


class Connection:
    """One keep-alive HTTP/1.1 connection; reconnects after an error or ``Connection: close``."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, raw: bytes) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        try:
            self.writer.write(raw)
            head = await self.reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            lower = head.lower()
            if b"transfer-encoding: chunked" in lower:
                while True:
                    size = int((await self.reader.readline()).split(b";")[0].strip(), 16)
                    await self.reader.readexactly(size + 2)
                    if size == 0:
                        break
            else:
                start = lower.find(b"content-length:")
                if start >= 0:
                    end = lower.index(b"\r\n", start)
                    await self.reader.readexactly(int(lower[start + 15:end]))
            if b"connection: close" in lower:
                self.close()
            return status
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def build_requests(spec: dict[str, Any]) -> tuple[str, int, dict[int, bytes]]:
    """Host, port and the raw request bytes per user."""
    url = urlsplit(spec["url"])
    host, port = url.hostname or "127.0.0.1", url.port or 80
    method = spec.get("method", "GET")
    body = json.dumps(spec["body"]) if spec.get("body") is not None else None
    headers = {"Host": f"{host}:{port}", **(spec.get("headers") or {})}
    if body is not None:
        headers["Content-Type"] = "application/json"
    out = {}
    for user in spec["users"]:
        target = spec["url"][spec["url"].index(url.netloc) + len(url.netloc):] or "/"
        target = target.replace("{user}", str(user))
        content = body.replace('"{user}"', str(user)).encode() if body is not None else b""
        lines = [f"{method} {target} HTTP/1.1", *(f"{k}: {v}" for k, v in headers.items())]
        if body is not None:
            lines.append(f"Content-Length: {len(content)}")
        out[int(user)] = ("\r\n".join(lines) + "\r\n\r\n").encode() + content
    return host, port, out


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    host, port, raw = build_requests(spec)
    users = list(raw)
    random.Random(11).shuffle(users)
    rate, duration = spec.get("rate"), float(spec["duration_s"])
    warmup, concurrency = float(spec.get("warmup_s", 2.0)), int(spec["concurrency"])
    pool: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(concurrency):
        pool.put_nowait(Connection(host, port))
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    errors: list[str] = []
    start = time.perf_counter()
    counted_from = start + warmup

    async def one(i: int, scheduled: float) -> None:
        conn = await pool.get()
        try:
            status = str(await asyncio.wait_for(conn.request(raw[users[i % len(users)]]),
                                                TIMEOUT_S))
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                TimeoutError, ValueError) as exc:
            status = type(exc).__name__
            if len(errors) < 5:
                errors.append(repr(exc))
        finally:
            pool.put_nowait(conn)
        if scheduled >= counted_from:
            latencies.append((time.perf_counter() - scheduled) * 1000)
            statuses[status] = statuses.get(status, 0) + 1

    if rate:
        tasks = []
        i = 0
        while (scheduled := start + i / rate) < start + duration:
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
    while not pool.empty():
        pool.get_nowait().close()
    arr = np.asarray(latencies)
    pct = np.percentile(arr, [50, 95, 99]).round(2).tolist() if arr.size else [None] * 3
    return {"url": spec["url"], "rate": rate, "concurrency": concurrency,
            "requests": int(arr.size), "ok": statuses.get("200", 0), "statuses": statuses,
            "errors": errors,
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
