"""The suite keeps out of the user's data: after every other test, the names a deployment
uses by default hold exactly what they held before the first one (``tests/conftest.py``
moves this test to the end of the run)."""

from __future__ import annotations

from typing import Any

from recommender.settings import Settings
from tests.support.user_data import snapshot


def test_the_default_names_hold_nothing_the_suite_wrote(settings: Settings,
                                                         user_data_before: dict[str, Any]):
    assert snapshot(settings) == user_data_before
