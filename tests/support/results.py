"""Figures of the fault and fuzz runs, written next to the benchmarks' results
(``bench/results/<name>.json``, ``<name>.quick.json`` for the reduced run in ``make test``)
with the same machine and version facts, so a reader can tell what ran where."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from bench.common import RESULTS_DIR, Clock, machine, provenance, versions
from recommender.settings import Settings


def write_result(name: str, quick: bool, clock: Clock, settings: Settings,
                 figures: dict[str, Any]) -> Path:
    """``figures`` inside the envelope every result file shares; the path written."""
    body = {"suite": name, "quick": quick, **provenance(clock, settings),
            "started_at": clock.started_at,
            "duration_s": round(time.monotonic() - clock.t0, 1),
            "load_average": {"before": clock.load_before,
                             "after": [round(x, 2) for x in os.getloadavg()]},
            "machine": machine(), "versions": versions(settings), **figures}
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}{'.quick' if quick else ''}.json"
    path.write_text(json.dumps(body, indent=2, default=str) + "\n")
    return path
