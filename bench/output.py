"""What every benchmark prints while it runs: one timestamped line per step (the results go
to ``bench/results``, not here)."""

from __future__ import annotations

from datetime import datetime


def log(message: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {message}", flush=True)
