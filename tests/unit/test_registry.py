"""The registry on a temp dir: atomic versions, CURRENT, the gate, rollback and pruning."""

from __future__ import annotations

import json
import shutil
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from recommender.cli.train import models
from recommender.errors import ModelError
from recommender.model.registry import ModelRegistry
from recommender.settings import get_settings
from recommender.train.scheduler import Schedule, parse_interval, run_loop, snapshot_rows
from tests.support.models import random_artifacts


def _save(reg: ModelRegistry, ndcg: float, rmse: float = 0.9, name: str | None = None) -> str:
    """A saved version whose ranking model scored ``ndcg`` and rating model ``rmse``."""
    version = name or reg.new_version()
    artifacts = random_artifacts(n_items=3, n_users=2, rank=2, version=version)
    with reg.staging(version) as tmp:
        artifacts.save(tmp, {"metrics": {"ndcg_at_10": ndcg, "rmse": rmse},
                       "data": {"rows_total": 1000, "rows": 900}})
    return version


@pytest.fixture()
def reg(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(tmp_path / "models", retention=2, gate_tolerance=0.05)


def test_first_model_is_promoted_and_current_written_atomically(reg: ModelRegistry) -> None:
    v = _save(reg, 0.2)
    assert reg.current_version() is None
    decision = reg.publish(v)
    assert decision.accepted and decision.reason == "no current model"
    assert reg.current_version() == v
    assert reg.load().version == v
    assert not [p for p in reg.root.iterdir() if p.name.startswith((".CURRENT", ".staging"))]


def test_crash_while_saving_leaves_no_version(reg: ModelRegistry) -> None:
    v1 = _save(reg, 0.2)
    reg.publish(v1)
    with pytest.raises(RuntimeError), reg.staging("20990101T000000Z") as tmp:
        (tmp / "item_ids.npy").write_bytes(b"half")
        raise RuntimeError("killed mid-save")
    assert reg.version_names() == [v1]
    assert reg.current_version() == v1
    assert not list(reg.root.glob(".staging-*"))


def test_staging_without_metadata_is_never_renamed(reg: ModelRegistry) -> None:
    with pytest.raises(ModelError), reg.staging("20990101T000000Z"):
        pass
    assert reg.version_names() == []


def test_gate_refuses_a_worse_model_and_force_overrides(reg: ModelRegistry) -> None:
    good = _save(reg, 0.20)
    reg.publish(good)
    bad = _save(reg, 0.10)
    decision = reg.publish(bad)
    assert not decision.accepted
    assert decision.current_version == good
    assert [(c.model, c.candidate, c.passed) for c in decision.checks] == [
        ("ranking", 0.10, False), ("rating", 0.9, True)]
    assert reg.current_version() == good
    assert {v.version: v.status for v in reg.versions()}[bad] == "refused"
    assert reg.promote(bad, force=True).accepted
    assert reg.current_version() == bad


def test_gate_tolerance_is_relative(reg: ModelRegistry) -> None:
    reg.publish(_save(reg, 0.200))
    within = _save(reg, 0.191)  # 4.5 % worse, tolerance 5 %
    assert reg.publish(within).accepted
    beyond = _save(reg, 0.181)  # 5.2 % worse than 0.191
    assert not reg.publish(beyond).accepted


def test_gate_refuses_a_rating_regression_naming_the_rating_model(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path, gate_tolerance=0.0)
    reg.publish(_save(reg, 0.2, rmse=0.87))
    decision = reg.publish(_save(reg, 0.3, rmse=0.90))  # ranks better, predicts worse
    assert not decision.accepted
    assert decision.reason.startswith("rating model regressed: rmse 0.9000")
    assert "ranking" not in decision.reason
    assert reg.publish(_save(reg, 0.2, rmse=0.86)).accepted


def test_gate_refuses_a_ranking_regression_naming_the_ranking_model(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path, gate_tolerance=0.02)
    reg.publish(_save(reg, 0.30, rmse=0.87))
    decision = reg.publish(_save(reg, 0.25, rmse=0.80))  # predicts better, ranks worse
    assert not decision.accepted
    assert decision.reason.startswith("ranking model regressed: ndcg_at_10 0.2500")
    both = reg.publish(_save(reg, 0.10, rmse=0.99))
    assert "ranking model regressed" in both.reason and "rating model regressed" in both.reason
    assert reg.publish(_save(reg, 0.295, rmse=0.88)).accepted  # both within 2 %


def test_candidate_without_a_gate_metric_is_refused(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path)
    reg.publish(_save(reg, 0.2))  # no current: accepted anyway
    version = reg.new_version()
    with reg.staging(version) as tmp:
        random_artifacts(n_items=3, rank=2, version=version).save(
            tmp, {"metrics": {"ndcg_at_10": 0.3}})
    decision = reg.publish(version)
    assert not decision.accepted and "rating model: candidate has no rmse" in decision.reason


def test_an_old_single_model_version_is_refused_and_current_keeps_serving(
        reg: ModelRegistry) -> None:
    good = _save(reg, 0.2)
    reg.publish(good)
    old = _save(reg, 0.3)
    meta_path = reg.root / old / "metadata.json"
    meta = json.loads(meta_path.read_text())
    del meta["format"]  # what the code before two models per version wrote
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ModelError, match=r"format 1.*recommender train"):
        reg.promote(old)
    with pytest.raises(ModelError, match=r"format 1.*recommender train"):
        reg.load(old)
    assert reg.current_version() == good and reg.load().version == good


