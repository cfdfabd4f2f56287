"""Live pipeline figures from the systems themselves: Kafka offsets, consumer-group lag,
Elasticsearch aggregations and the model registry. Used by the demo's terminal view.

Rates are deltas of topic end offsets between two samples, so they count what really
reached Kafka, whichever process produced it.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import psutil

from recommender import offsets
from recommender.clients import elasticsearch_client
from recommender.settings import Settings


@dataclass
class Sample:
    at: float
    end_offsets: dict[str, int]
    predictor_lag: int | None
    latency_ms: dict[str, float | None]
    predictions_indexed: int | None
    ratings_indexed: int | None
    model_version: str | None


@dataclass
class Rates:
    ratings_per_s: float = 0.0
    requests_per_s: float = 0.0
    predictions_per_s: float = 0.0


@dataclass
class PipelineMonitor:
    settings: Settings
    previous: Sample | None = None
    rates: Rates = field(default_factory=Rates)

    def sample(self) -> Sample:
        kafka = self.settings.kafka
        topics = [kafka.ratings_topic, kafka.requests_topic, kafka.predictions_topic]
        ends = self.end_offsets(topics)
        now = time.monotonic()
        current = Sample(now, ends, self.predictor_lag(ends.get(kafka.requests_topic)),
                         *self.elasticsearch_figures(), self.model_version())
        if self.previous is not None:
            dt = max(now - self.previous.at, 1e-6)
            delta = {t: ends.get(t, 0) - self.previous.end_offsets.get(t, 0) for t in topics}
            self.rates = Rates(delta[kafka.ratings_topic] / dt, delta[kafka.requests_topic] / dt,
                               delta[kafka.predictions_topic] / dt)
        self.previous = current
        return current

    def end_offsets(self, topics: list[str]) -> dict[str, int]:
        return {topic: sum(ends.values())
                for topic, ends in offsets.end_offsets(self.settings, topics).items()}

    def predictor_lag(self, requests_end: int | None) -> int | None:
        if requests_end is None:
            return None
        kafka = self.settings.kafka
        try:
            done = offsets.group_offsets(self.settings, kafka.predictor_group,
                                         kafka.requests_topic)
        except Exception:  # noqa: BLE001 - no group yet: lag unknown, not an error
            return None
        return requests_end - sum(done.values())

    def elasticsearch_figures(self) -> tuple[dict[str, float | None], int | None, int | None]:
        es = elasticsearch_client(self.settings.elasticsearch, request_timeout=5)
        names = self.settings.elasticsearch.indices
        try:
            body: dict[str, Any] = es.search(
                index=names.predictions_alias, size=0, ignore_unavailable=True,
                query={"range": {"predicted_at": {"gte": "now-1m"}}},
                aggs={"latency": {"percentiles": {"field": "latency_ms",
                                                  "percents": [50, 95, 99]}}})
            values = body.get("aggregations", {}).get("latency", {}).get("values", {})
            latency = {f"p{int(float(k))}": v for k, v in values.items()}
            predictions = es.count(index=names.predictions_alias,
                                   ignore_unavailable=True)["count"]
            ratings = es.count(index=f"{names.ratings_prefix}*",
                               ignore_unavailable=True)["count"]
            return latency, predictions, ratings
        except Exception:  # noqa: BLE001 - the view shows "-" while ES is unavailable
            return {}, None, None
        finally:
            es.close()

    def model_version(self) -> str | None:
        from recommender.model.registry import ModelRegistry

        return ModelRegistry(self.settings.model.models_dir).current_version()


@dataclass
class MemoryWatch:
    """Resident memory of the whole pipeline on this host: the stack's servers, the
    supervised jobs with their Spark JVMs and Python workers, and this process. The budget
    a user plans for is all of them together, so the peak of the sum is what is reported."""

    roots: Callable[[], list[int]]
    peak_bytes: int = 0

    def sample(self) -> int:
        trees = process_trees([os.getpid(), *self.roots()])
        total = resident_bytes(set().union(*trees.values()))
        self.peak_bytes = max(self.peak_bytes, total)
        return total


def process_trees(roots: Iterable[int]) -> dict[int, set[int]]:
    """Each root's pid with those of all its descendants, from one pass over the process
    table (walking each root's children would read it once per process)."""
    roots = list(roots)
    if not roots:
        return {}
    children: dict[int, list[int]] = {}
    for proc in psutil.process_iter(["ppid"]):
        children.setdefault(proc.info["ppid"], []).append(proc.pid)
    trees = {}
    for root in roots:
        tree, todo = set(), [root]
        while todo:
            pid = todo.pop()
            if pid not in tree:
                tree.add(pid)
                todo.extend(children.get(pid, []))
        trees[root] = tree
    return trees


def resident_bytes(pids: Iterable[int]) -> int:
    """The resident set size of these processes together (0 for one that is gone)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            total += psutil.Process(pid).memory_info().rss
    return total
