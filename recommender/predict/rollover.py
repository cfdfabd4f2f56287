"""Zero-downtime rollover: replace running predictors with a new one while requests flow.

Spark's Kafka source assigns partitions itself and takes no part in consumer-group
rebalancing, so two predictors never split the work; the hand-off goes through committed
offsets instead:

1. the successor starts with a fresh checkpoint, from the offsets the predictor group has
   committed (what the predecessor has finished), pinned to the target model version;
2. both run; the overlap re-answers some requests, which downstream de-duplication by
   ``request_id`` (the Elasticsearch document id) makes harmless;
3. once the successor's last micro-batch covers, on every partition, what the predecessor
   had finished one trigger interval before that batch ended, it has caught up (it answers
   the live stream, not a backlog): the predecessor is asked to stop after its current
   micro-batch (SIGTERM). Comparing with the predecessor's offsets *now* instead can wait
   for minutes: two queries with the same trigger interval keep their phase, and when the
   successor plans its batches just before the predecessor does, it is always one batch
   "behind" although both answer within a trigger interval;
4. the target version is promoted, and the successor follows ``CURRENT`` from then on.

Nothing is lost: every offset the predecessor had not committed is read by the successor.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from recommender.errors import RecommenderError
from recommender.offsets import group_offsets
from recommender.predict.job import InstanceState
from recommender.runtime import pid_alive
from recommender.settings import Settings, as_env
from recommender.streaming import trigger_seconds
from recommender.vectors import publishing_registry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RolloverReport:
    successor: str
    predecessors: list[str]
    version: str | None
    caught_up_s: float
    total_s: float


def running_instances(settings: Settings) -> list[InstanceState]:
    """Predictors whose published pid is alive."""
    root = settings.spark.checkpoint_dir / "predict"
    states = []
    for path in sorted(root.glob("*/instance.json")):
        try:
            state = InstanceState(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            continue
        if pid_alive(state.pid):
            states.append(state)
    return states


def committed_offsets(settings: Settings) -> dict[int, int]:
    """The predictor group's committed offsets on the requests topic (partition -> offset)."""
    return group_offsets(settings, settings.kafka.predictor_group, settings.kafka.requests_topic)


def start_predictor(settings: Settings, instance: str, version: str | None, log_file: Path,
                    from_group: bool = True) -> subprocess.Popen:
    """A detached ``recommender predict`` process (survives the command that started it)."""
    cmd = [sys.executable, "-m", "recommender", "predict", "--instance", instance]
    if version:
        cmd += ["--model", version]
    if from_group:
        cmd.append("--from-group")
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log:
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True,
                                env=as_env(settings))


class Handoff:
    """Snapshots of what the predecessors had finished, by wall-clock time, to tell when the
    successor is within one trigger interval of them."""

    def __init__(self, trigger_s: float) -> None:
        self.trigger_s = trigger_s
        self.snapshots: deque[tuple[float, dict[str, int]]] = deque()

    def observe(self, predecessors: list[InstanceState], at: float | None = None) -> None:
        """Record what ``predecessors`` have finished, as of ``at`` (default: now)."""
        finished: dict[str, int] = {}
        for old in predecessors:
            for partition, offset in old.offsets.items():
                finished[partition] = max(finished.get(partition, -1), offset)
        self.snapshots.append((time.time() if at is None else at, finished))

    def caught_up(self, successor: InstanceState | None) -> bool:
        """Whether the successor's last batch covers what the predecessors had finished one
        trigger interval before it ended."""
        if successor is None or successor.batches == 0:
            return False
        horizon = successor.updated_at - self.trigger_s
        while len(self.snapshots) > 1 and self.snapshots[1][0] <= horizon:
            self.snapshots.popleft()  # only the newest snapshot before the horizon matters
        if not self.snapshots or self.snapshots[0][0] > horizon:
            return False
        return all(successor.offsets.get(partition, -1) >= offset
                   for partition, offset in self.snapshots[0][1].items())


def read_state(settings: Settings, instance: str) -> InstanceState | None:
    try:
        return InstanceState(**json.loads(InstanceState.path(settings, instance).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def rollover(settings: Settings, version: str | None, timeout_s: float = 300.0) -> RolloverReport:
    """Run the hand-off above; ``version`` None means the registry's newest version."""
    registry = publishing_registry(settings, log.info)
    target = version or registry.latest_version()
    if target is None:
        raise RecommenderError("no model version to roll over to: train one first")
    registry.version_dir(target)  # fails clearly if the version does not exist
    predecessors = running_instances(settings)
    started = time.monotonic()
    instance = f"p{time.strftime('%Y%m%dT%H%M%S')}"
    log_file = settings.spark.checkpoint_dir / "predict" / instance / "predict.log"
    proc = start_predictor(settings, instance, target, log_file)
    handoff = Handoff(trigger_seconds(settings.spark.trigger_interval))
    while True:
        handoff.observe(_refreshed(settings, predecessors))
        if handoff.caught_up(read_state(settings, instance)):
            break
        if proc.poll() is not None:
            raise RecommenderError(f"the new predictor exited with {proc.returncode}; "
                                   f"see {log_file}")
        if time.monotonic() - started > timeout_s:
            os.killpg(proc.pid, signal.SIGTERM)
            raise RecommenderError(f"the new predictor did not catch up in {timeout_s:.0f}s; "
                                   f"it was stopped and the old ones keep running ({log_file})")
        time.sleep(0.5)
    caught_up_s = time.monotonic() - started
    for old in predecessors:
        stop_instance(old)
    registry.promote(target, force=True)  # on_promoted republishes the movie vectors
    return RolloverReport(instance, [p.instance for p in predecessors], target, caught_up_s,
                          time.monotonic() - started)


def _refreshed(settings: Settings, states: list[InstanceState]) -> list[InstanceState]:
    return [read_state(settings, s.instance) or s for s in states]


def stop_instance(state: InstanceState, timeout_s: float = 120.0) -> None:
    """SIGTERM: the predictor finishes its micro-batch, commits, and exits."""
    try:
        os.kill(state.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while pid_alive(state.pid) and time.monotonic() < deadline:
        time.sleep(0.5)
    if pid_alive(state.pid):
        os.kill(state.pid, signal.SIGKILL)
