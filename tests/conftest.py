"""Test settings shared by every test.

Integration, fault and fuzz tests run against the real stack (Kafka, Cassandra, Elasticsearch
started by ``recommender stack up``); see ``tests/support/fixtures.py``. Test runs use their
own keyspace, topics, index names and model directory so that they never touch a demo's data.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from recommender.settings import Settings
from tests.support.names import remember
from tests.support.user_data import snapshot

pytest_plugins = ["tests.support.fixtures"]

REPO = Path(__file__).resolve().parents[1]
LAST = "test_the_default_names_hold_nothing_the_suite_wrote"
DATA_DIR = Path(os.environ.get("RECOMMENDER_DATA__DATA_DIR", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (DATA_DIR / "ml-latest-small" / "ratings.csv").exists():
        pytest.fail(
            f"MovieLens data not found in {DATA_DIR}: the tests need ml-latest-small and "
            "ml-100k there (../shared/data beside the checkout) or RECOMMENDER_DATA__DATA_DIR."
        )
    return DATA_DIR


@pytest.fixture(scope="session")
def run_id() -> str:
    """Unique per test session, so reruns never read a previous run's topics or offsets."""
    return uuid.uuid4().hex[:8]


@pytest.fixture(scope="session")
def settings(tmp_path_factory: pytest.TempPathFactory, run_id: str, data_dir: Path) -> Settings:
    """Settings for this test session: real default endpoints, private names."""
    tmp = tmp_path_factory.mktemp("recommender")
    topic = f"it-{run_id}"
    return remember(Settings(
        kafka={"ratings_topic": f"{topic}-ratings", "ratings_dlq_topic": f"{topic}-ratings-dlq",
               "requests_topic": f"{topic}-requests",
               "requests_dlq_topic": f"{topic}-requests-dlq",
               "predictions_topic": f"{topic}-predictions",
               "predictions_dlq_topic": f"{topic}-predictions-dlq"},
        cassandra={"keyspace": f"it_{run_id}"},
        elasticsearch={"index_prefix": f"{topic}-"},
        spark={"master": "local[2]", "checkpoint_dir": tmp / "checkpoints",
               "trigger_interval": "1 second"},
        model={"models_dir": tmp / "models"},
        data={"data_dir": data_dir},
    ))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The check of the user's data runs after everything else."""
    items.sort(key=lambda item: item.name == LAST)


@pytest.fixture(scope="session", autouse=True)
def user_data_before(request: pytest.FixtureRequest, settings: Settings) -> dict | None:
    """The default names' contents, taken before the first test when the run includes the
    check at its end (which needs the stack up)."""
    if not any(item.name == LAST for item in request.session.items):
        return None
    request.getfixturevalue("stack")
    return snapshot(settings)
