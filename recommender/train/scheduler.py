"""Retraining triggers: on a clock (``--every 1h``), on data (``--after N``), or both.

* ``every`` only: train at every tick.
* ``after`` only: poll the ratings count every ``poll`` seconds and train as soon as ``N``
  ratings arrived since the current model's snapshot (``data.rows_total`` in its metadata).
* both: at every tick, train only if ``N`` new ratings arrived.

Each run goes through the same pipeline and quality gate as a manual ``train``. A run that
fails with a ``RecommenderError`` (backend down, gate refusal, too little data) is reported
and the loop carries on; anything else stops it. Ticks keep a fixed cadence from the start
(a slow run does not shift later ones), and ``stop`` ends the wait at once.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from recommender.errors import InvalidRequest, RecommenderError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhd])")


def parse_interval(text: str) -> float:
    """Seconds in ``90s``, ``15m``, ``1h``, ``1h30m``, ``2d`` or a plain number of seconds."""
    text = text.strip().lower()
    try:
        seconds = float(text)
    except ValueError:
        parts = _PART.findall(text)
        if not parts or "".join(n + u for n, u in parts) != text:
            raise InvalidRequest(
                f"invalid interval {text!r}: use e.g. 90s, 15m, 1h, 1h30m, 1d") from None
        seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if seconds <= 0:
        raise InvalidRequest(f"interval must be positive, got {text!r}")
    return seconds


def snapshot_rows(model_metadata: dict[str, Any] | None) -> int:
    """The ratings count a model was trained from (0 without a model: everything is new)."""
    if not model_metadata:
        return 0
    data = model_metadata.get("data") or {}
    return int(data.get("rows_total", data.get("rows", 0)) or 0)


@dataclass
class Schedule:
    """When to train; ``max_runs`` stops the loop after that many trainings (None: never)."""

    every: float | None = None
    after: int | None = None
    poll: float = 60.0
    max_runs: int | None = None


def run_loop(schedule: Schedule, train: Callable[[], Any], count: Callable[[], int],
             baseline: Callable[[], int], stop: threading.Event | None = None,
             on_event: Callable[[str], None] = lambda _: None,
             clock: Callable[[], float] = time.monotonic) -> int:
    """Run ``train`` as the schedule says until ``stop`` is set or ``max_runs`` is reached;
    returns the number of training runs.

    ``count`` is the ratings count now and ``baseline`` the current model's snapshot size.
    After a run the count at that run also serves as a baseline, so a candidate the gate
    refused is not retrained on every poll until N more ratings arrive.
    """
    stop = stop or threading.Event()
    period = schedule.every or schedule.poll
    runs, tick, started = 0, 0, clock()
    last_attempt = 0
    while not stop.is_set():
        due, total = True, None
        if schedule.after is not None:
            try:
                total = count()
                fresh = total - max(baseline(), last_attempt)
                if fresh < schedule.after:
                    on_event(f"{fresh} new ratings since the last model "
                             f"(waiting for {schedule.after})")
                    due = False
            except RecommenderError as exc:
                on_event(f"cannot count new ratings: {exc}")
                due = False
        if due:
            try:
                train()
            except RecommenderError as exc:
                on_event(f"training run failed: {exc}")
            last_attempt = total if total is not None else last_attempt
            runs += 1
            if schedule.max_runs is not None and runs >= schedule.max_runs:
                break
        tick += 1
        stop.wait(max(0.0, started + tick * period - clock()))
    return runs
