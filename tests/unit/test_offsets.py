"""Lag and checkpoint progress: the arithmetic the rollover, the monitor and the benchmarks
share (``recommender.offsets``)."""

from __future__ import annotations

import json

from recommender.offsets import checkpoint_offsets, lag


def test_lag_counts_what_each_partition_holds_beyond_what_was_done():
    assert lag({0: 10, 1: 5, 2: 7}, {0: 4, 1: 5}) == 6 + 0 + 7
    assert lag({0: 3}, {0: 9}) == 0  # a commit past the end (a recreated topic) is not negative


def test_checkpoint_progress_is_the_newest_committed_batch(tmp_path):
    (tmp_path / "offsets").mkdir()
    (tmp_path / "commits").mkdir()
    for batch, ends in ((0, {"0": 5, "1": 2}), (1, {"0": 9, "1": 4}), (2, {"0": 12, "1": 6})):
        (tmp_path / "offsets" / str(batch)).write_text(
            f'v1\n{{"batchWatermarkMs":0}}\n{json.dumps({"ratings": ends})}\n')
    for batch in (0, 1):  # batch 2 was planned but its sink never finished
        (tmp_path / "commits" / str(batch)).write_text("v1\n{}\n")
    assert checkpoint_offsets(tmp_path, "ratings") == {0: 9, 1: 4}
    assert checkpoint_offsets(tmp_path, "other") == {}
    assert checkpoint_offsets(tmp_path / "never-started", "ratings") == {}