def test_fitted_counts_travel_with_the_version_and_older_versions_load_without(
        reg: ModelRegistry) -> None:
    artifacts = random_artifacts(n_items=3, n_users=2, rank=2, version=reg.new_version())
    counted = replace(artifacts, user_counts=np.array([7, 3], np.int64))
    with reg.staging(counted.version) as tmp:
        counted.save(tmp, {"metrics": {"ndcg_at_10": 0.2, "rmse": 0.9}})
    assert reg.load(counted.version).user_counts.tolist() == [7, 3]
    older = reg.new_version()
    with reg.staging(older) as tmp:
        replace(artifacts, version=older).save(tmp, {"metrics": {"ndcg_at_10": 0.2, "rmse": 0.9}})
    assert reg.load(older).user_counts is None  # serves trained vectors, as before


def test_rollback_walks_back_through_what_served(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path, retention=5, gate_tolerance=0.05)
    a = _save(reg, 0.20)
    reg.publish(a)
    b = _save(reg, 0.21)
    reg.publish(b)
    refused = _save(reg, 0.01)
    reg.publish(refused)
    c = _save(reg, 0.22)
    reg.publish(c)
    assert reg.previous() == b  # the refused one never served
    assert reg.rollback() == b
    assert reg.current_version() == b
    assert reg.rollback() == a
    with pytest.raises(ModelError, match="nothing to roll back"):
        reg.rollback()
    actions = [e["action"] for e in reg.history()]
    assert actions == ["promote", "promote", "refuse", "promote", "rollback", "rollback"]


def test_rollback_skips_versions_pruned_meanwhile(reg: ModelRegistry) -> None:
    a, b, c = (_save(reg, 0.2) for _ in range(3))
    for v in (a, b, c):
        reg.promote(v)
    shutil.rmtree(reg.root / b)
    assert reg.previous() == a
    assert reg.rollback() == a


def test_manual_promote_then_rollback_returns_to_the_promoter(reg: ModelRegistry) -> None:
    a = _save(reg, 0.20)
    reg.publish(a)
    b = _save(reg, 0.25)
    reg.publish(b)
    assert reg.promote(a, force=True).accepted
    assert reg.previous() == b
    assert reg.rollback() == b


def test_prune_keeps_current_previous_and_retention(reg: ModelRegistry) -> None:
    names = [f"2030010{i}T000000Z" for i in range(1, 7)]
    for n in names:
        _save(reg, 0.2, name=n)
    reg.promote(names[0])  # promote does not prune; publish (after training) does
    reg.promote(names[1])  # previous = names[0], current = names[1]
    removed = reg.prune()
    left = reg.version_names()
    assert names[0] in left and names[1] in left
    assert left == [names[0], names[1], names[4], names[5]]  # + 2 newest others
    assert sorted(removed) == [names[2], names[3]]


def test_prune_removes_staging_dirs_of_dead_processes(reg: ModelRegistry) -> None:
    reg.root.mkdir(parents=True)
    stale = reg.root / ".staging-20300101T000000Z-999999999"
    stale.mkdir()
    reg.prune()
    assert not stale.exists()


