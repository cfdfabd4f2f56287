"""The local cluster for the node-loss suite: ``recommender stack up --nodes 3`` (three
Kafka, Cassandra and Elasticsearch nodes on 127.0.0.1-3, a Spark standalone master and two
workers), and the session's private names on it.

The cluster has its own state directory and ports (``stack.cluster_state_dir``,
``stack.cluster_port_offset``), so ``make test`` runs this directory in a pytest of its own
after the single-node suites. The session starts the cluster unless it is already up, drops
its private names at the end, and stops the cluster only if it started it.

Every job runs as an operator would run it against a cluster: a ``recommender`` process
configured by ``recommender stack env --nodes 3``'s settings (``connect.as_account``), with
``spark.master=spark://...`` so its executors run in the workers.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from recommender.settings import Settings, StackSettings, as_env
from recommender.stack.connect import as_account
from tests.support.fixtures import running
from tests.support.names import drop_remembered, remember

NODES = 3


@pytest.fixture(scope="session")
def cluster_stack(settings: Settings) -> Iterator[StackSettings]:
    stack = StackSettings.model_validate({**settings.stack.model_dump(exclude_unset=True),
                                          "nodes": NODES})
    with running(stack, "the local cluster", drop_remembered):  # drops while it answers
        yield stack


@pytest.fixture(scope="session")
def cluster_settings(settings: Settings, cluster_stack: StackSettings) -> Settings:
    """The session's private names on the cluster, with the settings ``stack env --nodes 3``
    gives: every node, replication 3, quorum consistency, one index replica, Spark master."""
    return remember(as_account(settings.model_copy(update={"stack": cluster_stack}),
                               cluster_stack, None))


def run_command(settings: Settings, *args: str, timeout_s: float = 1200) -> str:
    """``recommender ARGS`` as its own process configured by its environment only; its
    output, or a failure that shows it."""
    result = subprocess.run([sys.executable, "-m", "recommender", *args],
                            env=as_env(settings), capture_output=True, text=True,
                            timeout=timeout_s, cwd=Path(__file__).resolve().parents[2])
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"recommender {' '.join(args)} failed:\n{output[-4000:]}"
    return output


@pytest.fixture(scope="session")
def cluster_trained(cluster_settings: Settings, data_dir: Path) -> Settings:
    """ml-latest-small replayed into the cluster, ingested by ``recommender ingest --once``
    and trained by ``recommender train``, both on ``spark://``; the model is promoted."""
    from data_loading.datasets import locate
    from data_loading.metadata import load_metadata
    from data_loading.replay import replay
    from recommender.model.registry import ModelRegistry
    from recommender.topics import TOPIC_FIELDS, ensure_topics

    settings = cluster_settings
    ensure_topics(settings, *(getattr(settings.kafka, f) for f in TOPIC_FIELDS))
    dataset = locate("ml-latest-small", data_dir)
    load_metadata(settings, dataset)
    replayed = replay(settings, dataset.ratings(), resume=False).acked
    assert replayed == 100_836, replayed
    run_command(settings, "ingest", "--once")
    run_command(settings, "train")
    assert ModelRegistry(settings.model.models_dir).current_version() is not None
    return settings
