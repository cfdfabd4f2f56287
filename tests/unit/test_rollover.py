"""When a rollover's successor counts as caught up with its predecessor."""

import pytest

from recommender.predict.job import InstanceState
from recommender.predict.rollover import Handoff
from recommender.streaming import trigger_seconds


def _state(offsets: dict[str, int], updated_at: float, batches: int = 3) -> InstanceState:
    return InstanceState("x", 1, "v1", None, offsets=offsets, batches=batches,
                         updated_at=updated_at)


def _handoff() -> Handoff:
    handoff = Handoff(trigger_s=1.0)
    for at, offset in ((10.0, 1000), (11.0, 1200), (12.0, 1400)):
        handoff.observe([_state({"0": offset, "1": offset // 2}, at)], at=at)
    return handoff


def test_a_successor_one_batch_behind_in_phase_is_caught_up():
    # it planned its last batch just before the predecessor planned its own: behind the
    # predecessor's offsets now (1400), past what the predecessor had one trigger earlier
    assert _handoff().caught_up(_state({"0": 1250, "1": 625}, updated_at=12.9))


def test_a_successor_with_a_backlog_or_no_batch_is_not():
    handoff = _handoff()
    assert not handoff.caught_up(_state({"0": 300, "1": 150}, updated_at=12.9))
    assert not handoff.caught_up(_state({"0": 1250}, updated_at=12.9)), "partition 1 unread"
    assert not handoff.caught_up(_state({"0": 5000, "1": 5000}, updated_at=12.9, batches=0))
    assert not handoff.caught_up(_state({"0": 5000, "1": 5000}, updated_at=10.5)), \
        "no snapshot of the predecessors a trigger interval before its batch"


def test_trigger_intervals_as_spark_writes_them():
    assert trigger_seconds("2 seconds") == 2.0
    assert trigger_seconds("500 milliseconds") == 0.5
    assert trigger_seconds("1 minute") == 60.0
    with pytest.raises(ValueError, match="2 seconds"):
        trigger_seconds("two seconds")
