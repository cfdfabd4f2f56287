"""The fault suites' ledger told per fault: each item counts for the fault whose window its
sending falls in (``tests.support.ledger.Trail``)."""

from __future__ import annotations

from collections import Counter

from tests.support.ledger import Trail, extras, first_sent


def test_items_count_for_the_fault_whose_window_their_sending_falls_in():
    sent = first_sent([("a", 1_000), ("b", 5_000), ("c", 9_000)], [("a", 800)])
    assert sent == {"a": 800, "b": 5_000, "c": 9_000}
    trail = Trail(sent, lost={"b", "never-in-a-topic"},
                  duplicates=Counter({"c": 1}), redeliveries=extras(["a", "a", "a", "c", "c"]))
    assert trail.redeliveries == Counter({"a": 2, "c": 1})
    assert trail.within(0, 2_000) == {"lost": 0, "duplicates_visible": 0, "redeliveries": 2}
    assert trail.within(4_000, 10_000) == {"lost": 1, "duplicates_visible": 1,
                                           "redeliveries": 1}
    assert trail.within(10_001, 20_000) == {"lost": 0, "duplicates_visible": 0,
                                            "redeliveries": 0}
    assert trail.lost_unsent == 1  # counted in the totals only
