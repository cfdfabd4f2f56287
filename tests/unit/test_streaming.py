"""A micro-batch that fails on a server that is down is rerun; one that fails on the
project's own refusal is not (``recommender.streaming.with_retries``)."""

from __future__ import annotations

import pytest

from recommender.errors import BackendUnavailable, ModelError
from recommender.streaming import transient, with_retries


def test_a_failure_is_retried_after_the_pause_and_the_before_retry_step():
    calls: list[str] = []

    def flaky() -> None:
        calls.append("try")
        if calls.count("try") < 3:
            raise ConnectionError("node restarting")

    with_retries(flaky, "batch 7", first_delay_s=0.0,
                 before_retry=lambda: calls.append("reconnect"))
    assert calls == ["try", "reconnect", "try", "reconnect", "try"]


def test_the_projects_own_refusals_fail_at_once_but_unavailable_servers_are_retried():
    assert transient(ConnectionError()) and transient(BackendUnavailable("Kafka down"))
    assert not transient(ModelError("no model is promoted yet"))
    attempts = []

    def refuse() -> None:
        attempts.append(1)
        raise ModelError("no model is promoted yet")

    with pytest.raises(ModelError):
        with_retries(refuse, "batch 1", first_delay_s=0.0)
    assert len(attempts) == 1


def test_the_last_failure_is_raised_once_the_attempts_are_spent():
    with pytest.raises(ConnectionError):
        with_retries(lambda: (_ for _ in ()).throw(ConnectionError("down")), "batch 2",
                     attempts=3, first_delay_s=0.0)