def test_corrupt_and_missing_versions_name_themselves(reg: ModelRegistry) -> None:
    good = _save(reg, 0.2)
    reg.publish(good)
    broken = _save(reg, 0.3)
    (reg.root / broken / "ranking_user_factors.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(ModelError, match=broken):
        reg.promote(broken)
    assert reg.current_version() == good
    (reg.root / broken / "metadata.json").write_text("{not json")
    with pytest.raises(ModelError, match=f"{broken} is corrupt"):
        reg.metadata(broken)
    assert {v.version: v.status for v in reg.versions()}[broken] == "corrupt"
    with pytest.raises(ModelError, match="20000101T000000Z"):
        reg.version_dir("20000101T000000Z")
    with pytest.raises(ModelError, match="no model has been promoted"):
        ModelRegistry(reg.root.parent / "empty").load()


def test_version_names_are_unique_and_sorted(reg: ModelRegistry) -> None:
    first = _save(reg, 0.2)
    second = _save(reg, 0.2)
    assert first != second
    assert reg.version_names() == sorted([first, second])
    assert reg.latest_version() == second


# --- scheduler -------------------------------------------------------------------------------


def test_parse_interval() -> None:
    assert parse_interval("90s") == 90
    assert parse_interval("1h30m") == 5400
    assert parse_interval("2d") == 172800
    assert parse_interval("15") == 15
    with pytest.raises(Exception, match="invalid interval"):
        parse_interval("1 hour")


def test_snapshot_rows() -> None:
    assert snapshot_rows(None) == 0
    assert snapshot_rows({"data": {"rows_total": 1000, "rows": 900}}) == 1000


class _InstantEvent(threading.Event):
    """A stop event whose waits advance a fake clock instead of sleeping."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0

    def wait(self, timeout: float | None = None) -> bool:
        self.now += timeout or 0
        return self.is_set()


def test_after_trains_only_when_enough_new_ratings_arrived() -> None:
    counts = iter([1000, 1040, 1100, 1150, 1210])
    seen: list[int] = []
    trained: list[int] = []

    def count() -> int:
        seen.append(next(counts))
        return seen[-1]

    stop = _InstantEvent()
    runs = run_loop(Schedule(after=100, poll=1.0, max_runs=2), lambda: trained.append(seen[-1]),
                    count, baseline=lambda: 1000, stop=stop, clock=lambda: stop.now)
    # 1100 is the first count 100 past the model's 1000; the next run needs 1200
    assert runs == 2 and trained == [1100, 1210]


def test_every_keeps_a_fixed_cadence_and_survives_failed_runs() -> None:
    stop = _InstantEvent()
    calls: list[float] = []

    def train() -> None:
        calls.append(stop.now)
        stop.now += 10  # a run takes 10 s of a 60 s period
        if len(calls) == 1:
            raise ModelError("gate refused")

    runs = run_loop(Schedule(every=60, max_runs=3), train, count=lambda: 0,
                    baseline=lambda: 0, stop=stop, clock=lambda: stop.now)
    assert runs == 3 and calls == [0, 60, 120]


# --- `recommender models` in-process ------------------------------------------------------------


def test_models_cli_promote_rollback_and_exit_codes(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECOMMENDER_MODEL__MODELS_DIR", str(tmp_path))
    monkeypatch.setenv("RECOMMENDER_MODEL__GATE_TOLERANCE", "0.0")
    # a promotion republishes the movie vectors: no Elasticsearch here (the promotion stands
    # and says so), so a unit test never writes into a running stack
    monkeypatch.setenv("RECOMMENDER_ELASTICSEARCH__URL", "http://127.0.0.1:1")
    get_settings.cache_clear()
    try:
        reg = ModelRegistry(tmp_path)
        good, bad = _save(reg, 0.3, rmse=0.85), _save(reg, 0.1, rmse=0.95)
        app = typer.Typer()
        app.add_typer(models, name="models")
        run = CliRunner().invoke
        assert run(app, ["models", "promote", good]).exit_code == 0
        refused = run(app, ["models", "promote", bad])
        assert refused.exit_code == 3  # ExitStatus.REFUSED
        assert reg.current_version() == good
        assert run(app, ["models", "promote", bad, "--force"]).exit_code == 0
        listed = json.loads(run(app, ["models", "list", "--json"]).stdout)
        assert {v["version"]: v["status"] for v in listed} == {good: "previous", bad: "current"}
        assert run(app, ["models", "rollback"]).exit_code == 0
        assert reg.current_version() == good
        missing = run(app, ["models", "show", "19990101T000000Z"])
        assert missing.exit_code == 1 and "19990101T000000Z" in missing.output
    finally:
        get_settings.cache_clear()
